"""Escalation: what medic does when healing keeps failing.

It gathers a bounded, redacted case file about the incident's container
(``casefile``, ``redact``), diagnoses it with built-in rules first (``rules``),
then, when an API key is set and the budgets allow (``budget``), asks Claude
with read-only repository tools (``claude``, the only module importing
``anthropic``). ``worker`` runs all of that off the healing path and records the
result; ``document`` shows it. See docs/escalation.md.
"""
