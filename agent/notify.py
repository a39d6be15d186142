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

A daemon runs for months, so what this remembers is bounded: the keys of the
last ``MAX_DEDUPE_KEYS`` notifications (older ones may, at worst, be said a
second time), send times only within the rate window, and a held-back count
per service and signal.
"""

from __future__ import annotations

import contextlib
import queue
import threading
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
from agent.output import safe_text

#: How many (incident, kind) keys are remembered to say each thing once; the oldest go first.
MAX_DEDUPE_KEYS = 10_000


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
    """Deduplicates, rate-limits and sends notifications on a thread of its own."""

    def __init__(
        self,
        sender: Notifier,
        *,
        rate: int = 6,
        per: float = 3600.0,
        max_pending: int = 1000,
        max_keys: int = MAX_DEDUPE_KEYS,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sender = sender
        self._rate = rate
        self._per = timedelta(seconds=per)
        self._now = now
        self._sent_keys: OrderedDict[tuple[str, NotificationKind, str], None] = OrderedDict()
        self._max_keys = max_keys
        self._recent: dict[str, deque[datetime]] = {}
        self._held_back: dict[str, int] = defaultdict(int)
        self._queue: queue.Queue[Notification | None] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="medic-notify", daemon=True)
        self._thread.start()
        self.delivered = 0
        self.failed = 0

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
        try:
            self._queue.put_nowait(notification)
        except queue.Full:
            logger.warning(
                "The notification queue is full; dropping the {} notification of incident {}.",
                notification.kind,
                notification.incident_id[:8],
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
            notification = self._queue.get()
            if notification is None:
                return
            try:
                self._sender.send(notification)
                self.delivered += 1
            except MedicError as e:
                self.failed += 1
                logger.warning("Could not send a notification: {}. Healing goes on.", e)
            except Exception as e:  # a broken apprise plugin must not end the thread
                self.failed += 1
                logger.warning("Sending a notification failed unexpectedly: {}.", e)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, waiting at most ``timeout`` seconds."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            logger.warning(
                "Gave up waiting for queued notifications after {}.", format_duration(timeout)
            )
