"""A local fake of the Anthropic Messages API, for driving the real SDK in tests.

A threaded ``http.server`` on 127.0.0.1 (port chosen by the OS) that answers
``POST /v1/messages`` from a script, in order, and records every request's body and
headers. Each scripted reply is a ``Reply``: a status, a JSON body, headers, and an
optional delay (to make the client time out). The message bodies it returns are the
shape the API returns, so the SDK's strict response validation accepts them.

When medic asks about several incidents at once, the order of its requests is not the
test's to choose; ``routes`` then gives each incident a script of its own, picked by a
text only that incident's requests contain (a line of its service's log, say).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


def message(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "tool_use",
    input_tokens: int = 1200,
    output_tokens: int = 80,
    cache_creation: int = 0,
    cache_read: int = 0,
    model: str = "claude-sonnet-5-5",
) -> Reply:
    return Reply(
        200,
        {
            "id": f"msg_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": cache_creation,
                "cache_read_input_tokens": cache_read,
            },
        },
    )


def tool_use(name: str, arguments: dict[str, Any], **usage: Any) -> Reply:
    block = {
        "type": "tool_use",
        "id": f"toolu_{uuid.uuid4().hex[:20]}",
        "name": name,
        "input": arguments,
    }
    return message([block], **usage)


def text(words: str, **usage: Any) -> Reply:
    return message([{"type": "text", "text": words}], stop_reason="end_turn", **usage)


def error(status: int, kind: str, words: str, **headers: str) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": words}}, headers)


class FakeAnthropic:
    """The server; use ``running()`` so it is always shut down."""

    def __init__(
        self, script: list[Reply], *, routes: Mapping[str, list[Reply]] | None = None
    ) -> None:
        """``script`` answers requests in order. ``routes`` maps a text to the replies for
        requests whose body (the JSON as sent) contains it, in order; those requests do
        not take from ``script``. A body that contains two routes' texts is an error
        reply, so a test never gets an answer meant for another incident."""
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
                with fake._lock:
                    fake.requests.append(Request(self.path, dict(self.headers.items()), raw))
                    reply = fake._next(raw)
                if reply.before is not None:
                    reply.before()
                if reply.delay:
                    fake._release.wait(reply.delay)
                data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a time-out test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def _next(self, raw: bytes) -> Reply:
        body = raw.decode("utf-8", "replace")
        matched = [text for text in self.routes if text in body]
        if len(matched) > 1:
            return error(500, "api_error", f"the request matches the routes {matched!r}")
        replies = self.routes[matched[0]] if matched else self.script
        if not replies:
            return error(500, "api_error", "the fake server's script ran out")
        return replies.pop(0)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]

    @contextmanager
    def running(self) -> Iterator[FakeAnthropic]:
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
