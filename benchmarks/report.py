"""Printing a benchmark's table and writing its figures as JSON."""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    name: str
    title: str
    rows: list[tuple[str, ...]]
    figures: dict[str, Any]


def table(result: Result) -> str:
    width = max(len(r) for r in result.rows)
    rows = [tuple(r) + ("",) * (width - len(r)) for r in result.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(width)]
    lines = [f"== {result.title}"]
    for r in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    return "\n".join(lines)


def emit(results: list[Result], out: str | None) -> None:
    for result in results:
        print(table(result), flush=True)
        print()
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
            "results": [asdict(r) for r in results],
        }
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"figures written to {path}")
