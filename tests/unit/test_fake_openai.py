"""The fake chat completions server refuses what a real one would, and more, so that a
test passing against it says the adapter sends a well-formed request."""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from fake_openai import FakeOpenAI, Invalid, check, text

TOOLS = [{"type": "function", "function": {"name": "grep", "parameters": {"type": "object"}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "grep", "arguments": "{}"}}


def valid() -> dict[str, Any]:
    return {
        "model": "qwen3:8b",
        "max_tokens": 64,
        "tools": copy.deepcopy(TOOLS),
        "tool_choice": {"type": "function", "function": {"name": "grep"}},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": None, "tool_calls": [copy.deepcopy(CALL)]},
            {"role": "tool", "tool_call_id": "call_1", "content": "no match"},
        ],
    }


def test_a_well_formed_request_is_accepted() -> None:
    check(valid())


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_set("system", "from Anthropic"), "unknown fields ['system']"),
        (_set("stream", True), "unknown fields ['stream']"),
        (_set("messages.1.cache_control", {"type": "ephemeral"}), "unknown fields"),
        (_set("tool_choice", {"type": "tool", "name": "grep"}), "tool_choice must be"),
        (_set("tool_choice", {"type": "function", "function": {"name": "x"}}), "which is no tool"),
        (_set("tools.0", {"name": "grep", "input_schema": {}}), "a tool must be"),
        (_set("messages.2.tool_calls.0.function.arguments", {}), "wrong shape"),
        (_set("messages.3.tool_call_id", "call_9"), "no pending tool call"),
        (lambda b: b["messages"].pop(), "never answered"),
        (lambda b: b["messages"].insert(3, {"role": "user", "content": "x"}), "are answered"),
        (_set("messages.2.tool_calls", None), "neither content nor tool_calls"),
        (_set("messages.1.content", [{"type": "tool_result"}]), "content must be text"),
        (_set("max_tokens", 0), "max_tokens must be a positive integer"),
        (lambda b: b.pop("tools"), "tool_choice is only allowed with tools"),
    ],
)
def test_a_malformed_request_is_refused_with_the_reason(
    change: Callable[[dict[str, Any]], None], says: str
) -> None:
    body = valid()
    change(body)
    with pytest.raises(Invalid, match=says.replace("[", r"\[").replace("]", r"\]")):
        check(body)


def post(fake: FakeOpenAI, body: dict[str, Any], path: str = "/v1/chat/completions") -> int:
    request = urllib.request.Request(
        fake.url.removesuffix("/v1") + path, data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        with e:
            return e.code


def test_the_server_answers_a_refused_request_400_and_keeps_the_reason() -> None:
    fake = FakeOpenAI([text("fine")])
    with fake.running():
        bad = {**valid(), "system": "x"}
        assert post(fake, bad) == 400
        assert post(fake, valid(), path="/v1/messages") == 404
        assert post(fake, valid()) == 200
    assert fake.rejected == ["unknown fields ['system']", "no route /v1/messages"]
