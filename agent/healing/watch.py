"""Reading logs and probing ports for the ``log_match`` and ``probe_failed`` signals.

Only containers a playbook with a ``log`` or ``probe`` rule applies to are read or
probed, so a stack without such playbooks pays nothing per cycle. The watcher
owns what it learned between polls (where the log was read up to, matching lines,
probe failures in a row, since when probes pass) and turns it into findings and
into the "clear since" times that agent/healing/lifecycle.py judges recovery by.

Log lines carry the engine's timestamps: they are counted against each other (the
window runs back from the newest line), never against the host's clock. When a
match was *seen* is the host's time, and that is what the quiet window after the
last match is measured in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loguru import logger

from agent.clock import Clock
from agent.engine.gateway import DockerGateway
from agent.errors import DockerError
from agent.healing.signals import Prober, log_finding, log_hits, probe_finding
from agent.model import ContainerId, ContainerSnapshot, Finding, LogRule, Playbook, ProbeRule, State


@dataclass
class _Watched:
    """What the watcher knows of one container's log and probes."""

    started_at: datetime
    log_since: datetime | None = None
    hits: dict[str, list[datetime]] = field(default_factory=dict)
    last_line: dict[str, str] = field(default_factory=dict)
    hit_seen_at: datetime | None = None
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    probe_ok_since: datetime | None = None
    probed: bool = False
    log_failing: bool = False


class Watcher:
    """Reads logs and runs probes once per poll, and says what they found."""

    def __init__(
        self,
        *,
        gateway: DockerGateway,
        playbooks: Sequence[Playbook],
        prober: Prober,
        clock: Clock,
    ) -> None:
        self._gateway = gateway
        self._prober = prober
        self._clock = clock
        self._books = tuple(p for p in playbooks if p.match.log or p.match.probe)
        self._watched: dict[ContainerId, _Watched] = {}

    @property
    def active(self) -> bool:
        """Whether any playbook has a log or probe rule (otherwise this costs nothing)."""
        return bool(self._books)

    def _applicable(self, snapshot: ContainerSnapshot) -> list[Playbook]:
        return [p for p in self._books if p.match.applies_to(snapshot.ref, snapshot.labels)]

    def look(
        self, snapshots: Sequence[ContainerSnapshot], *, skip: Callable[[ContainerId], bool]
    ) -> None:
        """Read new log lines and run every probe (in parallel) for running containers;
        ``skip`` says which are left alone (an action is in flight on them)."""
        if not self._books:
            return
        probes: list[tuple[_Watched, Playbook, ProbeRule, str]] = []
        for snapshot in snapshots:
            if snapshot.state is not State.RUNNING or skip(snapshot.ref.id):
                continue
            books = self._applicable(snapshot)
            if not books:
                continue
            watched = self._watched.get(snapshot.ref.id)
            if watched is None:
                watched = self._watched[snapshot.ref.id] = _Watched(started_at=self._clock.now())
            rules = [(p.name, p.match.log) for p in books if p.match.log is not None]
            if rules:
                self._read_log(snapshot, watched, rules)
            for p in books:
                if p.match.probe is not None and snapshot.ip_addresses:
                    probes.append((watched, p, p.match.probe, snapshot.ip_addresses[0]))
        if not probes:
            return
        outcomes = self._prober.probe_all([(rule, ip) for _, _, rule, ip in probes])
        now = self._clock.now()
        for (watched, book, _, _), outcome in zip(probes, outcomes, strict=True):
            watched.probed = True
            if outcome.ok:
                watched.failures.pop(book.name, None)
                if not watched.failures and watched.probe_ok_since is None:
                    watched.probe_ok_since = now
            else:
                count, _ = watched.failures.get(book.name, (0, ""))
                watched.failures[book.name] = (count + 1, outcome.detail)
                watched.probe_ok_since = None

    def _read_log(
        self,
        snapshot: ContainerSnapshot,
        watched: _Watched,
        rules: Sequence[tuple[str, LogRule]],
    ) -> None:
        ref = snapshot.ref
        longest = max(r.window for _, r in rules)
        # Later reads carry on from the newest line read (engine time). The first goes
        # back one window from the host's now: the only host time sent to the engine,
        # and it only bounds how far back that first read looks.
        since = watched.log_since
        if since is None:
            since = self._clock.now() - timedelta(seconds=longest)
        try:
            lines = self._gateway.logs(ref.id, since=since)
        except DockerError as e:
            if not watched.log_failing:
                logger.bind(container=ref.name).warning(
                    "Could not read the log of {}: {}. Its log_match rules are not checked "
                    "until the log can be read again.",
                    ref.label,
                    e,
                )
            watched.log_failing = True
            return
        if watched.log_failing:
            logger.bind(container=ref.name).info("The log of {} can be read again.", ref.label)
            watched.log_failing = False
        # Docker's "since" is inclusive: drop what the last look already counted.
        if watched.log_since is not None:
            lines = [line for line in lines if line[0] > watched.log_since]
        if not lines:
            return
        watched.log_since = lines[-1][0]
        newest = lines[-1][0]
        for name, rule in rules:
            earlier = watched.hits.get(name, [])
            hits, last = log_hits(rule, lines, earlier=earlier, now=newest)
            if len(hits) > len([t for t in earlier if t in hits]):
                watched.hit_seen_at = self._clock.now()
            watched.hits[name] = hits
            if last is not None:
                watched.last_line[name] = last

    def watching(self, container_id: ContainerId) -> bool:
        """Whether the container's logs or probe are watched (it may have findings)."""
        return container_id in self._watched

    def findings(self, snapshot: ContainerSnapshot) -> list[Finding]:
        """The log_match and probe_failed findings for one running container."""
        watched = self._watched.get(snapshot.ref.id)
        if watched is None or snapshot.state is not State.RUNNING:
            return []
        now = self._clock.now()
        found: list[Finding] = []
        for book in self._applicable(snapshot):
            rule = book.match.log
            if rule is not None:
                fresh = watched.hit_seen_at is not None and (
                    now - watched.hit_seen_at <= timedelta(seconds=rule.window)
                )
                finding = log_finding(
                    snapshot.ref,
                    rule,
                    hits=watched.hits.get(book.name, []) if fresh else [],
                    last_line=watched.last_line.get(book.name),
                    now=snapshot.observed_at,
                )
                if finding is not None:
                    found.append(finding)
            probe = book.match.probe
            if probe is not None and book.name in watched.failures:
                failures, detail = watched.failures[book.name]
                finding = probe_finding(
                    snapshot.ref, probe, failures=failures, detail=detail, now=snapshot.observed_at
                )
                if finding is not None:
                    found.append(finding)
        return found

    def probe_ok_since(self, container_id: ContainerId) -> datetime | None:
        """Since when every probe of the container passed (host time), if they do."""
        watched = self._watched.get(container_id)
        return watched.probe_ok_since if watched is not None else None

    def log_quiet_at(self, snapshot: ContainerSnapshot) -> datetime | None:
        """When the log window has gone by without a match (host time); None when no
        log rule applies to the container or medic has not read its log yet."""
        watched = self._watched.get(snapshot.ref.id)
        windows = [p.match.log.window for p in self._applicable(snapshot) if p.match.log]
        if watched is None or not windows or watched.log_failing:
            return None
        last = max(t for t in (watched.started_at, watched.hit_seen_at) if t is not None)
        return last + timedelta(seconds=max(windows))

    def reset(self, container_id: ContainerId) -> None:
        """medic acted on the container: what was read or probed before says nothing
        about after. The log is read on from now; probes must pass again."""
        watched = self._watched.get(container_id)
        if watched is None:
            return
        now = self._clock.now()
        self._watched[container_id] = _Watched(started_at=now, log_since=watched.log_since)

    def forget(self, container_id: ContainerId) -> None:
        self._watched.pop(container_id, None)
