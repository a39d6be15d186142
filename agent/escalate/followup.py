"""What follows a diagnosis: people hear of it, and its edits become a fix.

Three parts, each given to the diagnosis worker (and to ``medic diagnose``):

* ``EscalationNotices`` stands between the recorder and the notifier. It passes
  every notification on at once except an escalation's, which it holds until the
  worker has the rule diagnosis and sends it with the diagnosis summary added. An
  escalation is never lost to a failed diagnosis: the worker then sends it as it
  was, saying the diagnosis failed, and one the worker was never told of (the store
  failed while escalating, so the recorder did not call the hook) goes out as it
  was after ``grace`` seconds.
* ``FixMaker`` turns a recorded diagnosis's edits into a fix right after it: a
  branch, or a refusal with every reason (also when MEDIC_REPO is not set), and
  records it in the fix store.
* ``Followup`` ties them: after the rules it releases the escalation notice, after
  the model it makes the fix, and it says what happened in a notification.

When a diagnosis finds the cause in another service of the compose project, its
notification's body begins with that service and its state ("The cause lies in db,
not in app: db is exited (exit code 1)."): what a person reads first is where to look.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from loguru import logger

from agent.clock import SYSTEM_CLOCK, Clock
from agent.engine.gateway import DockerGateway
from agent.errors import MedicError
from agent.escalate.document import cause_sentence
from agent.escalate.worker import DiagnosisResult
from agent.fixes.document import healing_sentence
from agent.fixes.git import Git
from agent.fixes.propose import FixOptions, make_fix, new_fix_id
from agent.fixes.review import FixStore
from agent.model import Diagnosis, Fix, FixStatus, Incident, IncidentId
from agent.notify import Notification, NotificationKind, Notifier

#: Seconds an escalation notice waits for the worker to claim it before it is sent as is.
CLAIM_GRACE = 30.0

NO_REPOSITORY = (
    "no_repository: MEDIC_REPO is not set, so medic has no git repository to make a fix "
    "branch in; set it to the project's repository (mounted at the same path) to get one"
)


class EscalationNotices(Notifier):
    """A notifier that holds each escalation's notification for its diagnosis."""

    def __init__(
        self,
        inner: Notifier,
        *,
        grace: float = CLAIM_GRACE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.grace = grace
        self._monotonic = monotonic
        self._held: dict[str, tuple[Notification, float]] = {}
        self._lock = threading.Lock()

    def send(self, notification: Notification) -> None:
        if notification.kind is NotificationKind.ESCALATED and not notification.dedupe:
            with self._lock:
                self._held[notification.incident_id] = (notification, self._monotonic())
            self.sweep()
            return
        self.inner.send(notification)

    def claim(self, incident_id: str) -> Notification | None:
        """Take the held escalation notice of ``incident_id``, if there is one."""
        with self._lock:
            held = self._held.pop(incident_id, None)
        return held[0] if held else None

    def sweep(self) -> None:
        """Send, as they are, the notices nobody claimed within ``grace`` seconds."""
        now = self._monotonic()
        with self._lock:
            stale = [k for k, (_, at) in self._held.items() if now - at >= self.grace]
            notices = [self._held.pop(k)[0] for k in stale]
        for notice in notices:
            self.inner.send(notice)

    def close(self) -> None:
        """Send every notice still held, then close the notifier behind."""
        with self._lock:
            notices = [n for n, _ in self._held.values()]
            self._held.clear()
        for notice in notices:
            self.inner.send(notice)
        self.inner.close()


class FixMaker:
    """Makes or refuses the fix of a diagnosis with edits, and records it."""

    def __init__(
        self,
        *,
        store: FixStore,
        git: Git | None,
        options: FixOptions,
        clock: Clock = SYSTEM_CLOCK,
        gateway: DockerGateway | None = None,
        labels_of: Callable[[Incident], Mapping[str, str] | None] = lambda _incident: None,
    ) -> None:
        self.store = store
        self.git = git
        self.options = options
        self.clock = clock
        self.gateway = gateway
        self.labels_of = labels_of

    def make(self, diagnosis: Diagnosis, incident: Incident) -> Fix | None:
        """The fix of ``diagnosis``, recorded; None when it proposes no edits."""
        if not diagnosis.edits or diagnosis.error is not None:
            return None
        if self.git is None:
            fix = self._refused(diagnosis, incident, NO_REPOSITORY)
        else:
            try:
                fix = make_fix(
                    diagnosis,
                    incident,
                    git=self.git,
                    options=self.options,
                    clock=self.clock,
                    gateway=self.gateway,
                    labels=self.labels_of(incident),
                )
            except MedicError as e:
                logger.error(
                    "The fix proposed for incident {} could not be made: {}.", incident.id[:8], e
                )
                fix = self._refused(diagnosis, incident, f"git_failed: {e}")
        self.store.record_fix(fix)
        return fix

    def _refused(self, diagnosis: Diagnosis, incident: Incident, reason: str) -> Fix:
        return Fix(
            id=new_fix_id(),
            incident_id=incident.id,
            diagnosis_id=diagnosis.id,
            status=FixStatus.REFUSED,
            created_at=self.clock.now(),
            summary=diagnosis.summary,
            files=tuple(dict.fromkeys(e.path for e in diagnosis.edits)),
            refusal_reasons=(reason,),
        )


@dataclass(frozen=True)
class Outcome:
    """A diagnosis and what followed it."""

    result: DiagnosisResult
    fix: Fix | None = None


class Followup:
    """What the worker and ``medic diagnose`` do around a diagnosis."""

    def __init__(
        self,
        *,
        fixes: FixMaker | None = None,
        notifier: Notifier | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.fixes = fixes
        self.notifier = notifier
        self.clock = clock

    def rules_spoke(self, incident: Incident, rule: Diagnosis, notice: Notification | None) -> None:
        """Send the escalation notice with the rule diagnosis's summary."""
        if notice is None or self.notifier is None:
            return
        extra = f"Diagnosis by medic's rules ({rule.rule_id or 'unknown'}): {rule.summary}"
        if rule.root_cause:
            extra += f"\nRoot cause: {rule.root_cause}"
        body = _led_by_cause(rule, incident, f"{notice.body}\n\n{extra}")
        self.notifier.send(replace(notice, body=body))

    def failed(self, incident_id: IncidentId, notice: Notification | None, why: str) -> None:
        """Send the escalation notice as it was, saying that the diagnosis failed."""
        if notice is None or self.notifier is None:
            return
        self.notifier.send(replace(notice, body=f"{notice.body}\n\n{why}"))

    def finished(self, result: DiagnosisResult, incident: Incident) -> Outcome:
        """After the whole diagnosis: make the fix of the model's edits and say so."""
        llm = result.llm
        if llm is None or llm.error is not None:
            return Outcome(result)
        fix = self.fixes.make(llm, incident) if self.fixes is not None else None
        if fix is not None:
            self._notify_fix(fix, incident, llm)
        else:
            self._notify_diagnosis(incident, llm, reused=result.reused_from is not None)
        return Outcome(result, fix)

    def _notify_fix(self, fix: Fix, incident: Incident, llm: Diagnosis) -> None:
        service = incident.container.service or incident.container.name
        if fix.status is FixStatus.PROPOSED:
            title = f"medic proposes a fix for {service}: {fix.branch}"
            lines = [
                f"Diagnosis: {llm.summary}",
                f"Branch: {fix.branch}",
                f"Files: {', '.join(fix.files)}",
            ]
            healing = healing_sentence(fix.verification)
            if healing is not None:
                lines.append(healing)
            if fix.verification is not None and not fix.verification.ok:
                lines.append("Verification failed; see medic fixes show.")
            lines.append(
                f"Review it with medic fixes show {fix.id[:8]}, then medic fixes approve "
                f"{fix.id[:8]} or medic fixes reject {fix.id[:8]} --reason TEXT."
            )
        else:
            title = f"medic refused the fix proposed for {service}"
            lines = [
                f"Diagnosis: {llm.summary}",
                "The proposed edits were not committed because:",
                *(f"- {r}" for r in fix.refusal_reasons),
            ]
        body = _led_by_cause(llm, incident, "\n".join(lines))
        self._send(NotificationKind.FIX_PROPOSED, incident, title, body, fix.id)

    def _notify_diagnosis(self, incident: Incident, llm: Diagnosis, *, reused: bool) -> None:
        service = incident.container.service or incident.container.name
        body = [f"{llm.summary}", f"Root cause: {llm.root_cause}"]
        if llm.no_edits_reason:
            body.append(f"No edits: {llm.no_edits_reason}")
        if reused:
            body.append("(The same failure was diagnosed before; that diagnosis is reused.)")
        body.append(f"medic incidents show {incident.id[:8]} has the details.")
        title = f"medic diagnosed {service} ({llm.model}, {llm.confidence} confidence)"
        text = _led_by_cause(llm, incident, "\n".join(body))
        self._send(NotificationKind.DIAGNOSED, incident, title, text, llm.id)

    def _send(
        self, kind: NotificationKind, incident: Incident, title: str, body: str, dedupe: str
    ) -> None:
        if self.notifier is None:
            return
        ref = incident.container
        key = f"{ref.project or '-'}/{ref.service or ref.name}/{kind}"
        self.notifier.send(
            Notification(kind, incident.id, key, title, body, self.clock.now(), dedupe)
        )


def _led_by_cause(diagnosis: Diagnosis, incident: Incident, body: str) -> str:
    """``body``, led by the service where ``diagnosis`` finds the cause, if it names one."""
    if not diagnosis.cause_service:
        return body
    service = incident.container.service or incident.container.name
    return f"{cause_sentence(diagnosis, service)}\n\n{body}"
