"""log_match and probe_failed: rules in playbooks, findings, probes, and the loop."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from factories import REF, at, supervisor_on
from fakes import FakeDocker

from agent.errors import PlaybookErrors
from agent.healing.playbooks import load_playbooks
from agent.healing.signals import (
    ProbeOutcome,
    Prober,
    SocketProber,
    log_finding,
    log_hits,
    probe_finding,
)
from agent.model import Action, LogRule, Match, Playbook, ProbeKind, ProbeRule, Signal
from agent.supervisor import Supervisor

LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.service": "db"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "book.yml"
    path.write_text(text)
    return path


def test_log_and_probe_rules_are_read_from_match(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
playbooks:
  - name: db-slots
    match:
      signals: [log_match]
      services: [db]
      log: {pattern: "remaining connection slots", count: 3, window: 2m}
    actions: [restart]
  - name: web-port
    match:
      signals: [probe_failed]
      probe: {http: 8080, path: /healthz, timeout: 1s, failures: 2}
    actions: [restart]
  - name: db-port
    match:
      signals: [probe_failed]
      probe: {tcp: 5432}
    actions: [restart]
""",
    )
    slots, web, db = load_playbooks(path)
    assert slots.match.log == LogRule("remaining connection slots", count=3, window=120)
    assert web.match.probe == ProbeRule(ProbeKind.HTTP, 8080, "/healthz", timeout=1, failures=2)
    assert db.match.probe == ProbeRule(ProbeKind.TCP, 5432)


@pytest.mark.parametrize(
    ("rule", "line", "field", "says"),
    [
        ("log: {pattern: '(unclosed'}", 4, "playbooks[0].match.log.pattern", "not a regular"),
        ("log: {count: 3}", 4, "playbooks[0].match.log.pattern", "pattern"),
        ("probe: {http: 8080, tcp: 80}", 4, "playbooks[0].match.probe", "exactly one"),
        ("probe: {tcp: 70000}", 4, "playbooks[0].match.probe.tcp", "not a port"),
        ("probe: {tcp: 80, path: /x}", 4, "playbooks[0].match.probe.path", "http probes only"),
        ("probe: {http: 80, path: x}", 4, "playbooks[0].match.probe.path", "from /"),
        ("probe: {http: 80, retries: 3}", 4, "playbooks[0].match.probe.retries", "unknown key"),
    ],
)
def test_bad_rules_name_file_line_and_field(
    tmp_path: Path, rule: str, line: int, field: str, says: str
) -> None:
    signal = "log_match" if rule.startswith("log") else "probe_failed"
    path = write(
        tmp_path,
        f"playbooks:\n  - name: x\n    match:\n      {rule}\n      signals: [{signal}]\n"
        "    actions: [restart]\n",
    )
    with pytest.raises(PlaybookErrors) as raised:
        load_playbooks(path)
    [error] = raised.value.errors
    assert (error.line, error.field) == (line, field)
    assert says in error.reason


def test_a_rule_without_its_signal_would_never_fire_and_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "playbooks:\n  - name: x\n    match:\n      signals: [unhealthy]\n"
        "      log: {pattern: oops}\n    actions: [restart]\n",
    )
    with pytest.raises(PlaybookErrors, match="a log rule needs log_match in signals"):
        load_playbooks(path)


def test_log_matches_are_counted_within_the_window() -> None:
    rule = LogRule("slots? are reserved", count=3, window=60)
    lines = [(at(-90), "slots are reserved"), (at(-30), "ok"), (at(-20), "slot are reserved")]
    hits, last = log_hits(rule, lines, earlier=[at(-10)], now=at(0))
    assert hits == [at(-10), at(-20)]
    assert last == "slot are reserved"
    assert log_finding(REF, rule, hits=hits, last_line=last, now=at(0)) is None
    hits.append(at(-1))
    found = log_finding(REF, rule, hits=hits, last_line=last, now=at(0))
    assert found is not None
    assert found.signal is Signal.LOG_MATCH
    assert found.evidence["matches"] == 3
    assert found.evidence["last_line"] == "slot are reserved"


def test_probe_failures_in_a_row_make_a_finding() -> None:
    rule = ProbeRule(ProbeKind.TCP, 5432, failures=3)
    assert probe_finding(REF, rule, failures=2, detail="refused", now=at(0)) is None
    found = probe_finding(REF, rule, failures=3, detail="refused", now=at(0))
    assert found is not None
    assert found.summary.endswith("failed 3 TCP connect :5432 probes in a row: refused.")


@pytest.fixture
def http_server() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_the_socket_prober_speaks_http_and_tcp(http_server: int) -> None:
    prober = SocketProber()
    ok, bad = prober.probe_all(
        [
            (ProbeRule(ProbeKind.HTTP, http_server, "/ok"), "127.0.0.1"),
            (ProbeRule(ProbeKind.HTTP, http_server, "/broken"), "127.0.0.1"),
        ]
    )
    assert ok.ok
    assert not bad.ok and "503" in bad.detail
    assert prober.probe(ProbeRule(ProbeKind.TCP, http_server), "127.0.0.1").ok
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    refused = prober.probe(ProbeRule(ProbeKind.TCP, free, timeout=1), "127.0.0.1")
    assert not refused.ok


class ScriptedProber(Prober):
    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = outcomes
        self.addresses: list[str] = []

    def probe(self, rule: ProbeRule, address: str) -> ProbeOutcome:
        self.addresses.append(address)
        ok = self.outcomes.pop(0) if self.outcomes else True
        return ProbeOutcome(ok, "answered" if ok else "connection refused")


def supervisor(fake: FakeDocker, book: Playbook, prober: Prober | None = None) -> Supervisor:
    return supervisor_on(fake, [book], prober=prober)


def test_log_lines_since_the_last_look_lead_to_a_restart() -> None:
    fake = FakeDocker()
    db = fake.add("shop-db-1", LABELS)
    rule = LogRule("remaining connection slots", count=2, window=120)
    book = Playbook(
        "db-slots",
        Match(frozenset({Signal.LOG_MATCH}), services=frozenset({"db"}), log=rule),
        (Action("restart"),),
    )
    medic = supervisor(fake, book)
    fake.write_log(db, "FATAL: remaining connection slots are reserved")
    assert medic.run_once().results == []
    fake.write_log(db, "FATAL: remaining connection slots are reserved")
    report = medic.run_once()
    assert [f.signal for f in report.findings] == [Signal.LOG_MATCH]
    assert [r.action.kind for _, _, rs in report.results for r in rs] == ["restart"]
    assert fake.requests.count("logs") == 2
    # After the restart the count starts over: the old lines do not fire again.
    assert medic.run_once().findings == []


def test_containers_no_log_or_probe_rule_applies_to_cost_nothing_extra() -> None:
    fake = FakeDocker()
    fake.add("shop-web-1", {**LABELS, "com.docker.compose.service": "web"})
    rule = LogRule("oops")
    book = Playbook(
        "db-only",
        Match(frozenset({Signal.LOG_MATCH}), services=frozenset({"db"}), log=rule),
        (Action("restart"),),
    )
    prober = ScriptedProber([])
    supervisor(fake, book, prober).run_once()
    assert fake.requests == ["list"]
    assert prober.addresses == []


def test_failed_probes_in_a_row_lead_to_a_restart_and_a_success_resets_the_count() -> None:
    fake = FakeDocker()
    fake.add("shop-db-1", LABELS)
    rule = ProbeRule(ProbeKind.TCP, 5432, failures=2)
    book = Playbook(
        "db-port",
        Match(frozenset({Signal.PROBE_FAILED}), probe=rule),
        (Action("restart"),),
    )
    prober = ScriptedProber([False, True, False, False])
    medic = supervisor(fake, book, prober)
    for _ in range(3):
        assert medic.run_once().results == []
    report = medic.run_once()
    [finding] = report.findings
    assert finding.signal is Signal.PROBE_FAILED
    assert finding.evidence["last_error"] == "connection refused"
    assert [r.action.kind for _, _, rs in report.results for r in rs] == ["restart"]
    assert prober.addresses == ["172.30.0.2"] * 4
