"""The ``medic`` command. It builds the real adapters and hands them on; nothing else.

Errors a user can cause end in one line on stderr saying what was wrong and what
to do, and exit status 2; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType

from loguru import logger

from agent import __version__, cli_escalation, logs, present, wiring
from agent.clock import SYSTEM_CLOCK, utcnow
from agent.codec import format_duration
from agent.config import (
    Settings,
    unknown_variables,
)
from agent.doctor import run_checks
from agent.engine.docker_sdk import DockerSDKGateway
from agent.errors import ConfigError, MedicError, PlaybookErrors
from agent.escalate import providers
from agent.healing import actions
from agent.healing.playbooks import check_paths
from agent.http import StatusServer
from agent.model import (
    Decision,
    Escalate,
    Fix,
    Plan,
    Playbook,
    ReviewMark,
    Skip,
    Wait,
)
from agent.output import SafeStream, cell, dump_json, table
from agent.review import (
    DecisionRefused,
    approval_text,
    fix_diff,
    rebuild_service,
    rejection_text,
    resolved_text,
)
from agent.status import CycleReport
from agent.store import IncidentQuery

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medic",
        description="A self-healing supervisor for Docker Compose stacks.",
    )
    parser.add_argument("--version", action="version", version=f"medic {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="supervise and heal until stopped (the daemon)")
    run.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    run.add_argument("--project", help="compose project to supervise (MEDIC_PROJECT)")
    run.add_argument("--interval", type=float, help="seconds between polls (MEDIC_INTERVAL)")
    run.add_argument("--playbooks", type=Path, help="playbook file or folder (MEDIC_PLAYBOOKS)")

    once = commands.add_parser("once", help="run one cycle and print what was found and done")
    once.add_argument("--dry-run", action="store_true", help="decide, but take no action")
    once.add_argument("--json", action="store_true", help="one JSON document on stdout")
    once.add_argument("--project", help="compose project to supervise (MEDIC_PROJECT)")
    once.add_argument("--playbooks", type=Path, help="playbook file or folder (MEDIC_PLAYBOOKS)")

    books = commands.add_parser("playbooks", help="work with playbooks")
    books_commands = books.add_subparsers(dest="playbooks_command", required=True, metavar="ACTION")
    validate = books_commands.add_parser(
        "validate", help="check playbook files, report every error"
    )
    validate.add_argument(
        "paths", nargs="*", type=Path, help="files or folders (default: MEDIC_PLAYBOOKS)"
    )
    validate.add_argument("--json", action="store_true", help="one JSON document on stdout")

    db = commands.add_parser("db", help="work with the incident database (MEDIC_DATABASE_URL)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("migrate", help="create or update the incident tables")

    incidents = commands.add_parser(
        "incidents", help="list incidents (active ones unless --all); show or resolve one"
    )
    which = incidents.add_mutually_exclusive_group()
    which.add_argument(
        "--open", action="store_true", help="only open, healing and escalated ones (default)"
    )
    which.add_argument("--all", action="store_true", help="resolved ones too")
    incidents.add_argument("--service", help="only this compose service")
    incidents.add_argument(
        "--since", type=_since, help="only those opened since: 1h, 2d, or 2024-05-01T12:00"
    )
    incidents.add_argument("--json", action="store_true", help="one JSON document on stdout")
    incident_commands = incidents.add_subparsers(dest="incidents_command", metavar="ACTION")
    show = incident_commands.add_parser(
        "show", help="one incident's timeline of findings and attempts"
    )
    show.add_argument("id", help="incident id, or a unique prefix of it")
    show.add_argument("--json", action="store_true", help="one JSON document on stdout")
    resolve = incident_commands.add_parser(
        "resolve", help="close an incident by hand; automatic healing of its container resumes"
    )
    resolve.add_argument("id", help="incident id, or a unique prefix of it")
    resolve.add_argument("--note", required=True, help="what was done, for the record")
    resolve.add_argument("--by", help="who resolves (default: the OS user)")

    cli_escalation.add_commands(commands)

    status = commands.add_parser(
        "status", help="the stack at a glance: containers, health, incidents, backoff, circuit"
    )
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.add_argument(
        "--url",
        help="where medic run answers (default http://127.0.0.1:MEDIC_HTTP_PORT)",
    )
    doctor = commands.add_parser("doctor", help="check what medic needs, and say what to fix")
    doctor.add_argument("--json", action="store_true", help="one JSON document on stdout")
    doctor.add_argument(
        "--llm", action="store_true", help="also ask the model one tiny question (costs tokens)"
    )
    return parser


def _since(text: str) -> datetime:
    """``--since``: a duration back from now, or an ISO date or time (UTC unless it says)."""
    try:
        when = present.parse_since(text, now=utcnow())
    except present.QueryError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if when is None:
        raise argparse.ArgumentTypeError("leave --since out to list incidents of any age")
    return when


def main(argv: Sequence[str] | None = None) -> int:
    # Text from containers and models is shown, never obeyed: whatever the commands
    # print for people goes through safe_text (agent/output.py).
    stdout = sys.stdout
    sys.stdout = SafeStream(stdout)
    try:
        return _main(argv)
    finally:
        sys.stdout.flush()
        sys.stdout = stdout


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    debug: bool = args.debug
    try:
        settings = Settings.from_env(
            project=getattr(args, "project", None),
            log_level="DEBUG" if debug else None,
            healing={
                "dry_run": True if getattr(args, "dry_run", False) else None,
                "interval": getattr(args, "interval", None),
                "playbooks": getattr(args, "playbooks", None),
            },
        )
        logs.configure(level=settings.log_level, fmt=settings.log_format)
        if args.command == "run":
            return cmd_run(settings)
        if args.command == "once":
            return cmd_once(settings, as_json=args.json)
        if args.command == "playbooks":
            return cmd_validate(args.paths or [settings.healing.playbooks], as_json=args.json)
        if args.command == "db":
            return cmd_migrate(settings)
        if args.command == "incidents":
            if args.incidents_command == "show":
                return cmd_show(settings, args.id, as_json=args.json)
            if args.incidents_command == "resolve":
                return cmd_resolve(settings, args.id, note=args.note, by=args.by)
            query = IncidentQuery(active_only=not args.all, service=args.service, since=args.since)
            return cmd_incidents(settings, query, as_json=args.json)
        if args.command == "diagnose":
            return cmd_diagnose(settings, args.id, as_json=args.json, use_llm=not args.no_llm)
        if args.command == "fixes":
            return cmd_fixes(settings, args)
        if args.command == "status":
            url = args.url or f"http://127.0.0.1:{settings.http.port or 8080}"
            return cmd_status(url, as_json=args.json)
        if args.command == "doctor":
            return cmd_doctor(settings, as_json=args.json, ask_llm=args.llm)
    except PlaybookErrors as e:
        _fail(f"medic will not start: {_first_of(e)}", debug=debug, error=e)
        return EXIT_USAGE
    except MedicError as e:
        # DockerError, ConfigError and the rest: their messages say what to check.
        _fail(f"medic: {e}", debug=debug, error=e)
        return EXIT_USAGE
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def _first_of(errors: PlaybookErrors) -> str:
    """The first playbook error, and how many more there are, on one line."""
    first, *rest = errors.errors
    if not rest:
        return str(first)
    return f"{first} (and {len(rest)} more; medic playbooks validate {first.file} lists them all)"


def _fail(message: str, *, debug: bool, error: BaseException) -> None:
    """Print ``message`` as the one line a user sees, finished with a period.

    Error messages carry no final period, so that they read well inside other
    sentences (see agent/errors.py); this is where one stands alone.
    """
    if debug:
        logger.opt(exception=error).debug("Traceback follows.")
    print(sentence(message), file=sys.stderr)


def sentence(text: str) -> str:
    """``text`` ending in one full stop, whether or not it already had one."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def cmd_run(settings: Settings) -> int:
    supervisor, gateway, store, worker = wiring.supervisor(settings, diagnose=True)
    for line in unknown_variables(settings.extra):
        logger.warning(line)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        supervisor.stop(f"Signal {signal.Signals(signum).name} received")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = None
    close_console: Callable[[], None] | None = None
    if settings.http.ui_token and not settings.http.port:
        logger.warning(
            "MEDIC_UI_TOKEN is set but MEDIC_HTTP_PORT is 0, so the review console is off; "
            "set MEDIC_HTTP_PORT to a port to serve it."
        )
    if settings.http.port:
        console = None
        if settings.http.ui_token:
            console, close_console = wiring.console(settings, store=store, gateway=gateway)
        try:
            server = StatusServer(
                health=supervisor.health,
                ready=lambda: wiring.readiness(store, supervisor),
                registry=supervisor.metrics.registry,
                status=supervisor.status_document,
                console=console,
                port=settings.http.port,
            )
        except OSError as e:
            if worker is not None:
                worker.close(0)
            if close_console is not None:
                close_console()
            store.close()
            gateway.close()
            raise ConfigError(
                f"cannot serve /healthz on port {settings.http.port} ({e.strerror}); "
                "set MEDIC_HTTP_PORT to a free port, or 0 for none."
            ) from e
        server.start()
    try:
        supervisor.run()
    finally:
        if server is not None:
            server.stop()
        if close_console is not None:
            close_console()
        if worker is not None:
            # Within the stop timeout, or recorded as abandoned; its notices go out below.
            worker.close(settings.healing.stop_timeout)
        supervisor.close_notifier()
        gateway.close()
        store.close()
    return EXIT_OK


def cmd_status(url: str, *, as_json: bool) -> int:
    """What the running daemon knows: it alone holds backoff and circuit state."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=5) as response:
            document = json.loads(response.read())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"medic run does not answer at {url} ({e}). Run this inside medic's container "
            "(docker compose exec medic medic status), or pass --url."
        ) from e
    if as_json:
        dump_json(document)
        return EXIT_OK
    role = leadership_text(document.get("leadership"))
    if role:
        print(role)
        print()
    rows = []
    for c in document["containers"]:
        incidents = ", ".join(f"{i['id'][:8]} {i['signal']}" for i in c["incidents"]) or "-"
        if c["stopped_by_person"]:
            note = "stopped by a person"
        elif c["action_in_flight"]:
            note = "healing now"
        elif c["circuit"] == "open":
            note = "escalated: healing paused"
        elif c["next_look_at"]:
            note = f"next look {c['next_look_at'][11:19]}"
        else:
            note = "-"
        rows.append(
            (
                c["container"],
                c["service"],
                c["state"],
                c["health"],
                incidents,
                c["attempts_in_streak"],
                note,
            )
        )
    table(["container", "service", "state", "health", "incidents", "attempts", "note"], rows)
    return EXIT_OK


def leadership_text(leadership: object) -> str | None:
    """One sentence on whether the medic that answered leads its scope, since when."""
    if not isinstance(leadership, dict):
        return None  # a medic from before leases
    scope, since = leadership.get("scope") or "its scope", str(leadership.get("since") or "?")
    when = f"{since[:10]} {since[11:19]}" if len(since) >= 19 else since
    if leadership.get("role") == "leader":
        if leadership.get("election") == "lease":
            how = f"lease term {leadership.get('term')}, holder {leadership.get('holder')}"
        else:
            how = "the only medic: no lease decides"
        return f"This medic leads {scope} since {when} ({how})."
    leader = leadership.get("leader")
    who = f"{leader} leads it" if leader else "no medic is known to lead it"
    return (
        f"This medic stands by for {scope} since {when} (holder {leadership.get('holder')}); "
        f"{who}. It observes and does nothing until it takes the lease."
    )


def cmd_doctor(settings: Settings, *, as_json: bool, ask_llm: bool = False) -> int:
    def connect() -> DockerSDKGateway:
        return DockerSDKGateway.from_env(retry_attempts=1)

    def probe_database(url: str) -> str:
        from agent.store.postgres import PostgresStore

        store = PostgresStore(url, migrate=False)
        try:
            return store.describe()
        finally:
            store.close()

    def ask(found: providers.Endpoint) -> str:
        return providers.ask(found, timeout=min(settings.llm.timeout, 30.0))

    results = run_checks(
        os.environ,
        project=settings.project,
        stack=settings.stack,
        playbooks=settings.healing.playbooks,
        connect=connect,
        probe_database=probe_database,
        ask_llm=ask if ask_llm else None,
        llm=settings.llm,
    )
    broken = [r for r in results if not r.ok]
    if as_json:
        dump_json(
            {
                "ok": not broken,
                "checks": [
                    {"name": r.name, "ok": r.ok, "detail": r.detail, "fix": r.fix or None}
                    for r in results
                ],
            }
        )
    else:
        table(
            ["check", "ok", "detail", "what to do"],
            [(r.name, r.ok, r.detail, "" if r.ok and not r.optional else r.fix) for r in results],
            max_width=100,
        )
        if broken:
            print(f"\n{len(broken)} check(s) failed; fix them and run medic doctor again.")
    return EXIT_FAILED if broken else EXIT_OK


def cmd_once(settings: Settings, *, as_json: bool) -> int:
    supervisor, gateway, store, _ = wiring.supervisor(settings)
    try:
        report = supervisor.run_once()
        leadership = supervisor.leadership()
    finally:
        supervisor.close_leadership()
        gateway.close()
        store.close()
    if as_json:
        document = report_document(report, dry_run=settings.healing.dry_run)
        dump_json({**document, "leadership": leadership})
    else:
        if leadership["role"] == "standby":
            # Another medic leads the scope: this cycle only looked.
            print(leadership_text(leadership))
            print()
        print_report(report, dry_run=settings.healing.dry_run)
    if report.error:
        return EXIT_FAILED
    failed = any(not r.ok for _, _, results in report.results for r in results)
    return EXIT_FAILED if failed else EXIT_OK


def describe_decision(decision: Decision) -> tuple[str, str, str]:
    """(what, playbook, detail) for one decision, in the words the logs use."""
    if isinstance(decision, Plan):
        steps = ", then ".join(actions.describe(a) for a in decision.actions)
        return ("act", decision.playbook.name, f"attempt {decision.attempt}: {steps}")
    if isinstance(decision, Wait):
        return ("wait", decision.playbook.name, decision.reason)
    if isinstance(decision, Escalate):
        return ("escalate", decision.playbook.name, decision.reason)
    assert isinstance(decision, Skip)
    return ("skip", "-", decision.reason)


def report_document(report: CycleReport, *, dry_run: bool) -> dict[str, object]:
    return {
        "started_at": report.started_at,
        "dry_run": dry_run,
        "containers": report.containers,
        "error": report.error,
        "findings": [
            {
                "container": f.container.name,
                "container_id": f.container.id,
                "service": f.container.service,
                "signal": str(f.signal),
                "summary": f.summary,
                "evidence": dict(f.evidence),
            }
            for f in report.findings
        ],
        "decisions": [
            {
                "container": d.finding.container.name,
                "signal": str(d.finding.signal),
                **dict(zip(("decision", "playbook", "detail"), describe_decision(d), strict=True)),
            }
            for d in report.decisions
        ],
        "results": [
            {
                "container": ref.name,
                "playbook": plan.playbook.name,
                "action": actions.describe(r.action),
                "ok": r.ok,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "duration_seconds": round(r.duration, 3),
                "error": r.error,
                "output": r.output,
            }
            for ref, plan, results in report.results
            for r in results
        ],
    }


def print_report(report: CycleReport, *, dry_run: bool) -> None:
    if report.error:
        print(f"The cycle failed: {report.error}")
        return
    print(f"Looked at {report.containers} container(s); {len(report.findings)} finding(s).")
    if report.findings:
        print()
        table(
            ["container", "signal", "finding"],
            [(f.container.name, f.signal, f.summary) for f in report.findings],
        )
    if report.decisions:
        print()
        table(
            ["container", "decision", "playbook", "detail"],
            [(d.finding.container.name, *describe_decision(d)) for d in report.decisions],
        )
    if dry_run:
        if report.decisions:
            print("\nDry run: nothing was done.")
        return
    if report.results:
        print()
        table(
            ["container", "action", "ok", "took", "error"],
            [
                (ref.name, actions.describe(r.action), r.ok, format_duration(r.duration), r.error)
                for ref, _, results in report.results
                for r in results
            ],
        )


def cmd_validate(paths: Sequence[Path], *, as_json: bool) -> int:
    playbooks, errors = check_paths(paths)
    if as_json:
        dump_json(
            {
                "valid": not errors,
                "playbooks": [_playbook_summary(p) for p in playbooks],
                "errors": [
                    {"file": e.file, "line": e.line, "field": e.field, "message": e.reason}
                    for e in errors
                ],
            }
        )
        return EXIT_FAILED if errors else EXIT_OK
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        count = len(errors)
        print(
            f"{count} error{'s' if count != 1 else ''} found; fix them and validate again.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    table(
        ["playbook", "signals", "actions", "source"],
        [
            (
                p.name,
                ", ".join(sorted(p.match.signals)),
                ", then ".join(actions.describe(a) for a in p.actions),
                f"{p.source}:{p.line}" if p.line else p.source,
            )
            for p in playbooks
        ],
    )
    return EXIT_OK


def _playbook_summary(playbook: Playbook) -> dict[str, object]:
    return {
        "name": playbook.name,
        "signals": sorted(playbook.match.signals),
        "services": sorted(playbook.match.services),
        "actions": [actions.describe(a) for a in playbook.actions],
        "source": playbook.source,
        "line": playbook.line,
    }


def cmd_migrate(settings: Settings) -> int:
    from agent.store.postgres import run_migrations

    with wiring.database(settings.store) as store:
        assert settings.store.database_url is not None
        applied = run_migrations(settings.store.database_url)
    if applied:
        print(f"Applied {len(applied)} migration(s) to {store.where}: {', '.join(applied)}.")
    else:
        print(f"The incident tables at {store.where} are up to date.")
    return EXIT_OK


def cmd_incidents(settings: Settings, query: IncidentQuery, *, as_json: bool) -> int:
    with wiring.database(settings.store) as store:
        incidents = store.list_incidents(query)
        marks = store.review_marks([i.id for i in incidents])
    now = utcnow()
    if as_json:
        dump_json(present.incident_list(incidents, now=now, marks=marks))
        return EXIT_OK
    if not incidents:
        which = "incidents" if not query.active_only else "active incidents"
        print(f"No {which}{' of service ' + query.service if query.service else ''}.")
        return EXIT_OK
    table(
        [
            "id",
            "scope",
            "service",
            "signal",
            "status",
            "opened",
            "duration",
            "attempts",
            "last action",
            "rule",
            "fix",
        ],
        [
            (
                i.id[:8],
                present.scope_cell(i.scope),
                i.container.service or i.container.name,
                i.signal,
                i.status,
                i.opened_at,
                present.duration_text(i, now=now),
                len(i.attempts),
                present.last_action_text(i),
                marks[i.id].rule_id if i.id in marks else None,
                _fix_cell(marks.get(i.id)),
            )
            for i in incidents
        ],
        max_width=60,
    )
    return EXIT_OK


def _fix_cell(mark: ReviewMark | None) -> str:
    if mark is None or mark.fix_id is None:
        return "-"
    return f"{mark.fix_id[:8]} {mark.fix_status}"


def cmd_show(settings: Settings, incident_id: str, *, as_json: bool) -> int:
    with wiring.database(settings.store) as store:
        incident = store.get(incident_id)
        diagnoses = store.diagnoses(incident.id)
        fixes = store.fixes_of_incident(incident.id)
        notifications = store.notifications(incident.id)
    now = utcnow()
    git = wiring.quiet_git(settings.fixes.repo)
    by_id = {d.id: d for d in diagnoses}

    def diff_of(fix: Fix) -> str | None:
        return fix_diff(git, fix, by_id.get(fix.diagnosis_id))

    if as_json:
        dump_json(
            present.incident_detail(
                incident,
                diagnoses=diagnoses,
                fixes=fixes,
                notifications=notifications,
                diff_of=diff_of,
                now=now,
            )
        )
        return EXIT_OK
    c = incident.container
    print(f"Incident {incident.id}")
    print(f"  {incident.summary}")
    print(f"  container  {c.name} ({c.short_id}), service {c.service or '-'}, project {c.project}")
    print(f"  signal     {incident.signal}")
    print(f"  scope      {incident.scope or '- (recorded before medics had scopes)'}")
    print(f"  status     {incident.status}" + (f": {incident.note}" if incident.note else ""))
    print(f"  opened     {cell(incident.opened_at)}")
    if incident.resolved_at is not None:
        print(f"  resolved   {cell(incident.resolved_at)}")
    print(f"  duration   {present.duration_text(incident, now=now)}")
    print()
    moments = present.timeline(
        incident, diagnoses=diagnoses, fixes=fixes, notifications=notifications
    )
    table(
        ["time", "event", "detail", "outcome"],
        [(m.at, m.event, m.detail, m.outcome) for m in moments],
        max_width=100,
    )
    cli_escalation.print_incident_extras(diagnoses, fixes, diff_of=diff_of)
    return EXIT_OK


def cmd_diagnose(settings: Settings, incident_id: str, *, as_json: bool, use_llm: bool) -> int:
    """Diagnose one incident of any status now, record it, make its fix, print it."""
    git = wiring.git_of(settings.fixes.repo)
    with wiring.database(settings.store) as store:
        gateway = DockerSDKGateway.from_env(retry_attempts=1)
        notifier = wiring.notifications(settings.notify, journal=store.record_notification)
        try:
            service, followup = wiring.escalation(
                settings.llm,
                settings.fixes,
                gateway=gateway,
                store=store,
                notifier=notifier,
                git=git,
                clock=SYSTEM_CLOCK,
            )
            result = service.diagnose(incident_id, use_llm=use_llm)
            assert result.incident is not None
            outcome = followup.finished(result, result.incident)
        finally:
            if notifier is not None:
                notifier.close()
            gateway.close()
    cli_escalation.print_diagnosis(outcome, as_json=as_json)
    return EXIT_OK


def cmd_fixes(settings: Settings, args: argparse.Namespace) -> int:
    """``medic fixes``: list, show, approve or reject."""
    action = args.fixes_command
    with wiring.database(settings.store) as store:
        if action is None:
            fixes = store.list_fixes(include_decided=args.all)
            cli_escalation.print_fixes(fixes, as_json=args.json, everything=args.all)
            return EXIT_OK
        if action == "show":
            fix = store.get_fix(args.id)
            diagnosis = next(
                (d for d in store.diagnoses(fix.incident_id) if d.id == fix.diagnosis_id), None
            )
            diff = fix_diff(wiring.quiet_git(settings.fixes.repo), fix, diagnosis)
            cli_escalation.print_fix(fix, diagnosis=diagnosis, diff=diff, as_json=args.json)
            return EXIT_OK
        reviewer = wiring.reviewer(settings, store)
        if action == "reject":
            fix = reviewer.reject(args.id, by=args.by, reason=args.reason)
            print(rejection_text(fix))
            return EXIT_OK
        approval = reviewer.approve(args.id, by=args.by)
        print(approval_text(approval))
        if not args.rebuild:
            return EXIT_OK
        incident = store.get(approval.fix.incident_id)
    gateway = DockerSDKGateway.from_env(retry_attempts=settings.docker.retry_attempts)
    try:
        rebuilt = rebuild_service(
            incident, gateway=gateway, stop_timeout=settings.healing.stop_timeout
        )
    finally:
        gateway.close()
    print(rebuilt.message, file=sys.stdout if rebuilt.ok else sys.stderr)
    return EXIT_OK if rebuilt.ok else EXIT_FAILED


def cmd_resolve(settings: Settings, incident_id: str, *, note: str, by: str | None) -> int:
    with wiring.database(settings.store) as store:
        reviewer = wiring.reviewer(settings, store)
        try:
            incident = reviewer.resolve(incident_id, by=by, note=note)
        except DecisionRefused as e:
            print(sentence(str(e)[:1].upper() + str(e)[1:]), file=sys.stderr)
            return EXIT_FAILED
    print(resolved_text(incident))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
