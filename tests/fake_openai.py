"""A local fake of OpenAI-compatible chat completions, for driving the real ``openai`` SDK.

A threaded ``http.server`` on 127.0.0.1 (port chosen by the OS) that answers
``POST /v1/chat/completions`` from a script, in order, and records every request's
body and headers. The answers are the shape the API returns, so the SDK's strict
response validation accepts them. It is the server Ollama, vLLM and llama.cpp's
server stand for in the tests.

It is strict about what it accepts, as a real server is and more: a request that is
not a chat completion medic may send (an unknown field, a message of the wrong shape,
a tool call left unanswered or answered twice, a ``tool_choice`` naming no tool, a
``cache_control`` or other Anthropic field) is answered 400 with the API's error
body, and the reason is kept in ``rejected`` so a test can say what was wrong.
``key`` makes it want ``Authorization: Bearer <key>`` (401 otherwise).

``routes`` works as in tests/fake_anthropic.py: requests whose body contains a text
get the replies listed for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fake_http import Reply, ScriptedServer

PATH = "/v1/chat/completions"

#: The request fields medic may send; anything else is refused.
FIELDS = frozenset(
    {"model", "messages", "tools", "tool_choice", "max_tokens", "parallel_tool_calls"}
)
_MESSAGE_FIELDS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal"},
    "tool": {"role", "content", "tool_call_id"},
}


class Invalid(Exception):
    """A request the fake refuses; the message says why."""


def completion(
    message: dict[str, Any],
    *,
    finish_reason: str = "tool_calls",
    prompt_tokens: int = 1200,
    completion_tokens: int = 80,
    cached_tokens: int | None = None,
    model: str = "qwen3:8b",
    usage: bool = True,
) -> Reply:
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
    }
    if usage:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if cached_tokens is not None:
            body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return Reply(200, body)


def tool_calls(*calls: tuple[str, dict[str, Any] | str], **usage: Any) -> Reply:
    """A reply calling each ``(name, arguments)``; arguments given as text are sent as
    they are (to send JSON that does not parse)."""
    return completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{uuid.uuid4().hex[:20]}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for name, args in calls
            ],
        },
        **usage,
    )


def tool_call(name: str, arguments: dict[str, Any] | str, **usage: Any) -> Reply:
    return tool_calls((name, arguments), **usage)


def text(words: str, **usage: Any) -> Reply:
    return completion({"content": words}, finish_reason="stop", **usage)


def error(status: int, kind: str, words: str, **headers: str) -> Reply:
    return Reply(
        status,
        {"error": {"message": words, "type": kind, "param": None, "code": None}},
        headers,
    )


def check(body: Any) -> None:
    """Invalid saying why, unless ``body`` is a chat completion request medic may send."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise Invalid(f"unknown fields {unknown}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Invalid("model must be a non-empty string")
    if "max_tokens" in body and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1):
        raise Invalid("max_tokens must be a positive integer")
    names = _check_tools(body.get("tools"))
    _check_tool_choice(body.get("tool_choice"), names)
    _check_messages(body.get("messages"))


def _check_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list) or not tools:
        raise Invalid("tools must be a non-empty list")
    names: set[str] = set()
    for tool in tools:
        if not isinstance(tool, dict) or set(tool) != {"type", "function"}:
            raise Invalid(f"a tool must be {{type, function}}, not {tool!r}")
        function = tool["function"]
        if tool["type"] != "function" or not isinstance(function, dict):
            raise Invalid("a tool's type must be function")
        if not set(function) <= {"name", "description", "parameters", "strict"}:
            raise Invalid(f"unknown fields in function {sorted(function)}")
        name = function.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise Invalid(f"a function needs a unique name, not {name!r}")
        parameters = function.get("parameters", {"type": "object"})
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise Invalid(f"the parameters of {name} must be a JSON Schema object")
        names.add(name)
    return names


def _check_tool_choice(choice: Any, names: set[str]) -> None:
    if choice is None:
        return
    if not names:
        raise Invalid("tool_choice is only allowed with tools")
    if choice in ("none", "auto", "required"):
        return
    if (
        not isinstance(choice, dict)
        or set(choice) != {"type", "function"}
        or choice["type"] != "function"
        or not isinstance(choice["function"], dict)
        or set(choice["function"]) != {"name"}
    ):
        raise Invalid(f"tool_choice must be none, auto, required or a named function: {choice!r}")
    if choice["function"]["name"] not in names:
        raise Invalid(f"tool_choice names {choice['function']['name']!r}, which is no tool")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages must be a non-empty list")
    pending: set[str] = set()
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _MESSAGE_FIELDS:
            raise Invalid(f"message {number} has no known role")
        role = message["role"]
        unknown = sorted(set(message) - _MESSAGE_FIELDS[role])
        if unknown:
            raise Invalid(f"message {number} ({role}) has unknown fields {unknown}")
        if role == "tool":
            call = message.get("tool_call_id")
            if call not in pending:
                raise Invalid(f"message {number} answers {call!r}, which is no pending tool call")
            pending.discard(call)
            _check_text(message.get("content"), number)
            continue
        if pending:
            raise Invalid(
                f"message {number} comes before tool calls {sorted(pending)} are answered"
            )
        if role == "assistant":
            pending = _check_assistant(message, number)
        else:
            _check_text(message.get("content"), number)
    if pending:
        raise Invalid(f"the tool calls {sorted(pending)} are never answered")
    if messages[-1]["role"] == "assistant":
        raise Invalid("the last message must not be the assistant's")


def _check_assistant(message: dict[str, Any], number: int) -> set[str]:
    calls = message.get("tool_calls")
    content = message.get("content")
    if content is not None:
        _check_text(content, number)
    if calls is None:
        if content is None:
            raise Invalid(f"message {number} (assistant) has neither content nor tool_calls")
        return set()
    if not isinstance(calls, list) or not calls:
        raise Invalid(f"message {number}: tool_calls must be a non-empty list")
    ids: set[str] = set()
    for call in calls:
        if (
            not isinstance(call, dict)
            or set(call) != {"id", "type", "function"}
            or call["type"] != "function"
            or not isinstance(call["function"], dict)
            or set(call["function"]) != {"name", "arguments"}
            or not isinstance(call["function"]["arguments"], str)
        ):
            raise Invalid(f"message {number}: a tool call has the wrong shape: {call!r}")
        if not isinstance(call["id"], str) or call["id"] in ids:
            raise Invalid(f"message {number}: tool call ids must be unique strings")
        ids.add(call["id"])
    return ids


def _check_text(content: Any, number: int) -> None:
    if isinstance(content, str):
        return
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return
    raise Invalid(f"message {number}: content must be text")


class FakeOpenAI(ScriptedServer):
    """The server; use ``running()`` so it is always shut down."""

    request_id_header = "x-request-id"
    server_error = "server_error"
    url_suffix = "/v1"

    def __init__(
        self,
        script: list[Reply],
        *,
        routes: Mapping[str, list[Reply]] | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(script, routes=routes)
        self.key = key
        self.rejected: list[str] = []

    def error(self, status: int, kind: str, words: str) -> Reply:
        return error(status, kind, words)

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        if self.key is not None and auth != f"Bearer {self.key}":
            return self._refuse(401, "invalid_api_key", f"wrong Authorization {auth!r}")
        if path != PATH:
            return self._refuse(404, "not_found", f"no route {path}")
        try:
            check(json.loads(raw))
        except (ValueError, Invalid) as e:
            return self._refuse(400, "invalid_request_error", str(e))
        return self._scripted(raw)

    def _refuse(self, status: int, kind: str, why: str) -> Reply:
        self.rejected.append(why)
        return error(status, kind, why)
