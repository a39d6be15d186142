"""The OpenAI-compatible adapter through the real openai SDK against a local fake
/v1/chat/completions server: what it sends, and how it reads what comes back. The
diagnosis itself is held to tests/unit/test_diagnosis_contract.py, as Claude's is."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from escalate_support import case_from_fixture
from fake_openai import FakeOpenAI, completion, error, text, tool_call, tool_calls

from agent.config import DEFAULT_MODELS
from agent.escalate.casefile import CaseFile
from agent.escalate.llm import SUBMIT, SYSTEM_PROMPT, Diagnoser, LLMError, LLMUnavailable
from agent.escalate.openai_compat import NO_KEY, ChatCompletionsModel, ask_model, make_client

SUBMISSION = {
    "summary": "The worker lacks requests.",
    "root_cause": "requirements.txt does not list it.",
    "confidence": "medium",
    "evidence": [],
    "edits": [],
    "no_edits_reason": "not sure yet",
}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI([])
    with server.running():
        yield server
    assert server.rejected == [], server.rejected


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "worker.py").write_text("import requests\n")
    (tmp_path / "requirements.txt").write_text("flask==3.0\n")
    return tmp_path


def case() -> CaseFile:
    return case_from_fixture("missing_module")


def model(
    fake: FakeOpenAI, *, key: str | None = None, timeout: float = 10.0, max_retries: int = 0
) -> ChatCompletionsModel:
    client = make_client(
        base_url=fake.url, api_key=key, timeout=timeout, max_retries=max_retries, strict=True
    )
    return ChatCompletionsModel(client, "llama3.1:8b")


def test_the_request_is_a_plain_chat_completion_with_function_tools(
    fake: FakeOpenAI, repo: Path
) -> None:
    fake.script += [tool_call("list_files", {"path": "."}), tool_call(SUBMIT, SUBMISSION)]
    Diagnoser(model(fake), repo=repo).diagnose(case())

    first, second = fake.bodies
    assert fake.requests[0].path == "/v1/chat/completions"
    assert set(first) == {"model", "messages", "tools", "tool_choice", "max_tokens"}
    assert first["model"] == "llama3.1:8b"
    assert first["max_tokens"] == 4096
    assert first["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert first["messages"][1]["role"] == "user"
    assert [t["function"]["name"] for t in first["tools"]] == [
        "list_files",
        "read_file",
        "grep",
        SUBMIT,
    ]
    assert all(t["type"] == "function" for t in first["tools"])
    assert "cache_control" not in fake.requests[0].raw.decode()
    assert first["tool_choice"] == "auto"
    call = second["messages"][2]
    assert call["role"] == "assistant" and call["content"] is None
    [made] = call["tool_calls"]
    assert made["function"] == {"name": "list_files", "arguments": '{"path": "."}'}
    answer = second["messages"][3]
    assert answer["role"] == "tool" and answer["tool_call_id"] == made["id"]
    assert "requirements.txt" in answer["content"]


def test_several_calls_in_one_reply_are_each_answered_in_order(
    fake: FakeOpenAI, repo: Path
) -> None:
    fake.script += [
        tool_calls(("read_file", {"path": "requirements.txt"}), ("grep", {"text": "requests"})),
        tool_call(SUBMIT, SUBMISSION),
    ]
    Diagnoser(model(fake), repo=repo).diagnose(case())
    messages = fake.bodies[1]["messages"]
    ids = [c["id"] for c in messages[2]["tool_calls"]]
    assert [m["tool_call_id"] for m in messages[3:]] == ids
    assert "flask==3.0" in messages[3]["content"]
    assert "app/worker.py:1: import requests" in messages[4]["content"]


def test_arguments_that_are_not_json_are_refused_to_a_tool_and_returned_on_submit(
    fake: FakeOpenAI, repo: Path
) -> None:
    fake.script += [
        tool_call("read_file", '{"path": "requirements.txt"'),
        tool_call(SUBMIT, "{'summary': 'python, not JSON'}"),
        tool_call(SUBMIT, SUBMISSION),
    ]
    result = Diagnoser(model(fake), repo=repo).diagnose(case())
    refused = fake.bodies[1]["messages"][-1]["content"]
    assert refused == "refused: the arguments of read_file must be a JSON object"
    returned = fake.bodies[2]["messages"][-1]["content"]
    assert returned.startswith(
        "Your submit_diagnosis input is invalid: the input must be an object"
    )
    # What the model sent goes back to it as it was sent.
    assert fake.bodies[2]["messages"][-2]["tool_calls"][0]["function"]["arguments"] == (
        "{'summary': 'python, not JSON'}"
    )
    assert result.summary == "The worker lacks requests."


def test_prompt_and_completion_tokens_are_the_usage_and_cached_ones_count_once(
    fake: FakeOpenAI,
) -> None:
    fake.script += [
        tool_call("list_files", {}, prompt_tokens=3000, completion_tokens=50, cached_tokens=2500),
        tool_call(SUBMIT, SUBMISSION, prompt_tokens=3100, completion_tokens=70),
    ]
    result = Diagnoser(model(fake)).diagnose(case())
    assert result.usage.calls == 2
    assert (result.usage.input_tokens, result.usage.output_tokens) == (6100, 120)
    assert result.usage.total == 6220


def test_a_server_that_reports_no_usage_costs_calls_but_no_tokens(fake: FakeOpenAI) -> None:
    submit = tool_call(SUBMIT, SUBMISSION)
    fake.script += [dataclasses.replace(submit, body={**submit.body, "usage": None})]
    result = Diagnoser(model(fake)).diagnose(case())
    assert (result.usage.calls, result.usage.total) == (1, 0)


def test_without_a_key_the_placeholder_is_sent_and_with_one_the_key(fake: FakeOpenAI) -> None:
    fake.script += [tool_call(SUBMIT, SUBMISSION), tool_call(SUBMIT, SUBMISSION)]
    Diagnoser(model(fake)).diagnose(case())
    Diagnoser(model(fake, key="sk-local-vllm-key")).diagnose(case())
    sent = [{k.lower(): v for k, v in r.headers.items()}["authorization"] for r in fake.requests]
    assert sent == [f"Bearer {NO_KEY}", "Bearer sk-local-vllm-key"]


def test_a_refused_key_is_an_error_that_names_the_server_and_its_message() -> None:
    fake = FakeOpenAI([], key="right")
    with (
        fake.running(),
        pytest.raises(LLMError, match="answered 401: wrong Authorization") as caught,
    ):
        Diagnoser(model(fake, key="wrong")).diagnose(case())
    assert not isinstance(caught.value, LLMUnavailable)
    assert f"the OpenAI-compatible API at {fake.url}" in str(caught.value)


def test_a_model_the_server_does_not_have_is_an_error_not_a_retry(fake: FakeOpenAI) -> None:
    fake.script += [error(404, "not_found", 'model "llama3.1:8b" not found, try pulling it first')]
    with pytest.raises(LLMError, match=r"answered 404: model .* not found") as caught:
        Diagnoser(model(fake, max_retries=2)).diagnose(case())
    assert not isinstance(caught.value, LLMUnavailable)
    assert len(fake.requests) == 1


def test_a_server_that_does_not_answer_in_time_is_unavailable(fake: FakeOpenAI) -> None:
    fake.script += [dataclasses.replace(tool_call(SUBMIT, SUBMISSION), delay=5.0)]
    with pytest.raises(LLMUnavailable, match="did not answer in time"):
        Diagnoser(model(fake, timeout=0.3)).diagnose(case())


def test_a_server_that_is_not_there_is_unavailable() -> None:
    fake = FakeOpenAI([])
    url = fake.url
    fake.server.server_close()
    client = make_client(base_url=url, api_key=None, timeout=2, max_retries=0)
    with pytest.raises(LLMUnavailable, match="could not be reached"):
        Diagnoser(ChatCompletionsModel(client, "llama3.1:8b")).diagnose(case())


def test_an_answer_with_no_choice_is_an_error(fake: FakeOpenAI) -> None:
    empty = completion({"content": "x"})
    fake.script += [dataclasses.replace(empty, body={**empty.body, "choices": []})]
    with pytest.raises(LLMError, match="answered with no choice"):
        Diagnoser(model(fake)).diagnose(case())


def test_ask_model_makes_one_tiny_call_through_the_real_sdk(fake: FakeOpenAI) -> None:
    fake.script += [text("ready", prompt_tokens=9, completion_tokens=2)]
    answer = ask_model(make_client(base_url=fake.url, api_key=None, strict=True), "qwen3:8b")
    assert answer == "qwen3:8b answered 'ready' (11 tokens)"
    [body] = fake.bodies
    assert body["max_tokens"] <= 16
    assert "tools" not in body


def test_ask_model_turns_an_api_error_into_one_sentence(fake: FakeOpenAI) -> None:
    fake.script += [error(404, "not_found", 'model "qwen3:8b" not found')]
    client = make_client(base_url=fake.url, api_key=None, max_retries=0)
    with pytest.raises(LLMError, match='answered 404: model "qwen3:8b" not found'):
        ask_model(client, "qwen3:8b")


def test_the_default_openai_model_is_in_the_sdk_model_list() -> None:
    from openai.types.shared.chat_model import ChatModel

    assert DEFAULT_MODELS["openai"] in repr(ChatModel)
