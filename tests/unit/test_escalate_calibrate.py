"""The rules' record on the failures captured from real programs, and the ceilings it sets."""

from __future__ import annotations

from escalate_support import case_from_fixture, fixture_names, load_fixture

from agent.escalate.calibrate import Evaluation, RuleFigures, ceiling_of, ceilings, evaluate
from agent.escalate.rules import CEILING
from agent.model import Confidence


def fixtures() -> Evaluation:
    return evaluate(
        (name, str(load_fixture(name)["expect"]), case_from_fixture(name))
        for name in fixture_names()
    )


def test_no_failure_is_named_wrong_with_high_confidence() -> None:
    evaluation = fixtures()
    assert evaluation.wrong_at(Confidence.HIGH) == ()


def test_every_captured_failure_is_named_right() -> None:
    evaluation = fixtures()
    assert [(o.name, o.given.rule_id) for o in evaluation.outcomes if not o.right] == []


def test_the_ceilings_are_what_the_figures_allow() -> None:
    # A fixture that makes a rule wrong must lower its CEILING in rules.py, and the figures
    # in docs/escalation.md are made again with bench/diagnosis_eval.py.
    assert ceilings(fixtures()) == {k: v for k, v in CEILING.items() if k != "unknown"}


def test_a_rule_is_high_only_when_it_was_right_and_never_wrong() -> None:
    assert ceiling_of(RuleFigures("r", cases=3, right=3)) is Confidence.HIGH
    assert ceiling_of(RuleFigures("r", cases=3, right=3, wrong=1)) is Confidence.MEDIUM
    assert ceiling_of(RuleFigures("r")) is Confidence.MEDIUM  # never measured
    assert ceiling_of(RuleFigures("r", cases=2, right=1, wrong=2)) is Confidence.LOW


def test_wrong_silent_and_missed_are_counted_against_the_right_rule() -> None:
    oom = case_from_fixture("oom_killed")
    unknown = case_from_fixture("unknown")
    evaluation = evaluate(
        [
            ("a", "oom_killed", oom),  # right
            ("b", "disk_full", oom),  # oom_killed answered for a disk_full failure
            ("c", "disk_full", unknown),  # no rule answered
        ]
    )
    oom_figures, disk = evaluation.figures["oom_killed"], evaluation.figures["disk_full"]
    assert (oom_figures.right, oom_figures.wrong) == (1, 1)
    assert (disk.cases, disk.right, disk.missed, disk.silent) == (2, 0, 1, 1)
    assert oom_figures.wrong_said == {Confidence.HIGH: 1}
    assert [o.name for o in evaluation.wrong_at(Confidence.HIGH)] == ["b"]
    assert evaluation.accuracy == 1 / 3
    assert ceilings(evaluation)["oom_killed"] is Confidence.MEDIUM
