"""Telling people what medic saw and did: incident opened, escalated, resolved.

Delivery goes through apprise, so one URL per destination covers Slack, Discord,
e-mail, Teams and plain webhooks (``MEDIC_NOTIFY_URLS``). Two rules keep this
from hurting the thing it reports on:

* Sending happens on a thread of its own. The supervisor only queues a
  notification, so a slow or unreachable webhook never delays a heal.
* Each incident says each thing once (deduplicated by incident and kind), and a
  flapping service cannot flood a channel: at most ``rate`` notifications per
  ``per`` seconds for one service and signal; what is held back is counted and
  mentioned in the next one that goes out.

What became of each notification (delivered, failed, held back, dropped) can be
kept for the incident's timeline: the queue hands a ``NotificationRecord`` to a
``journal`` (the incident store's ``record_notification``), on its own thread
only, so a store that waits on its database delays a notification, never a heal.

A daemon runs for months, so what this remembers is bounded: the keys of the
last ``MAX_DEDUPE_KEYS`` notifications (older ones may, at worst, be said a
second time), send times only within the rate window, and a held-back count
per service and signal.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from loguru import logger

from agent.clock import utcnow
from agent.codec import format_duration
from agent.errors import ConfigError, MedicError
from agent.model import IncidentId, NotificationId, NotificationOutcome, NotificationRecord
from agent.output import safe_text
from agent.secrets import find_secrets, strip_terminal_escapes

#: How many (incident, kind) keys are remembered to say each thing once; the oldest go first.
MAX_DEDUPE_KEYS = 10_000

#: A failed notification's error is kept in its record up to this many characters.
MAX_ERROR_CHARS = 500

#: Where what became of each notification goes: the incident store's ``record_notification``.
Journal = Callable[[NotificationRecord], None]


class NotifyError(MedicError):
    """A notification could not be delivered."""


class NotificationKind(StrEnum):
    OPENED = "opened"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    DIAGNOSED = "diagnosed"
    FIX_PROPOSED = "fix_proposed"
    PLAYBOOK = "playbook"


@dataclass(frozen=True)
class Notification:
    """One message about one incident."""

    kind: NotificationKind
    incident_id: str
    fingerprint: str
    title: str
    body: str
    at: datetime
    dedupe: str = ""
    """Told apart from other notifications of the same incident and kind by this."""

    @property
    def is_trouble(self) -> bool:
        return self.kind in (
            NotificationKind.OPENED,
            NotificationKind.ESCALATED,
            NotificationKind.PLAYBOOK,
        )


class Notifier(ABC):
    """Where notifications go."""

    @abstractmethod
    def send(self, notification: Notification) -> None:
        """Deliver one notification; raises NotifyError when it could not be."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Finish or drop what is pending."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # apprise imports the deprecated imghdr module when it loads its plugins, which it
    # does lazily; the warning is its to fix, and says nothing to an operator.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        yield


def _apprise() -> Any:
    with _quiet():
        import apprise

    return apprise


class AppriseNotifier(Notifier):
    """Delivers to every apprise URL given; fails if none accepted the message."""

    def __init__(self, urls: Sequence[str]) -> None:
        apprise = _apprise()
        self._apprise = apprise
        with _quiet():
            self._targets = apprise.Apprise()
        for url in urls:
            with _quiet():
                added = self._targets.add(url)
            if not added:
                scheme = url.split("://", 1)[0] if "://" in url else url
                raise ConfigError(
                    f"MEDIC_NOTIFY_URLS has a URL apprise cannot use ({scheme}://…); "
                    "see https://github.com/caronc/apprise/wiki for the URL formats."
                )
        self.count = len(urls)

    def send(self, notification: Notification) -> None:
        kind = (
            self._apprise.NotifyType.FAILURE
            if notification.is_trouble
            else self._apprise.NotifyType.SUCCESS
        )
        with _quiet():
            # Container and model text is shown in chat clients and terminals too.
            ok = self._targets.notify(
                title=safe_text(notification.title),
                body=safe_text(notification.body),
                notify_type=kind,
            )
        if not ok:
            raise NotifyError(
                f"no destination accepted the {notification.kind} notification "
                f"of incident {notification.incident_id[:8]}"
            )


class NotificationQueue(Notifier):
    """Deduplicates, rate-limits and sends notifications on a thread of its own.

    With a ``journal``, every notification that is not a repeat gets one record of what
    became of it: delivered or failed once the destinations answered, held back by the
    rate limit, or dropped because ``max_pending`` were waiting already. The journal is
    called on the sending thread only (held-back and dropped records wait there, at most
    ``max_pending`` of them), so ``send`` still never blocks and never raises. A journal
    that raises is logged (a warning once per kind of error, until it works again) and
    stops nothing.
    """

    def __init__(
        self,
        sender: Notifier,
        *,
        rate: int = 6,
        per: float = 3600.0,
        max_pending: int = 1000,
        max_keys: int = MAX_DEDUPE_KEYS,
        now: Callable[[], datetime] = utcnow,
        journal: Journal | None = None,
    ) -> None:
        self._sender = sender
        self._rate = rate
        self._per = timedelta(seconds=per)
        self._now = now
        self._journal = journal
        self._sent_keys: OrderedDict[tuple[str, NotificationKind, str], None] = OrderedDict()
        self._max_keys = max_keys
        self._recent: dict[str, deque[datetime]] = {}
        self._held_back: dict[str, int] = defaultdict(int)
        self._max_pending = max_pending
        self._pending: deque[Notification] = deque()
        self._records: deque[NotificationRecord] = deque()
        self._closing = False
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._journal_errors: set[str] = set()
        self._overflowing = False
        self._thread = threading.Thread(target=self._work, name="medic-notify", daemon=True)
        self._thread.start()
        self.delivered = 0
        self.failed = 0
        self.unrecorded = 0
        """Records the journal did not take (it raised, or too many were waiting)."""

    def send(self, notification: Notification) -> None:
        """Queue it unless it is a repeat or over the rate; never blocks, never raises."""
        key = (notification.incident_id, notification.kind, notification.dedupe)
        with self._lock:
            if key in self._sent_keys:
                return
            self._sent_keys[key] = None
            while len(self._sent_keys) > self._max_keys:
                self._sent_keys.popitem(last=False)
            self._forget_before(self._now() - self._per)
            recent = self._recent.setdefault(notification.fingerprint, deque())
            if len(recent) >= self._rate:
                self._held_back[notification.fingerprint] += 1
                if self._held_back[notification.fingerprint] == 1:
                    logger.info(
                        "Holding back notifications for {}: {} were sent in the last {}.",
                        notification.fingerprint,
                        len(recent),
                        format_duration(self._per.total_seconds()),
                    )
                self._keep(notification, NotificationOutcome.HELD_BACK)
                return
            recent.append(self._now())
            held = self._held_back.pop(notification.fingerprint, 0)
            if held:
                notification = replace(
                    notification,
                    body=f"{notification.body}\n\n({held} more notification"
                    f"{'s' if held != 1 else ''} for {notification.fingerprint} "
                    "were held back by the rate limit.)",
                )
            if len(self._pending) >= self._max_pending:
                logger.warning(
                    "The notification queue is full; dropping the {} notification of incident {}.",
                    notification.kind,
                    notification.incident_id[:8],
                )
                self._keep(notification, NotificationOutcome.DROPPED)
                return
            self._pending.append(notification)
            self._ready.notify()

    def _keep(self, notification: Notification, outcome: NotificationOutcome) -> None:
        """Leave the record of a notification that is not sent for the sending thread to
        journal. Hold the lock."""
        if self._journal is None:
            return
        if len(self._records) >= self._max_pending:
            self.unrecorded += 1
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "{} notification records are waiting to be written already (a slow "
                    "destination or a slow incident store holds up the sending thread); the "
                    "{} {} notification of incident {} is not recorded, nor are others until "
                    "those are written.",
                    len(self._records),
                    outcome,
                    notification.kind,
                    notification.incident_id[:8],
                )
            return
        self._records.append(self._record(notification, outcome))
        self._ready.notify()

    def _record(
        self, notification: Notification, outcome: NotificationOutcome, error: str | None = None
    ) -> NotificationRecord:
        return NotificationRecord(
            id=NotificationId(uuid.uuid4().hex),
            incident_id=IncidentId(notification.incident_id),
            kind=str(notification.kind),
            title=notification.title,
            at=self._now(),
            outcome=outcome,
            error=error,
        )

    def _forget_before(self, horizon: datetime) -> None:
        """Drop send times older than the rate window, and services with none left.
        Hold the lock."""
        for fingerprint in list(self._recent):
            recent = self._recent[fingerprint]
            while recent and recent[0] < horizon:
                recent.popleft()
            if not recent:
                del self._recent[fingerprint]

    def remembered(self) -> tuple[int, int]:
        """(dedupe keys, services with send times) held now; both are bounded."""
        with self._lock:
            return len(self._sent_keys), len(self._recent)

    def _work(self) -> None:
        while True:
            with self._ready:
                while not (self._pending or self._records or self._closing):
                    self._ready.wait()
                records = list(self._records)
                self._records.clear()
                self._overflowing = False
                notification = self._pending.popleft() if self._pending else None
                if notification is None and not records:
                    return  # closing, and nothing is left to do
            for record in records:
                self._write(record)
            if notification is not None:
                self._deliver(notification)

    def _deliver(self, notification: Notification) -> None:
        error: str | None = None
        try:
            self._sender.send(notification)
        except MedicError as e:
            logger.warning("Could not send a notification: {}. Healing goes on.", e)
            error = error_line(e)
        except Exception as e:  # a broken apprise plugin must not end the thread
            logger.warning("Sending a notification failed unexpectedly: {}.", e)
            error = f"{type(e).__name__}: {error_line(e)}"
        if error is None:
            self.delivered += 1
            outcome = NotificationOutcome.DELIVERED
        else:
            self.failed += 1
            outcome = NotificationOutcome.FAILED
        if self._journal is not None:
            self._write(self._record(notification, outcome, error))

    def _write(self, record: NotificationRecord) -> None:
        """Hand one record to the journal; whatever it raises is logged, never raised."""
        assert self._journal is not None
        try:
            self._journal(record)
        except Exception as e:
            with self._lock:
                self.unrecorded += 1
            kind = type(e).__name__
            if kind in self._journal_errors:
                logger.debug("Could not record a notification either: {}.", e)
                return
            self._journal_errors.add(kind)
            logger.warning(
                "Could not record that the {} notification of incident {} was {}: {}. "
                "Notifications are still sent, but the incident's timeline lacks them until "
                "the incident store takes them again (see the store's own messages).",
                record.kind,
                record.incident_id[:8],
                record.outcome,
                e,
            )
            return
        if self._journal_errors:
            self._journal_errors.clear()
            logger.info(
                "Notification records are kept again ({} were not recorded since medic started).",
                self.unrecorded,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued and journal what is waiting, within ``timeout`` seconds."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            logger.warning(
                "Gave up waiting for queued notifications after {}.", format_duration(timeout)
            )


def error_line(error: BaseException) -> str:
    """What went wrong, for a notification's record: one line, without terminal
    escapes or secrets (an apprise plugin's error can carry a destination's URL, token
    and all, and the record is kept and shown), at most MAX_ERROR_CHARS long."""
    text = " ".join(strip_terminal_escapes(str(error)).split()) or type(error).__name__
    parts: list[str] = []
    last = 0
    for span in sorted(find_secrets(text), key=lambda s: s.start):
        if span.end <= last:
            continue
        parts.append(text[last : max(span.start, last)])
        parts.append(f"[REDACTED:{span.label}]")
        last = span.end
    parts.append(text[last:])
    line = "".join(parts)
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"
