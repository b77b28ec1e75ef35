"""Prometheus' text exposition format, for every process that serves /metrics (the
ingest's admin listener, the worker's)."""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Health = Callable[[], tuple[bool, dict[str, object]]]  # healthy?, and what to say


def admin_get(
    method: bytes, path: bytes, metrics: Callable[[], str], health: Health
) -> tuple[int, str, bytes]:
    """An admin listener's answer to GET /metrics or GET /healthz (503 when unhealthy):
    status, content type, body."""
    if method != b"GET":
        return 405, "text/plain", b"GET only\n"
    if path == b"/metrics":
        return 200, "text/plain; version=0.0.4", metrics().encode()
    if path == b"/healthz":
        ok, detail = health()
        return (200 if ok else 503), "application/json", json.dumps(detail).encode()
    return 404, "text/plain", b"not found\n"


@dataclass
class Histogram:
    """A cumulative Prometheus histogram."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> Iterable[str]:
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            yield f'{name}_bucket{{le="{bound}"}} {running}'
        yield f'{name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{name}_sum {self.total}"
        yield f"{name}_count {self.count}"


@dataclass
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    help: str


def render(samples: Iterable[tuple[Metric, Iterable[str]]]) -> str:
    """Prometheus text format from (metric, sample lines) pairs."""
    out: list[str] = []
    for metric, lines in samples:
        out.append(f"# HELP {metric.name} {metric.help}")
        out.append(f"# TYPE {metric.name} {metric.kind}")
        out.extend(lines)
    return "\n".join(out) + "\n"


def sample(name: str, value: float, **labels: str) -> str:
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"
