"""How right the rules are on failures whose cause is known, and what that allows them to say.

Pure: ``evaluate`` takes labelled case files (the failures captured from real programs
in tests/fixtures/escalate), runs the rules as they stand and as they would speak
uncapped, and counts per rule how often it was right, wrong and silent. ``ceilings``
turns those counts into the most each rule may say: ``high`` only for a rule that was
never wrong. bench/diagnosis_eval.py prints the figures and writes them to
docs/escalation.md; a unit test holds ``rules.CEILING`` to what they allow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.escalate.casefile import CaseFile
from agent.escalate.rules import RULE_IDS, RULES, RuleDiagnosis, capped, unknown
from agent.model import Confidence


@dataclass
class RuleFigures:
    """One rule's record over the labelled failures."""

    rule_id: str
    cases: int = 0
    """Failures whose cause is this rule's."""
    right: int = 0
    wrong: int = 0
    """Failures of another cause that this rule answered for."""
    silent: int = 0
    """Failures of this cause for which no rule answered (``unknown``)."""
    missed: int = 0
    """Failures of this cause that another rule answered for."""
    said: dict[Confidence, int] = field(default_factory=dict)
    """This rule's answers by the confidence it gave (after its ceiling)."""
    wrong_said: dict[Confidence, int] = field(default_factory=dict)
    """Its wrong answers by the confidence it gave (after its ceiling)."""


@dataclass(frozen=True)
class Outcome:
    """One labelled failure and what the rules said of it."""

    name: str
    expected: str
    raw: RuleDiagnosis
    """The first rule's answer before any ceiling: what calibration measures."""
    given: RuleDiagnosis
    """The answer as medic gives it."""

    @property
    def right(self) -> bool:
        return self.given.rule_id == self.expected


@dataclass(frozen=True)
class Evaluation:
    outcomes: tuple[Outcome, ...]
    figures: Mapping[str, RuleFigures]

    @property
    def right(self) -> int:
        return sum(1 for o in self.outcomes if o.right)

    @property
    def accuracy(self) -> float:
        return self.right / len(self.outcomes) if self.outcomes else 0.0

    @property
    def wrong(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.right and o.given.rule_id != "unknown")

    @property
    def silent(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.right and o.given.rule_id == "unknown")

    def wrong_at(self, confidence: Confidence) -> tuple[Outcome, ...]:
        return tuple(o for o in self.wrong if o.given.confidence is confidence)


def first_uncapped(case: CaseFile) -> RuleDiagnosis:
    """The answer of the first rule that applies, before its ceiling, or ``unknown``."""
    for rule in RULES:
        result = rule(case)
        if result is not None:
            return result
    return unknown(case)


def evaluate(labelled: Iterable[tuple[str, str, CaseFile]]) -> Evaluation:
    """Run the rules over ``(name, expected rule id, case file)`` triples and count."""
    figures = {rule_id: RuleFigures(rule_id) for rule_id in RULE_IDS}
    outcomes = []
    for name, expected, case in labelled:
        raw = first_uncapped(case)
        given = capped(raw)
        outcome = Outcome(name=name, expected=expected, raw=raw, given=given)
        outcomes.append(outcome)
        mine = figures.setdefault(expected, RuleFigures(expected))
        mine.cases += 1
        answered = figures.setdefault(given.rule_id, RuleFigures(given.rule_id))
        answered.said[given.confidence] = answered.said.get(given.confidence, 0) + 1
        if outcome.right:
            mine.right += 1
        elif given.rule_id == "unknown":
            mine.silent += 1
        else:
            mine.missed += 1
            answered.wrong += 1
            answered.wrong_said[given.confidence] = answered.wrong_said.get(given.confidence, 0) + 1
    return Evaluation(outcomes=tuple(outcomes), figures=figures)


def ceiling_of(figures: RuleFigures) -> Confidence:
    """``high`` for a rule right at least once and never wrong; ``medium`` for one wrong no
    more often than right; ``low`` for one wrong more often."""
    if figures.wrong == 0 and figures.right > 0:
        return Confidence.HIGH
    if figures.wrong <= figures.right:
        return Confidence.MEDIUM
    return Confidence.LOW


def ceilings(evaluation: Evaluation) -> dict[str, Confidence]:
    """The most each rule may say, from its figures (``unknown`` is always ``low``)."""
    return {
        rule_id: ceiling_of(f) for rule_id, f in evaluation.figures.items() if rule_id != "unknown"
    }
