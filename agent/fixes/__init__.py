"""Fix branches: a diagnosis's edits checked, committed to a branch, verified, reviewed.

``guardrails`` decides (pure: file contents and repository facts in, refusals out);
``git`` is the only module that runs git; ``verify`` builds and tests a fix branch in
a temporary worktree; ``propose`` turns a diagnosis into a Fix; ``review`` approves
and rejects; ``document`` renders fixes for the command line. docs/fixes.md explains
the guardrails and what medic never does to a repository.
"""
