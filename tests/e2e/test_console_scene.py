"""The review console's scene is what its browser tests are told it is: two escalated
incidents, each with a proposed fix whose branch holds exactly its one-line edit,
medic still running and answering on its port, and the user's checkout untouched.
"""

from __future__ import annotations

import urllib.request

from console_scene import DEFECTS, Scene
from fixproject import Defect

from agent.model import FixStatus, IncidentStatus
from agent.store.postgres import PostgresStore


def changed_lines(scene: Scene, base: str, branch: str) -> list[str]:
    diff = scene.repo.git("diff", "--unified=0", f"{base}..{branch}")
    return [
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]


def the_fix_of(defect: Defect) -> list[str]:
    [line] = [line for line in defect.app_py.splitlines() if defect.old in line]
    return [f"-{line}", f"+{line.replace(defect.old, defect.new)}"]


def test_two_escalated_incidents_each_with_a_proposed_one_line_fix_and_medic_serving(
    console_scene: Scene,
) -> None:
    scene = console_scene
    defects = {d.service: d for d in DEFECTS}
    assert set(scene.incidents) == set(scene.fixes) == {"app", "api"} == set(defects)

    store = PostgresStore(scene.postgres_url, migrate=False)
    try:
        for service, incident in scene.incidents.items():
            assert store.get(incident.id).status is IncidentStatus.ESCALATED
            assert incident.container.project == scene.project
            fix = scene.fixes[service]
            assert fix.incident_id == incident.id
            assert store.get_fix(fix.id).status is FixStatus.PROPOSED
    finally:
        store.close()

    repo = scene.repo
    for service, fix in scene.fixes.items():
        defect = defects[service]
        assert fix.branch is not None and fix.commit is not None and fix.base is not None
        assert repo.git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit
        assert fix.files == (defect.path,)
        assert changed_lines(scene, fix.base, fix.branch) == the_fix_of(defect), service
        assert fix.verification is not None and fix.verification.built is True, fix.verification

    assert scene.medic.poll() is None
    with urllib.request.urlopen(f"{scene.url}/healthz", timeout=5) as response:
        assert response.status == 200

    # medic made its branches without checking anything out or writing a file.
    assert repo.git("symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert {fix.base for fix in scene.fixes.values()} == {repo.git("rev-parse", "HEAD").strip()}
    assert repo.git("status", "--porcelain=v1", "--untracked-files=all") == ""
    for defect in DEFECTS:
        assert (repo.path / defect.path).read_text() == defect.app_py
