"""The errors of fix branches, under medic's one base error.

::

    MedicError
    └── FixError                    a fix cannot be made, approved or rejected
        ├── GitError                git failed or refused; the message is git's last line
        │   └── GitTimeout          git did not answer in time                 (temporary)
        ├── FixNotFound             no fix has that id (or no single fix has that prefix)
        └── FixRefused              the request is understood but not safe or not allowed
                                    (approve over uncommitted changes, a decided fix, ...)
"""

from __future__ import annotations

from agent.errors import MedicError, TemporaryError


class FixError(MedicError):
    """A fix cannot be made, approved or rejected. The message is one line for a person."""


class GitError(FixError):
    """A git command failed; the message names the command and git's own words."""


class GitTimeout(GitError, TemporaryError):
    """A git command did not finish within its time limit and was killed."""


class FixNotFound(FixError):
    """No fix has that id, or no single fix starts with that prefix."""


class FixRefused(FixError):
    """The request cannot be carried out safely; nothing was changed."""
