"""The ``medic`` command. It builds the real adapters and hands them on; nothing else.

Errors a user can cause end in one line on stderr saying what was wrong and what
to do, and exit status 2; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from loguru import logger

from agent import __version__, logs
from agent.config import Settings
from agent.docker_gateway import DockerSDKGateway
from agent.errors import ConfigError, DockerError, MedicError, PlaybookErrors
from agent.model import Decision, Escalate, Plan, Playbook, Skip, Wait
from agent.observe import own_container_id, resolve_scope
from agent.output import dump_json, table
from agent.playbooks import check_paths, load_playbooks
from agent.store import MemoryStore
from agent.supervisor import CycleReport, Supervisor

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug: bool = args.debug
    try:
        settings = Settings.from_env(
            dry_run=True if getattr(args, "dry_run", False) else None,
            project=getattr(args, "project", None),
            interval=getattr(args, "interval", None),
            playbooks=getattr(args, "playbooks", None),
            log_level="DEBUG" if debug else None,
        )
        logs.configure(level=settings.log_level, fmt=settings.log_format)
        if args.command == "run":
            return cmd_run(settings)
        if args.command == "once":
            return cmd_once(settings, as_json=args.json)
        if args.command == "playbooks":
            return cmd_validate(args.paths or [settings.playbooks], as_json=args.json)
    except PlaybookErrors as e:
        _fail(f"medic will not start: {e}", debug=debug, error=e)
        return EXIT_USAGE
    except DockerError as e:
        _fail(
            f"medic cannot use the Docker engine: {e} Mount the Docker socket into medic's "
            "container (/var/run/docker.sock) or set DOCKER_HOST.",
            debug=debug,
            error=e,
        )
        return EXIT_USAGE
    except (ConfigError, MedicError) as e:
        _fail(f"medic: {e}", debug=debug, error=e)
        return EXIT_USAGE
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def _fail(message: str, *, debug: bool, error: BaseException) -> None:
    if debug:
        logger.opt(exception=error).debug("Traceback follows.")
    print(message, file=sys.stderr)


def _supervisor(settings: Settings) -> tuple[Supervisor, DockerSDKGateway]:
    playbooks = load_playbooks(settings.playbooks)
    gateway = DockerSDKGateway.from_env(
        pool_size=settings.workers + 4,
        retry_attempts=settings.docker_retry_attempts,
        retry_max_delay=settings.docker_retry_max_delay,
    )
    gateway.ping()
    scope = resolve_scope(settings.project, gateway, own_id=own_container_id())
    supervisor = Supervisor(
        settings=settings,
        gateway=gateway,
        store=MemoryStore(),
        playbooks=playbooks,
        scope=scope,
    )
    logger.debug("Loaded {} playbooks from {}.", len(playbooks), settings.playbooks)
    return supervisor, gateway


def cmd_run(settings: Settings) -> int:
    supervisor, gateway = _supervisor(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        supervisor.stop(f"Signal {signal.Signals(signum).name} received")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.run()
    finally:
        gateway.close()
    return EXIT_OK


def cmd_once(settings: Settings, *, as_json: bool) -> int:
    supervisor, gateway = _supervisor(settings)
    try:
        report = supervisor.run_once()
    finally:
        gateway.close()
    if as_json:
        dump_json(report_document(report, dry_run=settings.dry_run))
    else:
        print_report(report, dry_run=settings.dry_run)
    if report.error:
        return EXIT_FAILED
    failed = any(not r.ok for _, _, results in report.results for r in results)
    return EXIT_FAILED if failed else EXIT_OK


def describe_decision(decision: Decision) -> tuple[str, str, str]:
    """(what, playbook, detail) for one decision, in the words the logs use."""
    if isinstance(decision, Plan):
        steps = ", then ".join(a.describe() for a in decision.actions)
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
                "decision": describe_decision(d)[0],
                "playbook": describe_decision(d)[1],
                "detail": describe_decision(d)[2],
            }
            for d in report.decisions
        ],
        "results": [
            {
                "container": ref.name,
                "playbook": plan.playbook.name,
                "action": r.action.describe(),
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
            ["container", "action", "ok", "seconds", "error"],
            [
                (ref.name, r.action.describe(), r.ok, r.duration, r.error)
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
                ", then ".join(a.describe() for a in p.actions),
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
        "actions": [a.describe() for a in playbook.actions],
        "source": playbook.source,
        "line": playbook.line,
    }


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
