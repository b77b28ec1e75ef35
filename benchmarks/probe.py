"""A prober: pings one token at a steady rate on its own keep-alive connection and
records each answer's latency. In a thread (benchmarks.flood) or as its own process:

    python -m benchmarks.probe PORT TOKEN SECONDS

prints {"pings", "p50_ms", "p99_ms", "max_ms", "max_at", "errors"} as JSON, so that a test's load
generator and the measurement do not share one interpreter.
"""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
import time

PROBE_EVERY = 0.005


class Prober(threading.Thread):
    """Pings `token` every PROBE_EVERY seconds until stopped; keeps each latency."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.request = f"POST /api/v1/heartbeats/{token} HTTP/1.1\r\nHost: probe\r\n\r\n".encode()
        self.latencies: list[float] = []
        self.sent_at: list[float] = []  # seconds since the start, per latency
        self.errors = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        next_at = self.started = time.perf_counter()
        while not self.stopping.is_set():
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while not self.stopping.is_set():
                    sent = time.perf_counter()
                    try:
                        s.sendall(self.request)
                        answer = b""
                        while b"\r\n\r\n" not in answer:
                            chunk = s.recv(4096)
                            if not chunk:
                                raise ConnectionError("closed")
                            answer += chunk
                    except OSError:
                        self.errors += 1
                        break
                    self.latencies.append(time.perf_counter() - sent)
                    self.sent_at.append(sent - self.started)
                    if not answer.startswith(b"HTTP/1.1 204"):
                        self.errors += 1
                    next_at += PROBE_EVERY
                    time.sleep(max(0.0, next_at - time.perf_counter()))
                    if b"connection: close" in answer.lower():
                        break  # the per-connection request limit: open another, as clients do

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(len(ordered) * p) - 1)] * 1000 if ordered else math.nan


def main() -> None:
    port, token, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    prober = Prober(port, token)
    prober.start()
    time.sleep(seconds)
    prober.stopping.set()
    prober.join(10)
    print(json.dumps({
        "pings": len(prober.latencies), "p50_ms": prober.percentile(0.5),
        "p99_ms": prober.percentile(0.99), "max_ms": prober.percentile(1.0),
        "max_at": prober.sent_at[prober.latencies.index(max(prober.latencies))]
        if prober.latencies else None,
        "errors": prober.errors,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
