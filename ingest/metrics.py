"""Prometheus text exposition for the ingest, and the admin listener that serves it.

The hot path keeps plain integer counters (in the fast path and the listener); this module
only reads them when /metrics is scraped, so metrics cost nothing per ping.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import h11
import trio

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


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


async def serve_admin(
    host: str,
    port: int,
    metrics: Callable[[], str],
    health: Callable[[], tuple[bool, dict[str, object]]],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """GET /metrics and GET /healthz on host:port; reports the bound port when started."""

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            with trio.move_on_after(10):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(8192))
                        continue
                    if not isinstance(event, h11.Request):
                        return
                    status, ctype, body = _admin_route(event, metrics, health)
                    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
                    headers.append(("Connection", "close"))
                    data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
                    data += conn.send(h11.Data(data=body)) or b""
                    data += conn.send(h11.EndOfMessage()) or b""
                    await stream.send_all(data)
                    return
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)
    await trio.serve_listeners(handle, listeners)


def _admin_route(
    request: h11.Request,
    metrics: Callable[[], str],
    health: Callable[[], tuple[bool, dict[str, object]]],
) -> tuple[int, str, bytes]:
    path = request.target.split(b"?", 1)[0]
    if request.method != b"GET":
        return 405, "text/plain", b"GET only\n"
    if path == b"/metrics":
        return 200, "text/plain; version=0.0.4", metrics().encode()
    if path == b"/healthz":
        ok, detail = health()
        return (200 if ok else 503), "application/json", json.dumps(detail).encode()
    return 404, "text/plain", b"not found\n"
