"""Every error medic raises on purpose, under one catchable base.

Adapters translate their library's errors into these at the boundary, with
``raise X(...) from e``, so that nothing above the adapters ever imports
``docker`` or ``psycopg`` just to catch something. Whether a failure is worth
retrying is a property of its type, not of its message.

Every error class medic defines, each drawn under the class it derives from, with
the module it lives in when that is not this one (tests/unit/test_errors.py holds
this drawing to the code)::

    MedicError
    ├── TemporaryError              the mixin of the temporary ones, see below
    ├── ConfigError                 bad settings; says what to write
    ├── PlaybookError               a bad playbook; file, line and field
    ├── PlaybookErrors              several of those, reported together
    ├── DockerError                 the Docker engine refused or failed
    │   ├── DockerUnavailable       no socket or no answer (temporary)
    │   ├── DockerServerError       the engine answered 5xx (temporary)
    │   ├── ContainerGone           the container is gone (permanent)
    │   └── DockerRequestError      the request was refused, 4xx (permanent)
    │       └── NotSwarmManager     Swarm services need a manager (permanent)
    ├── ActionError                 an action did not do its job (permanent)
    │   └── ComposeError            compose cannot read the project        engine.compose_graph
    │       ├── UnresolvedVariable  a ${VAR} unset, or a bad $             engine.compose_graph
    │       ├── MultipleDocuments   a file of several YAML documents       engine.compose_graph
    │       ├── UnreadableCompose   not YAML, a missing file, a cycle      engine.compose_graph
    │       └── _LeavesRepository   a file outside the repository          fixes.compose_guard
    ├── StoreError                  the incident store failed
    │   ├── StoreUnavailable        the database is out of reach (temporary)
    │   ├── FencedOut               this medic no longer leads its scope
    │   ├── IncidentNotFound        no incident has that id                store.base
    │   ├── FixRecordedAlready      a new fix reuses a stored id           store.base
    │   ├── ForeignIncident         another medic's scope owns it          store.base
    │   ├── BadSpoolLine            a spool line medic cannot read         store.ops
    │   └── SpoolError              the spool cannot be written            store.spool
    ├── CodecError                  a JSON document is not what it claims  codec
    ├── NotifyError                 a notification was not delivered       notify
    ├── QueryError                  a listing's filter cannot be read      present
    ├── DecisionRefused             a person's decision cannot be made     review
    ├── LLMError                    the model gave no diagnosis            escalate.llm
    │   └── LLMUnavailable          the API did not answer (temporary)     escalate.llm
    └── FixError                    a fix cannot be made, approved, rejected
        ├── FixNotFound             no fix has that id, or that prefix
        ├── FixRefused              not safe or not allowed                fixes.errors
        └── GitError                git failed; git's own last line        fixes.errors
            └── GitTimeout          git ran out of time (temporary)        fixes.errors

``CodecError`` and ``FixRecordedAlready`` are ``ValueError`` too. A few exceptions
never leave the code that raises and catches them, and are no MedicError:
``Refused`` (escalate.repo_tools), a tool call the model may not make; ``_Invalid``
(healing.playbooks), a value already recorded as a PlaybookError; ``UnsetVariable``
(engine.compose_graph), ``DockerfileError`` (fixes.dockerfile_guard) and
``ManifestError`` (fixes.manifest_guard), text their parser cannot read; ``BadRequest``
(web.console), a request the console answers with 400.

``TemporaryError`` is a mixin on the temporary ones; retry policies key on it.
It may carry ``delay``: how many seconds the raiser knows a retry should wait
(``StoreUnavailable("starting up", delay=2)``, as kopf's ``TemporaryError(msg,
delay=60)``). ``None`` leaves the pause to the caller's own backoff.

A message is a clause with no final period, because most are put inside another
sentence (``Could not restart web: {error} (attempt 2).``); the command that prints
one on its own adds the period (``agent.cli.sentence``).
"""

from __future__ import annotations


class MedicError(Exception):
    """Base of every error medic raises on purpose."""


class TemporaryError(MedicError):
    """A failure that may go away by itself; worth retrying after a delay.

    ``delay`` is the pause, in seconds, the raiser advises before the next try, or
    None when it has no advice and the caller's backoff decides.
    """

    def __init__(self, *args: object, delay: float | None = None) -> None:
        super().__init__(*args)
        if delay is not None and delay < 0:
            raise ValueError(f"a retry delay cannot be negative: {delay}")
        self.delay = delay


class ConfigError(MedicError):
    """Settings that cannot work. The message says which setting and what to write."""


class PlaybookError(MedicError):
    """One problem in one playbook file, located to the line and field."""

    def __init__(self, message: str, *, file: str, line: int | None, field: str | None) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.reason = message
        where = file if line is None else f"{file}:{line}"
        what = f" {field}:" if field else ""
        super().__init__(f"{where}:{what} {message}")


class PlaybookErrors(MedicError):
    """Several playbook problems, reported together so a person fixes them in one pass."""

    def __init__(self, errors: list[PlaybookError]) -> None:
        self.errors = errors
        lines = "\n".join(str(e) for e in errors)
        count = len(errors)
        super().__init__(f"{count} playbook error{'s' if count != 1 else ''}:\n{lines}")


class DockerError(MedicError):
    """The Docker engine refused a request or could not be reached."""


class DockerUnavailable(DockerError, TemporaryError):
    """The Docker socket is missing or the engine does not answer."""


class DockerServerError(DockerError, TemporaryError):
    """The engine answered with a server error (5xx); often transient."""


class ContainerGone(DockerError):
    """The container was removed between two looks at it."""


class DockerRequestError(DockerError):
    """The engine refused the request (4xx other than 404); retrying will not help."""


class NotSwarmManager(DockerRequestError):
    """The engine is a Swarm worker (or in no swarm): only a manager reads or updates
    services. Asking again will not help."""


class ActionError(MedicError):
    """An action was carried out but did not do its job (for example exec exited non-zero)."""


class StoreError(MedicError):
    """The incident store failed."""


class StoreUnavailable(StoreError, TemporaryError):
    """The incident store cannot be reached right now."""


class FencedOut(StoreError):
    """A write (or an action) of a medic that no longer leads its scope was refused.

    Its lease ran out (it was paused, or could not reach Postgres to renew it), or
    another medic took the lease over: the fencing token the write carried is not the
    lease's any more, so nothing of it was stored. The medic steps down and stands by
    (docs/ha.md)."""


class FixError(MedicError):
    """A fix cannot be made, approved or rejected. The message is one line for a person."""


class FixNotFound(FixError):
    """No fix has that id, or no single fix starts with that prefix."""
