"""The healing core: what medic sees of a container, what it finds, decides and does,
and how each incident is recorded. See docs/architecture.md."""
