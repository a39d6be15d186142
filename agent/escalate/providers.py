"""Which model medic asks, and how it is reached: LlmSettings and the SDKs' own variables
made into one ``Endpoint``, and the endpoint into its provider's adapter.

What counts as configured differs by provider:

* ``anthropic`` (the default) needs a key: MEDIC_LLM_API_KEY or ANTHROPIC_API_KEY. The
  address is MEDIC_LLM_BASE_URL, else ANTHROPIC_BASE_URL, else Anthropic's API.
* ``openai`` needs to know where to go: a base URL (MEDIC_LLM_BASE_URL, else
  OPENAI_BASE_URL) names a server, and a local one needs no key; a key alone
  (MEDIC_LLM_API_KEY, else OPENAI_API_KEY) means OpenAI's own API.

Without that, no model is asked and nothing leaves the host; the rules diagnose
alone. Only the adapter of the provider named is ever built, so with ``openai`` no
Anthropic client exists and no request can go to Anthropic, whatever ANTHROPIC_*
says. The adapters are imported only when one is built: each SDK costs tens of MiB of
memory, which a medic with no model configured (or the other one) does not pay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.config import LlmSettings

if TYPE_CHECKING:
    from agent.escalate.llm import Model

#: The SDKs' own variables for each provider: the key, then the address.
SDK_VARIABLES: Mapping[str, tuple[str, str]] = {
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
}

#: Where each provider's SDK goes when no address is set.
PUBLIC_API = {"anthropic": "the Anthropic API", "openai": "OpenAI's API"}


@dataclass(frozen=True)
class Endpoint:
    """One provider's model and how to reach it."""

    provider: str
    model: str
    base_url: str | None
    """None: the provider's public API."""
    api_key: str | None = field(repr=False)
    key_from: str | None
    """The variable the key was read from, for people (MEDIC_LLM_API_KEY, …)."""

    @property
    def where(self) -> str:
        """The address for a sentence: the URL, or the public API's name."""
        return self.base_url or PUBLIC_API[self.provider]

    def describe(self) -> str:
        """``the model llama3.1:8b at http://ollama:11434/v1``."""
        return f"the model {self.model} at {self.where}"


def endpoint(settings: LlmSettings, environ: Mapping[str, str]) -> Endpoint | None:
    """The endpoint the settings and ``environ`` name, or None when no model is configured."""
    key_var, url_var = SDK_VARIABLES[settings.provider]
    key_from, key = _first(("MEDIC_LLM_API_KEY", settings.api_key), (key_var, environ.get(key_var)))
    _, base_url = _first(("MEDIC_LLM_BASE_URL", settings.base_url), (url_var, environ.get(url_var)))
    if key is None and (settings.provider == "anthropic" or base_url is None):
        return None
    return Endpoint(settings.provider, settings.model_name, base_url, key, key_from)


def missing(settings: LlmSettings) -> tuple[str, str]:
    """When ``endpoint`` is None: what is not set, and what to set."""
    if settings.provider == "anthropic":
        return (
            "ANTHROPIC_API_KEY is not set",
            "Set ANTHROPIC_API_KEY (or MEDIC_LLM_API_KEY) to use an LLM for diagnoses, or "
            "MEDIC_LLM_PROVIDER=openai and MEDIC_LLM_BASE_URL for a model on your own host.",
        )
    return (
        "MEDIC_LLM_PROVIDER is openai, but neither MEDIC_LLM_BASE_URL nor an API key is set",
        "Set MEDIC_LLM_BASE_URL to your server, like http://ollama:11434/v1, or "
        "OPENAI_API_KEY for OpenAI's API.",
    )


def connect(found: Endpoint, *, timeout: float, max_retries: int) -> Model:
    """The adapter of ``found``'s provider, and only that one."""
    if found.provider == "openai":
        from agent.escalate import openai_compat

        client = openai_compat.make_client(
            base_url=found.base_url,
            api_key=found.api_key,
            timeout=timeout,
            max_retries=max_retries,
        )
        return openai_compat.ChatCompletionsModel(client, found.model)
    from agent.escalate import claude

    assert found.api_key is not None
    return claude.ClaudeModel(
        claude.make_client(
            api_key=found.api_key,
            base_url=found.base_url,
            timeout=timeout,
            max_retries=max_retries,
        ),
        found.model,
    )


def ask(found: Endpoint, *, timeout: float) -> str:
    """One tiny question to ``found``'s model (``medic doctor --llm``): its answer, or
    LLMError saying why there is none."""
    if found.provider == "openai":
        from agent.escalate import openai_compat

        return openai_compat.ask_model(
            openai_compat.make_client(
                base_url=found.base_url, api_key=found.api_key, timeout=timeout, max_retries=1
            ),
            found.model,
        )
    from agent.escalate import claude

    assert found.api_key is not None
    return claude.ask_model(
        claude.make_client(
            api_key=found.api_key, base_url=found.base_url, timeout=timeout, max_retries=1
        ),
        found.model,
    )


def _first(*candidates: tuple[str, str | None]) -> tuple[str | None, str | None]:
    """The first candidate with a value that is not blank, with its variable's name."""
    for name, value in candidates:
        if value is not None and value.strip():
            return name, value.strip()
    return None, None
