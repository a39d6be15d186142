"""Where incidents and attempts are kept.

``IncidentStore`` is the interface the supervisor and the CLI use; ``MemoryStore``
keeps everything in this process; ``postgres.PostgresStore`` persists the same
values, and ``spool.SpoolingStore`` keeps them on disk while Postgres is away.
Those two are imported from their modules, so that only code that needs a
database loads psycopg.
"""

from agent.store.base import IncidentNotFound, IncidentQuery, IncidentStore, new_id
from agent.store.memory import MemoryStore

__all__ = ["IncidentNotFound", "IncidentQuery", "IncidentStore", "MemoryStore", "new_id"]
