"""A helper process for test_connection_flood: keeps N connections from SOURCE (a loopback
address) to 127.0.0.1:PORT open for SECONDS, each having sent one byte of a request head;
every connection the server closes is replaced at once (the flood is topped up). Prints
one JSON line: opened, closed (by the server), refused_503 (answered 503 at once)."""

from __future__ import annotations

import errno
import json
import resource
import selectors
import socket
import sys
import time


def main() -> None:
    port, source, n, seconds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n + 64, hard), hard))
    selector = selectors.DefaultSelector()
    stats = {"opened": 0, "closed": 0, "refused_503": 0}

    def open_one() -> None:
        s = socket.socket()
        s.bind((source, 0))
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return
        selector.register(s, selectors.EVENT_WRITE)
        stats["opened"] += 1

    for _ in range(n):
        open_one()
    print("opened", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, events in selector.select(timeout=0.1):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if events & selectors.EVENT_WRITE:
                try:
                    s.send(b"P")  # one byte of "POST ..." and nothing more
                    selector.modify(s, selectors.EVENT_READ)
                    continue
                except OSError:
                    data = b""
            else:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
            selector.unregister(s)
            s.close()
            if data.startswith(b"HTTP/1.1 503"):
                stats["refused_503"] += 1
            else:
                stats["closed"] += 1
            open_one()  # top the flood up
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
