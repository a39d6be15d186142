"""Where incidents and attempts are kept.

``IncidentStore`` is the interface the supervisor and the CLI use; ``MemoryStore``
keeps everything in this process; the Postgres store persists the same values.
"""

from agent.store.base import IncidentNotFound, IncidentQuery, IncidentStore, new_id
from agent.store.memory import MemoryStore

__all__ = ["IncidentNotFound", "IncidentQuery", "IncidentStore", "MemoryStore", "new_id"]
