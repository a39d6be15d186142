"""What the local fakes of the model APIs share: a scripted JSON server on 127.0.0.1.

A threaded ``http.server`` (port chosen by the OS) that records every request's path,
headers and body, and answers each POST with the next ``Reply`` of its script. When
medic asks about several incidents at once, the order of its requests is not the
test's to choose; ``routes`` then gives each incident a script of its own, picked by a
text only that incident's requests contain (a line of its service's log, say). A body
that contains two routes' texts is an error reply, so a test never gets an answer
meant for another incident. tests/fake_anthropic.py and tests/fake_openai.py say what
each API's replies look like and what each refuses.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    before: Callable[[], None] | None = None
    """Run when this reply is served, before it is sent (to change the world mid-conversation)."""


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw)
        return data


class ScriptedServer:
    """The server; use ``running()`` so it is always shut down."""

    #: The header the API names its request id in.
    request_id_header = "request-id"
    #: The error type the API gives a failure of its own.
    server_error = "api_error"
    #: What the base URL a client is given ends in.
    url_suffix = ""

    def __init__(
        self, script: list[Reply], *, routes: Mapping[str, list[Reply]] | None = None
    ) -> None:
        self.script = list(script)
        self.routes = {text: list(replies) for text, replies in (routes or {}).items()}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                headers = dict(self.headers.items())
                with fake._lock:
                    fake.requests.append(Request(self.path, headers, raw))
                    reply = fake._answer(self.path, headers, raw)
                if reply.before is not None:
                    reply.before()
                if reply.delay:
                    fake._release.wait(reply.delay)
                data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header(fake.request_id_header, f"req_{uuid.uuid4().hex[:12]}")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a time-out test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def error(self, status: int, kind: str, words: str) -> Reply:
        """An error reply in the API's shape."""
        raise NotImplementedError

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        """The reply to one request (under the lock): the next of its route or script."""
        return self._scripted(raw)

    def _scripted(self, raw: bytes) -> Reply:
        body = raw.decode("utf-8", "replace")
        matched = [text for text in self.routes if text in body]
        if len(matched) > 1:
            return self.error(500, self.server_error, f"the request matches the routes {matched!r}")
        replies = self.routes[matched[0]] if matched else self.script
        if not replies:
            return self.error(500, self.server_error, "the fake server's script ran out")
        return replies.pop(0)

    @property
    def url(self) -> str:
        """The base URL a client is given, as for a real server."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{self.url_suffix}"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]

    @contextmanager
    def running(self) -> Iterator[Self]:
        thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self._release.set()
            self.server.shutdown()
            self.server.server_close()
            thread.join()
