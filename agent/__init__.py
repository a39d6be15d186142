"""medic: a self-healing supervisor for Docker Compose stacks."""

__version__ = "0.1.0"
