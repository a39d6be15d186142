"""The bodies of ``medic diagnose``, ``medic fixes`` and the diagnoses and fixes part of
``medic incidents show``: their arguments and what they print for people. The JSON
documents come from agent/present.py, the decisions from agent/review.py, and
``agent/cli.py`` builds the adapters and hands them in.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from agent import present
from agent.escalate.document import diagnose_document, render_text
from agent.escalate.followup import Outcome
from agent.escalate.worker import DiagnosisResult
from agent.fixes.document import (
    TABLE_HEADERS,
    fix_row,
    healing_sentence,
    show_text,
)
from agent.model import (
    Diagnosis,
    Fix,
    FixStatus,
)
from agent.output import dump_json, table

#: The diff of a fix, or None when git cannot give it (the branch was deleted).
DiffOf = Callable[[Fix], str | None]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``medic diagnose`` and ``medic fixes``."""
    diagnose = commands.add_parser(
        "diagnose", help="diagnose one incident now (rules, then the model), record and print it"
    )
    diagnose.add_argument("id", help="incident id, or a unique prefix of it")
    diagnose.add_argument("--json", action="store_true", help="one JSON document on stdout")
    diagnose.add_argument(
        "--no-llm", action="store_true", help="the rules only, even with a model configured"
    )

    fixes = commands.add_parser(
        "fixes", help="fix branches awaiting a decision (every one with --all); review them"
    )
    fixes.add_argument("--all", action="store_true", help="decided and refused fixes too")
    fixes.add_argument("--json", action="store_true", help="one JSON document on stdout")
    fix_commands = fixes.add_subparsers(dest="fixes_command", metavar="ACTION")
    fix_show = fix_commands.add_parser("show", help="one fix: its diagnosis, verification and diff")
    fix_show.add_argument("id", help="fix id, or a unique prefix of it")
    fix_show.add_argument("--json", action="store_true", help="one JSON document on stdout")
    approve = fix_commands.add_parser(
        "approve", help="merge the fix branch into the branch it was made on"
    )
    approve.add_argument("id", help="fix id, or a unique prefix of it")
    approve.add_argument(
        "--rebuild",
        action="store_true",
        help="then rebuild the service's image and recreate its container",
    )
    approve.add_argument("--by", help="who approves (default: the OS user)")
    reject = fix_commands.add_parser("reject", help="delete the fix branch, keeping why")
    reject.add_argument("id", help="fix id, or a unique prefix of it")
    reject.add_argument("--reason", required=True, help="why the fix is rejected")
    reject.add_argument("--by", help="who rejects (default: the OS user)")


def print_diagnosis(outcome: Outcome, *, as_json: bool) -> None:
    """``medic diagnose``: the documented object, or the text and what became of the edits."""
    if as_json:
        dump_json(diagnose_document(outcome.result))
        return
    print(render_text(outcome.result), end="")
    llm = outcome.result.llm
    if outcome.fix is not None:
        print()
        print(fix_sentence(outcome.fix))
    elif llm is not None and llm.error is None and not llm.edits:
        print(f"\nNo fix branch: the model ({llm.model}) proposed no edits.")
    elif llm is None and outcome.result.error is None:
        print("\nNo fix branch: only medic's rules diagnosed it, and they propose no edits.")


def fix_sentence(fix: Fix) -> str:
    """What became of a diagnosis's edits, in a line or a few."""
    if fix.status is FixStatus.REFUSED:
        reasons = "\n".join(f"  - {r}" for r in fix.refusal_reasons)
        return f"No fix branch: the proposed edits were refused (fix {fix.id[:8]}):\n{reasons}"
    line = f"Fix {fix.id[:8]} is on branch {fix.branch}, changing {', '.join(fix.files)}."
    healing = healing_sentence(fix.verification)
    if healing is not None:
        line += f"\n{healing}"
    if fix.verification is not None and not fix.verification.ok:
        line += " Its verification failed; see medic fixes show."
    return f"{line}\nReview it with medic fixes show {fix.id[:8]}, then approve or reject it."


# --- medic incidents show ----------------------------------------------------------------


def diagnoses_text(diagnoses: Sequence[Diagnosis]) -> str:
    """Where the cause lies when another service holds it, the newest rule diagnosis and
    the model's side by side, the proposed edits as a diff, then older diagnoses one line
    each."""
    if not diagnoses:
        return "No diagnosis yet (medic diagnose ID makes one).\n"
    pair = present.diagnosis_pair(diagnoses)
    lines: list[str] = []
    cause = present.cause_of(pair)
    if pair.rule is None and cause is not None:
        # Without a rule diagnosis render_text is not used, so the cause is said here.
        lines += [cause.line, ""]
    older: Sequence[Diagnosis] = diagnoses
    if pair.rule is not None:
        llm = pair.llm
        result = DiagnosisResult(
            incident_id=pair.rule.incident_id,
            rule=pair.rule,
            llm=llm,
            reused_from=llm.reused_from if llm is not None else None,
            error=llm.error if llm is not None else None,
        )
        text = render_text(result)
        # render_text starts with the incident's id, which the page has said already.
        lines.append(text.split("\n", 2)[2].rstrip("\n"))
        older = pair.older
    if older:
        lines.append("")
        lines.append("Other diagnoses:")
        for d in older:
            what = d.error or d.summary
            lines.append(
                f"  {d.created_at:%Y-%m-%d %H:%M:%S} {d.source}"
                f"{' ' + d.model if d.model else ''} ({d.rule_id or '-'}): {what}"
            )
    return "\n".join(lines) + "\n"


# --- medic fixes -------------------------------------------------------------------------


def print_fixes(fixes: Sequence[Fix], *, as_json: bool, everything: bool) -> None:
    if as_json:
        dump_json(present.fix_list(fixes))
        return
    if not fixes:
        print("No fixes." if everything else "No fixes await a decision (--all lists every one).")
        return
    table(list(TABLE_HEADERS), [fix_row(f) for f in fixes], max_width=60)


def print_fix(fix: Fix, *, diagnosis: Diagnosis | None, diff: str | None, as_json: bool) -> None:
    if as_json:
        dump_json(present.fix_detail(fix, diagnosis=diagnosis, diff=diff))
        return
    print(show_text(fix, diagnosis=diagnosis, diff=diff), end="")


def print_incident_extras(
    diagnoses: Sequence[Diagnosis], fixes: Sequence[Fix], *, diff_of: DiffOf
) -> None:
    """Below an incident's timeline: its diagnoses, then each fix and its diff."""
    print()
    print("Diagnosis")
    print(diagnoses_text(diagnoses), end="")
    for fix in fixes:
        print()
        print(fix_sentence(fix))
        diff = diff_of(fix) if fix.status is not FixStatus.REFUSED else None
        if diff:
            print(diff.rstrip("\n"))
