"""Claude, through Anthropic's Messages API: the only module that imports ``anthropic``.

``ClaudeModel`` is the ``Model`` of agent/escalate/llm.py for Anthropic, medic's
default provider. It turns the neutral conversation into a Messages request and the
answer back into text, tool calls and usage (input, output, cache-creation and
cache-read tokens, all four counted by the budgets):

* a forced turn asks for ``{"type": "tool", "name": ..., "disable_parallel_tool_use":
  True}``, a free one for ``{"type": "auto"}``;
* the system prompt and the tool list are marked for prompt caching, and so is the
  newest turn, so each round reads the conversation before it from the cache;
* the SDK's errors become ``LLMError``, ``LLMUnavailable`` where asking later may
  work (429, 529, 5xx, time-outs, after the SDK's own retries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anthropic

from agent.escalate.llm import (
    LLMError,
    LLMUnavailable,
    Message,
    Prompt,
    Reply,
    Tool,
    ToolCall,
    ToolResults,
    Usage,
    status_error,
)

_CACHED = {"type": "ephemeral"}


def make_client(
    *,
    api_key: str,
    base_url: str | None = None,
    timeout: float = 120.0,
    max_retries: int = 2,
    strict: bool = False,
) -> anthropic.Anthropic:
    """The SDK client; ``base_url`` None lets the SDK read ANTHROPIC_BASE_URL.

    ``strict`` turns on the SDK's response validation (tests use it so that a fake
    server must answer exactly as the API does)."""
    return anthropic.Anthropic(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        _strict_response_validation=strict,
    )


def ask_model(client: anthropic.Anthropic, model: str) -> str:
    """One tiny call (``medic doctor --llm``): the model's answer and the tokens it took;
    LLMError saying why when it does not answer."""
    try:
        response = client.messages.create(
            model=model,
            max_tokens=8,
            messages=[{"role": "user", "content": "Reply with the one word: ready"}],
        )
    except anthropic.APIStatusError as e:
        raise LLMError(f"the Claude API answered {e.status_code}: {_api_message(e)}") from e
    except anthropic.AnthropicError as e:
        raise LLMError(f"the Claude API call failed ({e})") from e
    words = " ".join(
        str(getattr(block, "text", "")) for block in response.content if block.type == "text"
    ).strip()
    tokens = int(response.usage.input_tokens or 0) + int(response.usage.output_tokens or 0)
    return f"{response.model} answered {words[:40]!r} ({tokens} tokens)"


@dataclass(frozen=True)
class ClaudeModel:
    """A Claude model behind the Messages API."""

    client: anthropic.Anthropic
    name: str

    def complete(
        self,
        *,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        force: str | None,
        max_tokens: int,
    ) -> Reply:
        params: dict[str, Any] = {
            "model": self.name,
            "max_tokens": max_tokens,
            "system": [{"type": "text", "text": system, "cache_control": _CACHED}],
            "tools": tool_params(tools),
            "tool_choice": (
                {"type": "tool", "name": force, "disable_parallel_tool_use": True}
                if force
                else {"type": "auto"}
            ),
            "messages": message_params(messages),
        }
        try:
            response = self.client.messages.create(**params)
        except anthropic.APITimeoutError as e:
            raise LLMUnavailable(
                f"the Claude API did not answer in time after retries ({e})"
            ) from e
        except anthropic.APIConnectionError as e:
            raise LLMUnavailable(f"the Claude API could not be reached after retries ({e})") from e
        except anthropic.APIStatusError as e:
            kind = status_error(e.status_code)
            raise kind(f"the Claude API answered {e.status_code}: {_api_message(e)}") from e
        except anthropic.APIResponseValidationError as e:
            raise LLMError(f"the Claude API answered something unexpected ({e})") from e
        except anthropic.AnthropicError as e:
            raise LLMError(f"the Claude API call failed ({e})") from e
        return _reply(response)


def tool_params(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """The tool definitions; caching the last one caches the system prompt before it too."""
    params: list[dict[str, Any]] = [
        {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
        for t in tools
    ]
    if params:
        params[-1]["cache_control"] = _CACHED
    return params


def message_params(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation as Messages API turns, the newest one marked for caching."""
    params: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, Prompt):
            params.append({"role": "user", "content": [{"type": "text", "text": message.text}]})
        elif isinstance(message, ToolResults):
            results = []
            for r in message.results:
                result: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": r.call_id,
                    "content": r.content,
                }
                if r.is_error:
                    result["is_error"] = True
                results.append(result)
            params.append({"role": "user", "content": results})
        else:
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": message.text}] if message.text.strip() else []
            )
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in message.calls
            ]
            # The API takes no empty turn; an empty answer is left out.
            if blocks:
                params.append({"role": "assistant", "content": blocks})
    if params:
        params[-1]["content"][-1]["cache_control"] = _CACHED
    return params


def _reply(response: Any) -> Reply:
    texts = [str(b.text) for b in response.content if b.type == "text"]
    calls = tuple(
        ToolCall(id=str(b.id), name=str(b.name), arguments=b.input)
        for b in response.content
        if b.type == "tool_use"
    )
    usage = response.usage
    return Reply(
        text="\n".join(t for t in texts if t),
        calls=calls,
        usage=Usage(
            calls=1,
            input_tokens=int(usage.input_tokens or 0),
            output_tokens=int(usage.output_tokens or 0),
            cache_creation_input_tokens=int(getattr(usage, "cache_creation_input_tokens", 0) or 0),
            cache_read_input_tokens=int(getattr(usage, "cache_read_input_tokens", 0) or 0),
        ),
    )


def _api_message(error: anthropic.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(error.message)
