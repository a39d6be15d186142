"""How often medic's rules name the right cause, on failures captured from real programs.

Every fixture in tests/fixtures/escalate is a failure captured on a real engine
(tests/fixtures/escalate/capture.py): postgres, nginx, redis, Node and Python apps,
a binary for another CPU and more, each labelled with the rule that names its cause.
The rules run over each, as medic runs them; per rule this prints how often it was
right, wrong (it answered for another cause) and silent (no rule answered), the
confidence it gave, the ceiling its record allows (``high`` only when never wrong) and
the overall accuracy. The figures are written to docs/escalation.md between markers.

Usage: ``.venv/bin/python bench/diagnosis_eval.py [--no-docs]``. Needs no engine.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from docs_block import write_block  # noqa: E402
from escalate_support import case_from_fixture, fixture_names, load_fixture  # noqa: E402

from agent.escalate.calibrate import Evaluation, ceilings, evaluate  # noqa: E402
from agent.escalate.rules import CEILING  # noqa: E402
from agent.model import Confidence  # noqa: E402

DOCS = ROOT / "docs" / "escalation.md"
BEGIN = "<!-- diagnosis-eval:begin -->"
END = "<!-- diagnosis-eval:end -->"
LEVELS = (Confidence.HIGH, Confidence.MEDIUM, Confidence.LOW)


def run() -> Evaluation:
    return evaluate(
        (name, str(load_fixture(name)["expect"]), case_from_fixture(name))
        for name in fixture_names()
    )


def said(counts: dict[Confidence, int]) -> str:
    return " / ".join(str(counts.get(level, 0)) for level in LEVELS)


def table(evaluation: Evaluation) -> list[str]:
    implied = ceilings(evaluation)
    lines = [
        "| rule | failures | right | wrong | silent | missed | said high / medium / low "
        "| ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rule_id, f in sorted(evaluation.figures.items()):
        if not f.cases and not f.said:
            continue
        ceiling = "-" if rule_id == "unknown" else str(implied[rule_id])
        lines.append(
            f"| `{rule_id}` | {f.cases} | {f.right} | {f.wrong} | {f.silent} | {f.missed} "
            f"| {said(f.said)} | {ceiling} |"
        )
    return lines


def summary(evaluation: Evaluation) -> list[str]:
    n = len(evaluation.outcomes)
    lines = [
        f"{evaluation.right} of {n} failures named right ({evaluation.accuracy * 100:.0f} %); "
        f"{len(evaluation.wrong)} wrong ({len(evaluation.wrong_at(Confidence.HIGH))} of them "
        f"at high confidence); {len(evaluation.silent)} silent (`unknown`).",
    ]
    for o in evaluation.wrong:
        lines.append(
            f"- wrong: `{o.name}` is `{o.expected}`, the rules said `{o.given.rule_id}` "
            f"({o.given.confidence})."
        )
    for o in evaluation.silent:
        lines.append(f"- silent: `{o.name}` is `{o.expected}`.")
    return lines


def write_docs(evaluation: Evaluation) -> str:
    block = "\n".join(
        [
            BEGIN,
            f"Measured {datetime.now(UTC):%Y-%m-%d} with `bench/diagnosis_eval.py` over the "
            f"{len(evaluation.outcomes)} failures in tests/fixtures/escalate.",
            "",
            *table(evaluation),
            "",
            *summary(evaluation),
            END,
        ]
    )
    write_block(DOCS, block, BEGIN, END)
    return block


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args(argv)
    evaluation = run()
    print("\n".join(table(evaluation)))
    print()
    print("\n".join(summary(evaluation)))
    stale = {
        rule_id: (str(CEILING.get(rule_id)), str(level))
        for rule_id, level in ceilings(evaluation).items()
        if CEILING.get(rule_id) is not level
    }
    if stale:
        print(f"\nrules.CEILING differs from what these figures allow: {stale}")
    if not args.no_docs:
        write_docs(evaluation)
        print(f"\nwritten to {DOCS.relative_to(ROOT)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
