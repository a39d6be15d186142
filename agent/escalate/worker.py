"""Diagnosing incidents: on demand (``DiagnosisService``) and off the healing path
(``DiagnosisWorker``, the recorder's escalation hook).

One diagnosis is: gather the case file; run the rules (always, recorded); then,
when an LLM is configured and asked for, reuse an earlier diagnosis of the same
failure fingerprint within the window, or refuse when the daily budget is spent, or
ask the model within the per-incident caps. Every outcome (the model's answer, a reuse,
an API failure) is recorded with the case file that was sent, and the rule
diagnosis stands whatever happens to the call.
"""

from __future__ import annotations

import queue
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Protocol

from loguru import logger

from agent.clock import SYSTEM_CLOCK, Clock
from agent.escalate.budget import daily_refusal, day_start, fingerprint, window_start
from agent.escalate.casefile import CaseFile, EvidenceSource
from agent.escalate.gather import gather
from agent.escalate.llm import Diagnoser, LLMError, Usage
from agent.escalate.rules import Culprit
from agent.escalate.rules import diagnose as rule_diagnose
from agent.escalate.store import DiagnosisStore
from agent.model import (
    Confidence,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Incident,
    IncidentId,
)
from agent.notify import Notification
from agent.store.base import IncidentStore


def new_diagnosis_id() -> DiagnosisId:
    return DiagnosisId(uuid.uuid4().hex)


def with_culprit(diagnosis: Diagnosis, culprit: Culprit | None) -> Diagnosis:
    """``diagnosis`` naming the other service where the cause lies, and its state, if any."""
    if culprit is None:
        return replace(diagnosis, cause_service=None, cause_state=None)
    return replace(diagnosis, cause_service=culprit.service, cause_state=culprit.state)


def with_usage(diagnosis: Diagnosis, usage: Usage) -> Diagnosis:
    """``diagnosis`` carrying the tokens its calls spent, which count against the budgets
    whether or not the model answered."""
    return replace(
        diagnosis,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
    )


@dataclass(frozen=True)
class DiagnosisResult:
    """One run of ``DiagnosisService.diagnose``: what ``medic diagnose`` prints."""

    incident_id: IncidentId
    rule: Diagnosis
    llm: Diagnosis | None = None
    reused_from: DiagnosisId | None = None
    error: str | None = None
    incident: Incident | None = None
    """The incident as it was read for the diagnosis."""


#: Called once the rule diagnosis is recorded, before the model is asked.
RulesSpoke = Callable[[Incident, Diagnosis], None]


class DiagnosisService:
    """Diagnoses one incident on demand, whatever its status, and records the result."""

    def __init__(
        self,
        *,
        incidents: IncidentStore,
        diagnoses: DiagnosisStore,
        source: EvidenceSource,
        llm: Diagnoser | None = None,
        daily_tokens: int = 1_000_000,
        window: float = 86400.0,
        repo_head: Callable[[], str | None] = lambda: None,
        redact_patterns: Sequence[re.Pattern[str]] = (),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.incidents = incidents
        self.diagnoses = diagnoses
        self.source = source
        self.llm = llm
        self.daily_tokens = daily_tokens
        self.window = window
        self.repo_head = repo_head
        self.redact_patterns = tuple(redact_patterns)
        self.clock = clock

    def diagnose(
        self, incident_id: str, *, use_llm: bool = True, on_rules: RulesSpoke | None = None
    ) -> DiagnosisResult:
        """Rules always; the model when configured, asked for, and the budgets allow.

        ``on_rules`` hears of the rule diagnosis as soon as it is recorded."""
        incident = self.incidents.get(incident_id)
        case = gather(
            incident=incident,
            source=self.source,
            store=self.incidents,
            diagnoses_of=self.diagnoses.diagnoses,
            redact_patterns=self.redact_patterns,
        )
        text = case.render()
        now = self.clock.now()
        model = self.llm.model.name if self.llm is not None else "-"
        fp = fingerprint(case, repo_head=self.repo_head(), model=model).key
        rule = rule_diagnose(case)
        rule_record = with_culprit(
            Diagnosis(
                id=new_diagnosis_id(),
                incident_id=incident.id,
                source=DiagnosisSource.RULES,
                created_at=now,
                summary=rule.summary,
                root_cause=rule.root_cause,
                confidence=rule.confidence,
                evidence=rule.evidence,
                rule_id=rule.rule_id,
                case_file=text,
                fingerprint=fp,
            ),
            rule.culprit,
        )
        self.diagnoses.record_diagnosis(rule_record)
        logger.info(
            "Incident {} ({}) was diagnosed by the rules as {}: {}",
            incident.id[:12],
            incident.container.label,
            rule.rule_id,
            rule.summary,
        )
        if on_rules is not None:
            on_rules(incident, rule_record)
        if not use_llm or self.llm is None:
            return DiagnosisResult(incident_id=incident.id, rule=rule_record, incident=incident)

        earlier = self.diagnoses.find_reusable(fp, since=window_start(now, self.window))
        if earlier is not None:
            return self._reuse(incident, rule_record, earlier, case)
        spent = self.diagnoses.tokens_since(day_start(now))
        refusal = daily_refusal(spent=spent, daily_tokens=self.daily_tokens)
        if refusal is not None:
            logger.warning("Incident {}: {}", incident.id[:12], refusal)
            return DiagnosisResult(
                incident_id=incident.id, rule=rule_record, error=refusal, incident=incident
            )

        limits = self.llm.limits
        llm = replace(
            self.llm,
            limits=replace(
                limits, incident_tokens=min(limits.incident_tokens, self.daily_tokens - spent)
            ),
        )
        base = Diagnosis(
            id=new_diagnosis_id(),
            incident_id=incident.id,
            source=DiagnosisSource.LLM,
            created_at=now,
            summary="",
            root_cause="",
            confidence=Confidence.LOW,
            rule_id=rule.rule_id,
            model=llm.model.name,
            case_file=text,
            fingerprint=fp,
        )
        try:
            answer = llm.diagnose(case, rule)
        except LLMError as e:
            failed = with_usage(
                replace(
                    base,
                    created_at=self.clock.now(),
                    summary="The model gave no diagnosis; the rule diagnosis stands.",
                    error=str(e),
                ),
                e.usage,
            )
            self.diagnoses.record_diagnosis(failed)
            logger.warning(
                "The model {} could not diagnose incident {} ({}); the rule diagnosis stands "
                "and the same failure is not sent again for {:g} s.",
                llm.model.name,
                incident.id[:12],
                e,
                self.window,
            )
            return DiagnosisResult(
                incident_id=incident.id,
                rule=rule_record,
                llm=failed,
                error=str(e),
                incident=incident,
            )
        record = with_usage(
            with_culprit(
                replace(
                    base,
                    created_at=self.clock.now(),
                    summary=answer.summary,
                    root_cause=answer.root_cause,
                    confidence=answer.confidence,
                    evidence=answer.evidence,
                    edits=answer.edits,
                    no_edits_reason=answer.no_edits_reason,
                    unverified_evidence=answer.unverified_evidence,
                ),
                answer.culprit,
            ),
            answer.usage,
        )
        self.diagnoses.record_diagnosis(record)
        logger.info(
            "The model {} diagnosed incident {} ({} tokens in {} calls): {}",
            llm.model.name,
            incident.id[:12],
            answer.usage.total,
            answer.usage.calls,
            answer.summary,
        )
        return DiagnosisResult(
            incident_id=incident.id, rule=rule_record, llm=record, incident=incident
        )

    def _reuse(
        self, incident: Incident, rule: Diagnosis, earlier: Diagnosis, case: CaseFile
    ) -> DiagnosisResult:
        until = earlier.created_at + timedelta(seconds=self.window)
        if earlier.error is not None:
            error = (
                f"The model was not asked: the same failure's call failed at "
                f"{earlier.created_at:%Y-%m-%d %H:%M:%S} UTC ({earlier.error}); it is not "
                f"retried before {until:%Y-%m-%d %H:%M:%S} UTC."
            )
            return DiagnosisResult(
                incident_id=incident.id,
                rule=rule,
                reused_from=earlier.id,
                error=error,
                incident=incident,
            )
        copy = replace(
            earlier,
            id=new_diagnosis_id(),
            incident_id=incident.id,
            created_at=rule.created_at,
            reused_from=earlier.id,
            case_file=rule.case_file,
            input_tokens=0,
            output_tokens=0,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=0,
        )
        # The cause is the same service, but its state is as this case file has it now.
        named = next((s for s in case.services if s.service == copy.cause_service), None)
        if named is not None:
            copy = with_culprit(copy, Culprit.of(named))
        self.diagnoses.record_diagnosis(copy)
        logger.info(
            "Incident {} has the same failure fingerprint as incident {}; its diagnosis is "
            "reused and the model is not asked again.",
            incident.id[:12],
            earlier.incident_id[:12],
        )
        return DiagnosisResult(
            incident_id=incident.id,
            rule=rule,
            llm=copy,
            reused_from=earlier.id,
            incident=incident,
        )


_STOP = object()


class Followups(Protocol):
    """What the worker does around a diagnosis (``agent.escalate.followup.Followup``)."""

    def rules_spoke(
        self, incident: Incident, rule: Diagnosis, notice: Notification | None
    ) -> None: ...

    def failed(self, incident_id: IncidentId, notice: Notification | None, why: str) -> None: ...

    def finished(self, result: DiagnosisResult, incident: Incident) -> object: ...


class Notices(Protocol):
    """Escalation notifications held for their diagnosis
    (``agent.escalate.followup.EscalationNotices``)."""

    def claim(self, incident_id: str) -> Notification | None: ...

    def sweep(self) -> None: ...


@dataclass(frozen=True)
class _Queued:
    incident_id: IncidentId
    notice: Notification | None


class DiagnosisWorker:
    """The escalation hook: queues escalated incidents and diagnoses them on its own thread,
    so the decision thread and healing never wait for a diagnosis.

    With ``followup`` and ``notices``, the escalation's notification goes out once the
    rules have spoken, carrying their summary (or, if diagnosing fails or is
    abandoned, as it was, saying so), and the model's edits become a fix."""

    def __init__(
        self,
        service: DiagnosisService,
        *,
        followup: Followups | None = None,
        notices: Notices | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sweep_every: float = 5.0,
    ) -> None:
        self.service = service
        self.followup = followup
        self.notices = notices
        self.clock = clock
        self.sweep_every = sweep_every
        self._queue: queue.Queue[object] = queue.Queue()
        self._current: _Queued | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="diagnosis", daemon=True)
        self._thread.start()

    def escalated(self, incident: Incident) -> None:
        """Queue ``incident`` for diagnosis and return at once."""
        notice = self.notices.claim(incident.id) if self.notices is not None else None
        self._queue.put(_Queued(incident.id, notice))
        logger.info(
            "Incident {} ({}) escalated; it is queued for diagnosis.",
            incident.id[:12],
            incident.container.label,
        )

    def close(self, timeout: float) -> None:
        """Finish the diagnosis under way within ``timeout`` seconds; record what is left
        (the one under way, if it did not finish, and the queued ones) as abandoned."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        left: list[_Queued] = []
        with self._lock:
            if self._thread.is_alive() and self._current is not None:
                left.append(self._current)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Queued):
                left.append(item)
        for queued in left:
            self._record_abandoned(queued.incident_id)
            if self.followup is not None:
                self.followup.failed(
                    queued.incident_id,
                    queued.notice,
                    "The diagnosis was abandoned: medic stopped before it finished.",
                )

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.sweep_every)
            except queue.Empty:
                if self.notices is not None:
                    self.notices.sweep()
                continue
            if item is _STOP:
                return
            assert isinstance(item, _Queued)
            with self._lock:
                self._current = item
            try:
                self._diagnose(item)
            finally:
                with self._lock:
                    self._current = None

    def _diagnose(self, item: _Queued) -> None:
        incident_id = item.incident_id
        followup = self.followup

        def rules_spoke(incident: Incident, rule: Diagnosis) -> None:
            if followup is not None:
                followup.rules_spoke(incident, rule, item.notice)
            with self._lock:
                if self._current is item:
                    # Sent: an abandoned model call must not send it a second time.
                    self._current = replace(item, notice=None)

        try:
            result = self.service.diagnose(incident_id, on_rules=rules_spoke)
            if followup is not None and result.incident is not None:
                followup.finished(result, result.incident)
        except Exception as e:
            logger.exception(
                "Diagnosing incident {} failed ({}); the incident stays escalated without "
                "a diagnosis. Run medic diagnose {} to try again.",
                incident_id[:12],
                e,
                incident_id[:12],
            )
            with self._lock:
                notice = self._current.notice if self._current is not None else item.notice
                if self._current is not None:
                    self._current = replace(self._current, notice=None)
            if followup is not None:
                followup.failed(
                    incident_id,
                    notice,
                    f"medic could not diagnose it ({e}); run medic diagnose "
                    f"{incident_id[:12]} to try again.",
                )

    def _record_abandoned(self, incident_id: IncidentId) -> None:
        source = DiagnosisSource.LLM if self.service.llm is not None else DiagnosisSource.RULES
        self.service.diagnoses.record_diagnosis(
            Diagnosis(
                id=new_diagnosis_id(),
                incident_id=incident_id,
                source=source,
                created_at=self.clock.now(),
                summary="Diagnosis abandoned: medic stopped before it finished.",
                root_cause="",
                confidence=Confidence.LOW,
                error="abandoned: medic stopped before the diagnosis finished; run medic "
                "diagnose to diagnose it now",
            )
        )
        logger.warning(
            "Medic is stopping; the diagnosis of incident {} was abandoned.", incident_id[:12]
        )
