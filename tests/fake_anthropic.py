"""A local fake of the Anthropic Messages API, for driving the real SDK in tests.

A threaded ``http.server`` on 127.0.0.1 (port chosen by the OS) that answers
``POST /v1/messages`` from a script, in order, and records every request's body and
headers. Each scripted reply is a ``Reply``: a status, a JSON body, headers, and an
optional delay (to make the client time out). The message bodies it returns are the
shape the API returns, so the SDK's strict response validation accepts them.

``routes`` gives each incident a script of its own (tests/fake_http.py).
"""

from __future__ import annotations

import uuid
from typing import Any

from fake_http import Reply, ScriptedServer


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


class FakeAnthropic(ScriptedServer):
    """The Messages API at ``/v1/messages``; use ``running()`` so it is always shut down."""

    def error(self, status: int, kind: str, words: str) -> Reply:
        return error(status, kind, words)
