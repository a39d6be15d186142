"""Models behind OpenAI-compatible chat completions: the only module that imports ``openai``.

``ChatCompletionsModel`` is the ``Model`` of agent/escalate/llm.py for any server that
speaks ``POST /v1/chat/completions`` with tools: Ollama, vLLM, llama.cpp's server,
or OpenAI's own API. A team that may not send logs off the host runs one of them
beside medic and gets the same diagnosis, with the same tools, checks and budgets.

* Tools go as ``{"type": "function", "function": {...}}``; a forced turn asks for
  ``{"type": "function", "function": {"name": ...}}``, a free one for ``"auto"``.
* The model's tool calls come back with their arguments as JSON text, parsed here;
  text that is no JSON is passed on as text, and the diagnosis refuses it.
* Usage is ``prompt_tokens`` and ``completion_tokens``. Cached prompt tokens are part
  of ``prompt_tokens`` already, so they are not counted twice. A server that reports
  no usage costs no tokens, and only the call cap bounds it.
* The SDK's errors become ``LLMError``, ``LLMUnavailable`` where asking later may work
  (408, 409, 429, 5xx, time-outs, after the SDK's own retries).

A local server wants no key, but the SDK will not make a client without one, so
``NO_KEY`` stands in; such a server ignores it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

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

#: The key sent when none is set: a local server asks for none, the SDK insists on one.
NO_KEY = "no-key"


def make_client(
    *,
    base_url: str | None,
    api_key: str | None,
    timeout: float = 120.0,
    max_retries: int = 2,
    strict: bool = False,
) -> openai.OpenAI:
    """The SDK client for the server at ``base_url`` (None: the SDK's own choice,
    OPENAI_BASE_URL or OpenAI's API). ``api_key`` None sends ``NO_KEY``.

    ``strict`` turns on the SDK's response validation (tests use it so that a fake
    server must answer exactly as the API does)."""
    return openai.OpenAI(
        api_key=api_key or NO_KEY,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        _strict_response_validation=strict,
    )


def ask_model(client: openai.OpenAI, model: str) -> str:
    """One tiny call (``medic doctor --llm``): the model's answer and the tokens it took;
    LLMError saying why when it does not answer."""
    where = _where(client)
    try:
        response = client.chat.completions.create(
            model=model,
            max_tokens=8,
            messages=[{"role": "user", "content": "Reply with the one word: ready"}],
        )
    except openai.APIStatusError as e:
        raise LLMError(f"{where} answered {e.status_code}: {_api_message(e)}") from e
    except openai.OpenAIError as e:
        raise LLMError(f"the call to {where} failed ({e})") from e
    words = " ".join((choice.message.content or "").strip() for choice in response.choices).strip()
    tokens = response.usage.total_tokens if response.usage is not None else 0
    return f"{response.model} answered {words[:40]!r} ({tokens} tokens)"


@dataclass(frozen=True)
class ChatCompletionsModel:
    """A model behind an OpenAI-compatible chat completions endpoint."""

    client: openai.OpenAI
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
            "messages": [{"role": "system", "content": system}, *message_params(messages)],
            "tools": tool_params(tools),
            "tool_choice": ({"type": "function", "function": {"name": force}} if force else "auto"),
        }
        where = _where(self.client)
        try:
            response = self.client.chat.completions.create(**params)
        except openai.APITimeoutError as e:
            raise LLMUnavailable(f"{where} did not answer in time after retries ({e})") from e
        except openai.APIConnectionError as e:
            raise LLMUnavailable(f"{where} could not be reached after retries ({e})") from e
        except openai.APIStatusError as e:
            kind = status_error(e.status_code)
            raise kind(f"{where} answered {e.status_code}: {_api_message(e)}") from e
        except openai.APIResponseValidationError as e:
            raise LLMError(f"{where} answered something unexpected ({e})") from e
        except openai.OpenAIError as e:
            raise LLMError(f"the call to {where} failed ({e})") from e
        return _reply(response, where)


def tool_params(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            },
        }
        for t in tools
    ]


def message_params(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation as chat messages: each tool result is a ``tool`` message of
    its own (the API has no error flag; a refusal says so in its text)."""
    params: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, Prompt):
            params.append({"role": "user", "content": message.text})
        elif isinstance(message, ToolResults):
            params.extend(
                {"role": "tool", "tool_call_id": r.call_id, "content": r.content}
                for r in message.results
            )
        elif message.text or message.calls:
            turn: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.calls:
                turn["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": _arguments_text(c.arguments)},
                    }
                    for c in message.calls
                ]
            params.append(turn)
    return params


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _reply(response: Any, where: str) -> Reply:
    if not response.choices:
        raise LLMError(f"{where} answered with no choice")
    message = response.choices[0].message
    calls = []
    for call in message.tool_calls or ():
        if call.type == "function":
            calls.append(ToolCall(call.id, call.function.name, _parsed(call.function.arguments)))
        else:
            calls.append(ToolCall(call.id, call.custom.name, call.custom.input))
    text = "\n".join(t for t in (message.content, message.refusal) if t)
    usage = response.usage
    return Reply(
        text=text,
        calls=tuple(calls),
        usage=Usage(
            calls=1,
            input_tokens=int(usage.prompt_tokens or 0) if usage is not None else 0,
            output_tokens=int(usage.completion_tokens or 0) if usage is not None else 0,
        ),
    )


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _where(client: openai.OpenAI) -> str:
    return f"the OpenAI-compatible API at {str(client.base_url).rstrip('/')}"


def _api_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str) and inner:
            return inner
    return str(error.message)
