"""Scope: which containers medic may touch, and how it finds its own."""

from __future__ import annotations

from pathlib import Path

from fakes import FakeDocker

from agent.healing.observe import Scope, own_container_id, resolve_scope
from agent.model import ContainerId

ID = "0123456789abcdef" * 4


def test_own_container_id_is_read_from_mountinfo(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(
        "1 2 0:1 / / rw - overlay overlay rw\n"
        f"3 1 8:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/sda1\n"
    )
    assert own_container_id(tmp_path) == ID


def test_own_container_id_falls_back_to_cgroup_and_is_none_outside_docker(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text("1 2 0:1 / / rw - overlay overlay rw\n")
    assert own_container_id(tmp_path) is None
    (tmp_path / "self" / "cgroup").write_text(f"12:memory:/docker/{ID}\n")
    assert own_container_id(tmp_path) == ID
    assert own_container_id(tmp_path / "missing") is None


def test_project_comes_from_the_setting_then_from_medics_own_container() -> None:
    fake = FakeDocker()
    me = fake.add("shop-medic-1", {"com.docker.compose.project": "shop"})
    assert resolve_scope("other", fake, own_id=ContainerId(me.id)).project == "other"
    scope = resolve_scope(None, fake, own_id=ContainerId(me.id))
    assert scope.project == "shop"
    assert scope.own_id == me.id
    assert scope.label_filter == "com.docker.compose.project=shop"


def test_without_a_project_only_opted_in_containers_are_in_scope() -> None:
    scope = resolve_scope(None, FakeDocker(), own_id=None)
    assert scope.project is None
    assert scope.label_filter == "medic.enable=true"
    assert scope.includes("a" * 64, {"medic.enable": "true"})
    assert not scope.includes("a" * 64, {"com.docker.compose.project": "shop"})


def test_own_and_ignored_containers_are_never_in_scope() -> None:
    scope = Scope(project="shop", own_id=ContainerId(ID))
    project = {"com.docker.compose.project": "shop"}
    assert scope.includes("b" * 64, project)
    assert not scope.includes(ID, project)
    assert not scope.includes("b" * 64, {**project, "medic.ignore": "true"})
    assert not scope.includes("b" * 64, {"com.docker.compose.project": "other"})
