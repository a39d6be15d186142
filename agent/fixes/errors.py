"""The errors of git and of deciding on a fix branch.

They derive from ``agent.errors.FixError``, which lives there with ``FixNotFound`` so
that the store can raise that one without importing this package; agent/errors.py
draws the whole tree.
"""

from __future__ import annotations

from agent.errors import FixError, TemporaryError


class GitError(FixError):
    """A git command failed; the message names the command and git's own words."""


class GitTimeout(GitError, TemporaryError):
    """A git command did not finish within its time limit and was killed."""


class FixRefused(FixError):
    """The request cannot be carried out safely; nothing was changed."""
