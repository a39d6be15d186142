"""Escalation: what medic does when healing keeps failing.

It gathers a bounded, redacted case file about the incident's container
(``casefile``, ``redact``), diagnoses it with built-in rules first (``rules``),
then, when a model is configured and the budgets allow (``budget``), asks it with
read-only repository tools (``repo_tools``): ``llm`` runs that conversation and
checks what comes back, whichever provider serves the model (``claude``, the only
module importing ``anthropic``; ``openai_compat``, the only one importing
``openai``). ``worker`` runs all of that off the healing path and records the
result; ``document`` shows it. See docs/escalation.md.
"""
