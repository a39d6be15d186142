"""Case files built from the fixtures captured on a real engine (tests/fixtures/escalate)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.errors import ContainerGone
from agent.escalate.casefile import CaseFile, build_case_file
from agent.model import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    ContainerId,
    ContainerRef,
    EvidenceEntry,
    Incident,
    IncidentId,
    IncidentStatus,
    Signal,
    State,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "escalate"
#: A secret the model-diagnosis tests plant in the case file, to prove it never leaves.
DB_PASSWORD = "Tr0ub4dor&3-horse"
MODULE_ERROR = "ModuleNotFoundError: No module named 'requests'"
T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SiblingRecord:
    name: str
    service: str | None
    state: State
    exit_code: int | None


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def incident_for(inspect: dict[str, Any], *, incident_id: str = "inc-0001") -> Incident:
    labels = inspect["Config"]["Labels"]
    ref = ContainerRef(
        id=ContainerId(inspect["Id"]),
        name=str(inspect["Name"]).lstrip("/"),
        project=labels.get(PROJECT_LABEL),
        service=labels.get(SERVICE_LABEL),
    )
    state = inspect["State"]
    summary = f"{ref.name} exited with code {state['ExitCode']}"
    return Incident(
        id=IncidentId(incident_id),
        container=ref,
        signal=Signal.CRASH_LOOP,
        status=IncidentStatus.ESCALATED,
        opened_at=T0,
        updated_at=T0,
        summary=summary,
        evidence=(
            EvidenceEntry(T0, summary, {"exit_code": state["ExitCode"], "oom": state["OOMKilled"]}),
        ),
    )


def case_from_fixture(name: str, **overrides: Any) -> CaseFile:
    data = load_fixture(name)
    siblings = [
        SiblingRecord(s["name"], s["service"], State(s["state"]), s["exit_code"])
        for s in data["siblings"]
    ]
    args: dict[str, Any] = {
        "incident": incident_for(data["inspect"]),
        "inspect": data["inspect"],
        "log_lines": data["logs"],
        "siblings": siblings,
        "compose": data["compose"],
        "image_platform": data.get("platforms", {}).get("image", ""),
        "engine_platform": data.get("platforms", {}).get("engine", ""),
    }
    args.update(overrides)
    return build_case_file(**args)


class FixtureSource:
    """The evidence source over one captured fixture, counting what it was asked."""

    def __init__(self, data: dict[str, Any], *, gone: bool = False) -> None:
        self.data = data
        self.gone = gone
        self.tail_requests: list[int] = []

    def inspect_attrs(self, container_id: str) -> Mapping[str, Any]:
        if self.gone:
            raise ContainerGone("Inspecting container x: the container no longer exists.")
        attrs: Mapping[str, Any] = self.data["inspect"]
        return attrs

    def log_tail(self, container_id: str, *, lines: int) -> list[str]:
        self.tail_requests.append(lines)
        return list(self.data["logs"])[-lines:]

    def project_containers(self, project: str) -> Sequence[SiblingRecord]:
        return [
            SiblingRecord(s["name"], s["service"], State(s["state"]), s["exit_code"])
            for s in self.data["siblings"]
        ]

    def image_platform(self, image_id: str) -> str:
        return str(self.data.get("platforms", {}).get("image", ""))

    def engine_platform(self) -> str:
        return str(self.data.get("platforms", {}).get("engine", ""))


def case_with_secret(extra_log: Sequence[str] = ()) -> CaseFile:
    """The missing_module failure with DB_PASSWORD in its environment and its log."""
    data = load_fixture("missing_module")
    inspect = json.loads(json.dumps(data["inspect"]))
    inspect["Config"]["Env"].append(f"DB_PASSWORD={DB_PASSWORD}")
    logs = [*data["logs"], f"db login with {DB_PASSWORD} ok", *extra_log]
    return case_from_fixture("missing_module", inspect=inspect, log_lines=logs)


def submission(**overrides: Any) -> dict[str, Any]:
    """A model's submit_diagnosis input for that failure: requests added to
    requirements.txt; ``overrides`` replace its fields."""
    payload: dict[str, Any] = {
        "summary": "The worker image lacks the requests package.",
        "root_cause": "requirements.txt does not list requests, which app/worker.py imports.",
        "confidence": "high",
        "evidence": [MODULE_ERROR, "flask==3.0"],
        "edits": [
            {
                "path": "requirements.txt",
                "old": "flask==3.0\n",
                "new": "flask==3.0\nrequests==2.32\n",
            }
        ],
        "no_edits_reason": None,
    }
    payload.update(overrides)
    return payload
