"""Real alert receivers on 127.0.0.1: an HTTP server that records every request and can
be told to fail, stall or rate-limit, and an SMTP server (aiosmtpd) that records mail and
can refuse recipients."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from core.pg import free_port


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    answered: float | None = None  # time.monotonic() once the reply was written

    def json(self) -> Any:
        return json.loads(self.body)


# A reply: (status, headers, body). A rule may also sleep first (a stalling receiver).
Reply = tuple[int, dict[str, str], bytes]
Rule = Callable[[Received], Reply]


def ok(_request: Received) -> Reply:
    return 200, {"content-type": "application/json"}, b'{"ok":true}'


def status(code: int, body: bytes = b"", **headers: str) -> Rule:
    def rule(_request: Received) -> Reply:
        return code, {k.replace("_", "-"): v for k, v in headers.items()}, body

    return rule


def stall(seconds: float) -> Rule:
    def rule(_request: Received) -> Reply:
        time.sleep(seconds)
        return ok(_request)

    return rule


@dataclass
class HttpReceiver:
    url: str  # http://127.0.0.1:PORT
    requests: list[Received] = field(default_factory=list)
    rule: Rule = ok
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path_prefix: str = "") -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def wait_for(self, count: int, path_prefix: str = "", within: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + within
        while len(got := self.on(path_prefix)) < count:
            assert time.monotonic() < deadline, f"{len(got)} of {count} requests arrived"
            time.sleep(0.02)
        return got


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    port = free_port()
    receiver = HttpReceiver(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # or each reply waits 40 ms for a delayed ACK

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = Received(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
                time.monotonic(),
            )
            with receiver.lock:
                receiver.requests.append(request)
                rule = receiver.rule
            code, headers, body = rule(request)
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            request.answered = time.monotonic()

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 512  # a burst of alerts must not overflow the listen backlog

        def handle_error(self, request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a sender killed mid-way
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients answered 550
    recipients: list[str] = field(default_factory=list)  # every RCPT TO accepted, in order

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def wait_for(self, count: int, within: float = 10.0) -> list[email.message.EmailMessage]:
        deadline = time.monotonic() + within
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} mails arrived"
            time.sleep(0.02)
        return list(self.messages)


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.box.refuse:
            return "550 5.1.1 user unknown"
        envelope.rcpt_tos.append(address)
        self.box.recipients.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.box.messages.append(message)
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    box = Mailbox("127.0.0.1", free_port())
    # Its own plain asyncio loop (see tests/aio.py), run in the controller's thread.
    loop = asyncio.SelectorEventLoop()
    controller = Controller(_Handler(box), hostname=box.host, port=box.port, loop=loop)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
        loop.close()


def text_of(message: email.message.EmailMessage, subtype: str = "plain") -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content())
