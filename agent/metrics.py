"""Prometheus metrics: what medic saw and did, for dashboards and alerts.

Each supervisor owns a registry of its own rather than the library's global one, so
two supervisors (or two tests) never count into each other.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The counters and gauges medic keeps; ``registry`` is what /metrics exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycles = Counter("medic_cycles_total", "Poll cycles completed.", registry=r)
        self.cycle_errors = Counter(
            "medic_cycle_errors_total", "Poll cycles that could not list containers.", registry=r
        )
        self.cycle_seconds = Histogram(
            "medic_cycle_duration_seconds",
            "Time one poll cycle took, actions not included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.containers = Gauge(
            "medic_containers", "Containers in scope at the last poll.", registry=r
        )
        self.findings = Counter(
            "medic_findings_total", "Findings, by signal.", ["signal"], registry=r
        )
        self.actions = Counter(
            "medic_actions_total",
            "Actions taken, by kind and outcome (ok or error).",
            ["kind", "outcome"],
            registry=r,
        )
        self.open_incidents = Gauge(
            "medic_open_incidents", "Incidents open, healing or escalated.", registry=r
        )
        self.escalations = Counter(
            "medic_escalations_total", "Incidents escalated to a person.", registry=r
        )
        self.events_connected = Gauge(
            "medic_events_stream_connected",
            "1 while the Docker events stream is connected.",
            registry=r,
        )
        self.spool_depth = Gauge(
            "medic_spool_depth",
            "Incident-store writes waiting in the local spool for the database.",
            registry=r,
        )
        self.leader = Gauge(
            "medic_leader",
            "1 while this medic leads its scope (it records and acts), 0 while it stands by.",
            registry=r,
        )
        self.leader_since = Gauge(
            "medic_leader_since_timestamp_seconds",
            "When this medic took its role (leader or standby), as a Unix time.",
            registry=r,
        )
        self.lease_term = Gauge(
            "medic_lease_term",
            "The lease term (fencing token) this medic leads in; 0 while it stands by or "
            "leads without a lease.",
            registry=r,
        )
        self.llm_tokens = Counter(
            "medic_llm_tokens_total",
            "Tokens used by LLM diagnoses, by direction (input or output).",
            ["direction"],
            registry=r,
        )
