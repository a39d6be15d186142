"""Gathering a case file: the reads, through small interfaces, that feed the pure builder.

``casefile.build_case_file`` decides what goes in and how it is bounded and redacted;
this module only asks the engine, the compose files and the incident store, and turns
each failure into a note in the case file instead of an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.engine.compose import config_files, load_compose
from agent.errors import ActionError, DockerError, StoreError
from agent.escalate.casefile import (
    EARLIER_INCIDENTS,
    LOG_LINES,
    CaseFile,
    EvidenceSource,
    Sibling,
    build_case_file,
)
from agent.model import Diagnosis, Incident, IncidentId
from agent.store.base import IncidentQuery, IncidentStore


def gather(
    *,
    incident: Incident,
    source: EvidenceSource,
    store: IncidentStore,
    diagnoses_of: Callable[[IncidentId], Sequence[Diagnosis]] | None = None,
    redact_patterns: Sequence[re.Pattern[str]] = (),
) -> CaseFile:
    """Read the evidence of ``incident`` and build its case file.

    Nothing here is fatal: a container that is gone, a log that cannot be read, a
    compose file that is missing or a store that is away each become a note in the
    case file, and the rest is still gathered.
    """
    notes: list[str] = []
    try:
        incident = store.get(incident.id)
    except StoreError as e:
        notes.append(f"The incident store could not be read ({e}); attempts may be missing.")
    container_id = incident.container.id
    inspect: Mapping[str, Any] | None = None
    try:
        inspect = source.inspect_attrs(container_id)
    except DockerError as e:
        notes.append(f"The container could not be inspected: {e}")
    log_lines: list[str] = []
    try:
        log_lines = source.log_tail(container_id, lines=LOG_LINES)
    except DockerError as e:
        notes.append(f"The container's log could not be read: {e}")
    image_platform = engine_platform = ""
    image_id = str((inspect or {}).get("Image") or "")
    if image_id:
        try:
            image_platform = source.image_platform(image_id)
            engine_platform = source.engine_platform()
        except DockerError as e:
            notes.append(f"The image's or the engine's platform could not be read: {e}")
    labels = ((inspect or {}).get("Config") or {}).get("Labels") or {}
    compose = _read_compose(labels, notes)
    siblings: Sequence[Sibling] = ()
    if incident.container.project:
        try:
            siblings = source.project_containers(incident.container.project)
        except DockerError as e:
            notes.append(f"The other containers of the project could not be listed: {e}")
    earlier: list[Incident] = []
    if incident.container.service:
        try:
            found = store.list_incidents(
                IncidentQuery(service=incident.container.service, limit=EARLIER_INCIDENTS + 1)
            )
            earlier = [
                i
                for i in found
                if i.id != incident.id and i.container.project == incident.container.project
            ][:EARLIER_INCIDENTS]
        except StoreError as e:
            notes.append(f"Earlier incidents could not be read ({e}).")
    earlier_diagnoses = {i.id: diagnoses_of(i.id) for i in earlier} if diagnoses_of else {}
    return build_case_file(
        incident=incident,
        inspect=inspect,
        log_lines=log_lines,
        siblings=siblings,
        compose=compose,
        earlier=earlier,
        earlier_diagnoses=earlier_diagnoses,
        notes=notes,
        redact_patterns=redact_patterns,
        image_platform=image_platform,
        engine_platform=engine_platform,
    )


def _read_compose(labels: Mapping[str, str], notes: list[str]) -> dict[str, Any] | None:
    try:
        _, files = config_files(labels)
    except ActionError:
        notes.append("The container has no compose labels; the service definition is unknown.")
        return None
    present: list[Path] = []
    for file in files:
        if file.is_file():
            present.append(file)
        else:
            notes.append(f"The compose file {file} is missing; its part of the service is unknown.")
    if not present:
        return None
    try:
        return load_compose(present)
    except ActionError as e:
        notes.append(f"The compose files could not be read: {e}")
        return None
