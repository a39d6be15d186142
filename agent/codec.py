"""medic's recorded values as JSON, and back; and durations as people read them.

Incidents and attempts travel as JSON in three places: the spool on disk, the
``--json`` documents of the CLI, and (as rows) Postgres. They are written and
read here, once, so the three cannot drift apart. The field names are a
contract: the CLI prints them and scripts read them.

Every ``*_to_dict`` returns a JSON-ready dict (times as ISO 8601 strings, enums
as their values, tuples as lists). Every ``*_from_dict`` takes such a dict, or
a database row with real ``datetime`` values, checks each field's type, and
raises ``CodecError`` naming the field that is wrong. What comes back from a
file may have been cut short or edited by hand: it is read as untrusted.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from agent.errors import MedicError
from agent.model import (
    Attempt,
    AttemptId,
    AttemptStatus,
    Confidence,
    ContainerId,
    ContainerRef,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Edit,
    EvidenceEntry,
    EvidenceValue,
    Fix,
    FixId,
    FixStatus,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationId,
    NotificationOutcome,
    NotificationRecord,
    Signal,
    Verification,
)

Document = dict[str, Any]

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")


class CodecError(MedicError, ValueError):
    """A JSON document that is not the value it claims to be; names the field."""


# --- durations ------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """A duration as people read it, in its two largest units: ``45 s``, ``3 min 12 s``,
    ``2 h 5 min``, ``3 d 4 h``. Under a minute, tenths are kept (``2.5 s``)."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{round(seconds, 1):g} s"
    whole = round(seconds)
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    for index, (name, size) in enumerate(units[:-1]):
        if whole >= size:
            big, rest = divmod(whole, size)
            small_name, small_size = units[index + 1]
            small = rest // small_size
            return f"{big} {name} {small} {small_name}" if small else f"{big} {name}"
    return f"{whole} s"  # pragma: no cover - seconds >= 60 always has a unit above


# --- field readers: the checks every decoder shares ----------------------------------------


def _field(doc: Mapping[str, Any], key: str) -> Any:
    try:
        return doc[key]
    except KeyError:
        raise CodecError(f"the field {key!r} is missing") from None
    except TypeError:
        raise CodecError(f"expected a JSON object, not {type(doc).__name__}") from None


def text_field(doc: Mapping[str, Any], key: str) -> str:
    """``doc[key]``, which must be a string; CodecError naming the field otherwise.

    This and the other ``*_field`` readers are for documents built around the
    values below (the spool's operations); they check like the codec does.
    """
    value = _field(doc, key)
    if not isinstance(value, str):
        raise CodecError(f"the field {key!r} must be a string, not {_kind(value)}")
    return value


def optional_text_field(doc: Mapping[str, Any], key: str) -> str | None:
    if doc.get(key) is None:
        return None
    return text_field(doc, key)


def _bool(doc: Mapping[str, Any], key: str) -> bool:
    value = _field(doc, key)
    if not isinstance(value, bool):
        raise CodecError(f"the field {key!r} must be true or false, not {_kind(value)}")
    return value


def _opt_bool(doc: Mapping[str, Any], key: str) -> bool | None:
    return None if doc.get(key) is None else _bool(doc, key)


def _int(doc: Mapping[str, Any], key: str, default: int | None = None) -> int:
    if default is not None and doc.get(key) is None:
        return default
    value = _field(doc, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"the field {key!r} must be a whole number, not {_kind(value)}")
    return value


def _opt_int(doc: Mapping[str, Any], key: str) -> int | None:
    return None if doc.get(key) is None else _int(doc, key)


def time_field(doc: Mapping[str, Any], key: str) -> datetime:
    value = _field(doc, key)
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise CodecError(f"the field {key!r} is not an ISO 8601 time: {value[:40]!r}") from None
    else:
        raise CodecError(f"the field {key!r} must be a time, not {_kind(value)}")
    if when.tzinfo is None:
        raise CodecError(f"the field {key!r} has no time zone: {value!s}")
    return when


def optional_time_field(doc: Mapping[str, Any], key: str) -> datetime | None:
    return None if doc.get(key) is None else time_field(doc, key)


def enum_field(doc: Mapping[str, Any], key: str, kind: type[E]) -> E:
    value = text_field(doc, key)
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(m.value for m in kind)
        raise CodecError(f"the field {key!r} is {value!r}, not one of {known}") from None


def _list(doc: Mapping[str, Any], key: str, item: Callable[[Any], T]) -> tuple[T, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise CodecError(f"the field {key!r} must be a list, not {_kind(value)}")
    found: list[T] = []
    for index, entry in enumerate(value):
        try:
            found.append(item(entry))
        except CodecError as e:
            raise CodecError(f"{key}[{index}]: {e}") from None
    return tuple(found)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise CodecError(f"expected a string, not {_kind(value)}")
    return value


def _evidence(doc: Mapping[str, Any], key: str) -> dict[str, EvidenceValue]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CodecError(f"the field {key!r} must be an object, not {_kind(value)}")
    flat: dict[str, EvidenceValue] = {}
    for name, item in value.items():
        if item is None or isinstance(item, str | int | float | bool):
            flat[str(name)] = item
        else:
            # Evidence is flat by design; anything nested is kept as its JSON text
            # rather than refused, so one odd entry cannot hide a whole incident.
            flat[str(name)] = json.dumps(item, sort_keys=True, default=str)
    return flat


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# --- containers, evidence, attempts, incidents --------------------------------------------------


def container_fields(ref: ContainerRef) -> Document:
    """A container as the fields an incident document carries it in."""
    return {
        "project": ref.project,
        "service": ref.service,
        "container": ref.name,
        "container_id": ref.id,
    }


def container_from_fields(doc: Mapping[str, Any]) -> ContainerRef:
    return ContainerRef(
        id=ContainerId(text_field(doc, "container_id")),
        name=text_field(doc, "container"),
        project=optional_text_field(doc, "project"),
        service=optional_text_field(doc, "service"),
    )


def evidence_entry_to_dict(entry: EvidenceEntry) -> Document:
    return {
        "observed_at": _iso(entry.observed_at),
        "summary": entry.summary,
        "evidence": dict(entry.evidence),
    }


def evidence_entry_from_dict(doc: Mapping[str, Any]) -> EvidenceEntry:
    return EvidenceEntry(
        observed_at=time_field(doc, "observed_at"),
        summary=text_field(doc, "summary"),
        evidence=_evidence(doc, "evidence"),
    )


def attempt_to_dict(attempt: Attempt) -> Document:
    return {
        "id": attempt.id,
        "incident_id": attempt.incident_id,
        "playbook": attempt.playbook,
        "action": attempt.action,
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
        "ok": attempt.ok,
        "error": attempt.error,
        "output": attempt.output,
        "status": str(attempt.status),
    }


def attempt_from_dict(doc: Mapping[str, Any]) -> Attempt:
    return Attempt(
        id=AttemptId(text_field(doc, "id")),
        incident_id=IncidentId(text_field(doc, "incident_id")),
        playbook=text_field(doc, "playbook"),
        action=text_field(doc, "action"),
        started_at=time_field(doc, "started_at"),
        finished_at=optional_time_field(doc, "finished_at"),
        ok=_bool(doc, "ok"),
        error=optional_text_field(doc, "error"),
        output=optional_text_field(doc, "output") or "",
        # Written before attempts had a status (older spool lines): finished.
        status=(
            enum_field(doc, "status", AttemptStatus)
            if doc.get("status")
            else AttemptStatus.FINISHED
        ),
    )


def incident_to_dict(incident: Incident) -> Document:
    """Every field of an incident, its evidence and attempts included.

    ``fingerprint`` is written for people and scripts; it is derived, so reading
    ignores it.
    """
    return {
        "id": incident.id,
        **container_fields(incident.container),
        "signal": str(incident.signal),
        "status": str(incident.status),
        "summary": incident.summary,
        "opened_at": _iso(incident.opened_at),
        "updated_at": _iso(incident.updated_at),
        "resolved_at": _iso(incident.resolved_at),
        "note": incident.note,
        "scope": incident.scope,
        "fingerprint": incident.fingerprint,
        "evidence": [evidence_entry_to_dict(e) for e in incident.evidence],
        "attempts": [attempt_to_dict(a) for a in incident.attempts],
    }


def incident_from_dict(doc: Mapping[str, Any]) -> Incident:
    opened_at = time_field(doc, "opened_at")
    return Incident(
        id=IncidentId(text_field(doc, "id")),
        container=container_from_fields(doc),
        signal=enum_field(doc, "signal", Signal),
        status=enum_field(doc, "status", IncidentStatus),
        opened_at=opened_at,
        updated_at=optional_time_field(doc, "updated_at") or opened_at,
        summary=text_field(doc, "summary"),
        resolved_at=optional_time_field(doc, "resolved_at"),
        evidence=_list(doc, "evidence", evidence_entry_from_dict),
        attempts=_list(doc, "attempts", attempt_from_dict),
        note=optional_text_field(doc, "note"),
        scope=optional_text_field(doc, "scope"),
    )


# --- diagnoses and fixes ------------------------------------------------------------------------


def edit_to_dict(edit: Edit) -> Document:
    return {"path": edit.path, "old": edit.old, "new": edit.new}


def edit_from_dict(doc: Mapping[str, Any]) -> Edit:
    return Edit(
        path=text_field(doc, "path"), old=text_field(doc, "old"), new=text_field(doc, "new")
    )


def diagnosis_to_dict(diagnosis: Diagnosis) -> Document:
    d = diagnosis
    return {
        "id": d.id,
        "incident_id": d.incident_id,
        "source": str(d.source),
        "created_at": _iso(d.created_at),
        "summary": d.summary,
        "root_cause": d.root_cause,
        "confidence": str(d.confidence),
        "evidence": list(d.evidence),
        "rule_id": d.rule_id,
        "model": d.model,
        "edits": [edit_to_dict(e) for e in d.edits],
        "no_edits_reason": d.no_edits_reason,
        "case_file": d.case_file,
        "fingerprint": d.fingerprint,
        "input_tokens": d.input_tokens,
        "output_tokens": d.output_tokens,
        "cache_creation_input_tokens": d.cache_creation_input_tokens,
        "cache_read_input_tokens": d.cache_read_input_tokens,
        "error": d.error,
        "reused_from": d.reused_from,
        "unverified_evidence": list(d.unverified_evidence),
        "cause_service": d.cause_service,
        "cause_state": d.cause_state,
    }


def diagnosis_from_dict(doc: Mapping[str, Any]) -> Diagnosis:
    reused = optional_text_field(doc, "reused_from")
    return Diagnosis(
        id=DiagnosisId(text_field(doc, "id")),
        incident_id=IncidentId(text_field(doc, "incident_id")),
        source=enum_field(doc, "source", DiagnosisSource),
        created_at=time_field(doc, "created_at"),
        summary=text_field(doc, "summary"),
        root_cause=text_field(doc, "root_cause"),
        confidence=enum_field(doc, "confidence", Confidence),
        evidence=_list(doc, "evidence", _text),
        rule_id=optional_text_field(doc, "rule_id"),
        model=optional_text_field(doc, "model"),
        edits=_list(doc, "edits", edit_from_dict),
        no_edits_reason=optional_text_field(doc, "no_edits_reason"),
        case_file=optional_text_field(doc, "case_file") or "",
        fingerprint=optional_text_field(doc, "fingerprint") or "",
        input_tokens=_int(doc, "input_tokens", 0),
        output_tokens=_int(doc, "output_tokens", 0),
        cache_creation_input_tokens=_int(doc, "cache_creation_input_tokens", 0),
        cache_read_input_tokens=_int(doc, "cache_read_input_tokens", 0),
        error=optional_text_field(doc, "error"),
        reused_from=DiagnosisId(reused) if reused is not None else None,
        unverified_evidence=_list(doc, "unverified_evidence", _text),
        # Absent from records written before diagnoses named another service.
        cause_service=optional_text_field(doc, "cause_service"),
        cause_state=optional_text_field(doc, "cause_state"),
    )


def verification_to_dict(verification: Verification) -> Document:
    v = verification
    return {
        "ok": v.ok,
        "built": v.built,
        "build_log": v.build_log,
        "image": v.image,
        "command": v.command,
        "exit_status": v.exit_status,
        "output": v.output,
        "error": v.error,
        "command_image": v.command_image,
        "healing": v.healing,
        "healing_ok": v.healing_ok,
        "healing_log": v.healing_log,
        "compose_effect": list(v.compose_effect),
    }


def verification_from_dict(doc: Mapping[str, Any]) -> Verification:
    """``ok`` is derived from the other fields, so reading ignores it. Documents written
    before the sandbox fields existed have none of them, and read as not tried."""
    return Verification(
        built=_opt_bool(doc, "built"),
        build_log=optional_text_field(doc, "build_log") or "",
        image=optional_text_field(doc, "image"),
        command=optional_text_field(doc, "command"),
        exit_status=_opt_int(doc, "exit_status"),
        output=optional_text_field(doc, "output") or "",
        error=optional_text_field(doc, "error"),
        command_image=optional_text_field(doc, "command_image"),
        healing=optional_text_field(doc, "healing"),
        healing_ok=_opt_bool(doc, "healing_ok"),
        healing_log=optional_text_field(doc, "healing_log") or "",
        compose_effect=_list(doc, "compose_effect", _text),
    )


def fix_to_dict(fix: Fix) -> Document:
    f = fix
    return {
        "id": f.id,
        "incident_id": f.incident_id,
        "diagnosis_id": f.diagnosis_id,
        "status": str(f.status),
        "created_at": _iso(f.created_at),
        "summary": f.summary,
        "files": list(f.files),
        "branch": f.branch,
        "base": f.base,
        "base_branch": f.base_branch,
        "commit": f.commit,
        "refusal_reasons": list(f.refusal_reasons),
        "verification": None if f.verification is None else verification_to_dict(f.verification),
        "pushed_to": f.pushed_to,
        "push_error": f.push_error,
        "decided_at": _iso(f.decided_at),
        "decided_by": f.decided_by,
        "reason": f.reason,
    }


def fix_from_dict(doc: Mapping[str, Any]) -> Fix:
    checked = doc.get("verification")
    if checked is not None and not isinstance(checked, Mapping):
        raise CodecError(f"the field 'verification' must be an object, not {_kind(checked)}")
    try:
        verification = None if checked is None else verification_from_dict(checked)
    except CodecError as e:
        raise CodecError(f"verification: {e}") from None
    return Fix(
        id=FixId(text_field(doc, "id")),
        incident_id=IncidentId(text_field(doc, "incident_id")),
        diagnosis_id=DiagnosisId(text_field(doc, "diagnosis_id")),
        status=enum_field(doc, "status", FixStatus),
        created_at=time_field(doc, "created_at"),
        summary=text_field(doc, "summary"),
        files=_list(doc, "files", _text),
        branch=optional_text_field(doc, "branch"),
        base=optional_text_field(doc, "base"),
        base_branch=optional_text_field(doc, "base_branch"),
        commit=optional_text_field(doc, "commit"),
        refusal_reasons=_list(doc, "refusal_reasons", _text),
        verification=verification,
        pushed_to=optional_text_field(doc, "pushed_to"),
        push_error=optional_text_field(doc, "push_error"),
        decided_at=optional_time_field(doc, "decided_at"),
        decided_by=optional_text_field(doc, "decided_by"),
        reason=optional_text_field(doc, "reason"),
    )


# --- notifications ------------------------------------------------------------------------------


def notification_record_to_dict(record: NotificationRecord) -> Document:
    return {
        "id": record.id,
        "incident_id": record.incident_id,
        "kind": record.kind,
        "title": record.title,
        "at": _iso(record.at),
        "outcome": str(record.outcome),
        "error": record.error,
    }


def notification_record_from_dict(doc: Mapping[str, Any]) -> NotificationRecord:
    return NotificationRecord(
        id=NotificationId(text_field(doc, "id")),
        incident_id=IncidentId(text_field(doc, "incident_id")),
        kind=text_field(doc, "kind"),
        title=text_field(doc, "title"),
        at=time_field(doc, "at"),
        outcome=enum_field(doc, "outcome", NotificationOutcome),
        error=optional_text_field(doc, "error"),
    )
