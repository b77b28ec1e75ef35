"""A helper process for test_idle_flood: opens N idle TCP connections to 127.0.0.1:PORT
(one process holds at most what its descriptor limit allows), then answers commands on
stdin: "count" prints how many the server has closed; end of input exits."""

from __future__ import annotations

import resource
import socket
import sys


def main() -> None:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n + 64, hard), hard))
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sockets.append(s)
    print("opened", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            closed = 0
            for s in sockets:
                try:
                    closed += s.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1  # reset
            print(closed, flush=True)
    for s in sockets:
        s.close()


if __name__ == "__main__":
    main()
