"""The Docker side: the gateway to the engine, its events stream, and compose files as
compose reads them. Nothing here decides what to heal."""
