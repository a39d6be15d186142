"""Reading compose files for build contexts and dependencies, and the order of dependents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fakes import FakeDocker

from agent.engine.compose import (
    BuildSpec,
    build_spec,
    config_files,
    interpolate,
    load_compose,
    load_project,
)
from agent.engine.compose_graph import (
    UnreadableCompose,
    UnresolvedVariable,
    compose_dependencies,
    dependents_in_order,
    depends_on_label,
    merge_graphs,
)
from agent.engine.translate import project_container_from_list
from agent.errors import ActionError
from agent.healing.act import Actor
from agent.model import Action, State

LABELS = {
    "com.docker.compose.project.working_dir": "/srv/shop",
    "com.docker.compose.project.config_files": "docker-compose.yml,/etc/shop/override.yml",
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- finding and reading the files -------------------------------------------------------


def test_the_files_come_from_the_labels_relative_to_the_working_folder() -> None:
    working_dir, files = config_files(LABELS)

    assert working_dir == Path("/srv/shop")
    assert files == (Path("/srv/shop/docker-compose.yml"), Path("/etc/shop/override.yml"))


def test_a_container_without_compose_labels_cannot_be_traced_to_a_file() -> None:
    with pytest.raises(ActionError, match="only containers made by docker compose"):
        config_files({"com.docker.compose.project": "shop"})


def test_later_files_override_earlier_ones_key_by_key(tmp_path: Path) -> None:
    base = write(
        tmp_path / "a.yml",
        "services:\n  web:\n    build: {context: ., args: {A: '1'}}\n    depends_on: [db]\n",
    )
    override = write(tmp_path / "b.yml", "services:\n  web:\n    build: {args: {B: '2'}}\n")

    merged = load_compose([base, override])

    assert merged["services"]["web"] == {
        "build": {"context": str(tmp_path), "args": {"A": "1", "B": "2"}},
        "depends_on": ["db"],
    }


def test_a_missing_file_points_at_the_mount_medic_needs(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match=r"mount the project folder at the same path"):
        load_compose([tmp_path / "nope.yml"])


def test_a_broken_file_is_an_action_error(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="not valid YAML"):
        load_compose([write(tmp_path / "c.yml", "services: [\n")])


# --- the labels docker-compose v1 and docker compose v2 write ---------------------------

WD = "com.docker.compose.project.working_dir"
FILES = "com.docker.compose.project.config_files"


@pytest.mark.parametrize(
    ("working_dir", "written", "expected"),
    [
        # README's deployment, v1 run in the project folder: the overlay is absolute.
        (
            "/home/ann/shop",
            "docker-compose.yml,/opt/medic/compose/medic.yml",
            ["/home/ann/shop/docker-compose.yml", "/opt/medic/compose/medic.yml"],
        ),
        # v1 run in /tmp/x with -f proj/docker-compose.yml -f proj/sub/over.yml: paths are
        # relative to /tmp/x, which no label names (these labels were read off real containers).
        (
            "/tmp/x/proj",
            "proj/docker-compose.yml,proj/sub/over.yml",
            ["/tmp/x/proj/docker-compose.yml", "/tmp/x/proj/sub/over.yml"],
        ),
        # v1 run in proj/sub without -f: it found the file in a parent folder.
        (
            "/tmp/x/proj",
            "../docker-compose.yml,../docker-compose.override.yml",
            ["/tmp/x/proj/docker-compose.yml", "/tmp/x/proj/docker-compose.override.yml"],
        ),
        # v1 run in /srv with -f shop/../shop/a.yml: normalised as compose does.
        ("/srv/shop", "shop/../shop/a.yml,b.yml", ["/srv/shop/a.yml", "/srv/b.yml"]),
        # v2 writes absolute paths, with spaces where the folder has them.
        (
            "/home/ann/my shop",
            "/home/ann/my shop/compose.yaml,/opt/medic/compose/medic.yml",
            ["/home/ann/my shop/compose.yaml", "/opt/medic/compose/medic.yml"],
        ),
        # v2 without a working folder label (an odd client): the first file's folder.
        ("", "/srv/shop/compose.yaml", ["/srv/shop/compose.yaml"]),
    ],
)
def test_compose_files_are_found_from_v1_and_v2_labels(
    working_dir: str, written: str, expected: list[str]
) -> None:
    _, files = config_files({WD: working_dir, FILES: written})

    assert files == tuple(Path(p) for p in expected)


def test_without_a_working_folder_the_first_files_folder_is_the_project_folder() -> None:
    working_dir, _ = config_files({FILES: "/srv/shop/compose.yaml,/etc/x.yml"})

    assert working_dir == Path("/srv/shop")


def test_with_project_directory_given_relative_files_are_read_from_the_project_folder() -> None:
    # `--project-directory /srv/other -f shop.yml`: where compose ran is unknown, and the
    # working folder is the best guess there is.
    _, files = config_files({WD: "/srv/other", FILES: "deploy/shop.yml"})

    assert files == (Path("/srv/other/deploy/shop.yml"),)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({FILES: "compose.yml"}, "relative paths, so medic cannot tell where they are"),
        ({WD: "/srv/shop", FILES: "-"}, "read from standard input"),
        ({WD: "/srv/shop", FILES: " , "}, "only containers made by docker compose"),
        ({WD: "/srv/shop", FILES: "../a.yml,b.yml"}, "cannot tell which file it is"),
    ],
)
def test_labels_that_do_not_lead_to_a_file_say_why(labels: dict[str, str], message: str) -> None:
    with pytest.raises(ActionError, match=message):
        config_files(labels)


def test_medics_own_overlay_is_left_out_when_it_is_not_mounted(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    write(project / "docker-compose.yml", "services:\n  web:\n    build: ./web\n")
    labels = {WD: str(project), FILES: f"docker-compose.yml,{tmp_path}/medic/compose/medic.yml"}

    working_dir, files = config_files(labels)
    spec = build_spec(load_compose(files), "web", working_dir)

    assert spec == BuildSpec(context=project / "web")


def test_medics_overlay_is_read_where_it_can_be(tmp_path: Path) -> None:
    project = write(tmp_path / "docker-compose.yml", "services:\n  web:\n    image: web\n")
    overlay = write(tmp_path / "medic.yml", "services:\n  medic:\n    depends_on: [medic-db]\n")

    assert compose_dependencies(load_compose([project, overlay])) == {
        "web": frozenset(),
        "medic": frozenset({"medic-db"}),
    }


def test_another_unreadable_file_is_still_an_error_as_it_may_change_the_build(
    tmp_path: Path,
) -> None:
    project = write(tmp_path / "docker-compose.yml", "services:\n  web:\n    build: .\n")

    with pytest.raises(ActionError, match=r"cannot read the compose file .*/override\.yml"):
        load_compose([project, tmp_path / "elsewhere" / "override.yml"])


def test_rebuild_through_the_documented_overlay_builds_and_recreates(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    write(project / "app" / "Dockerfile", "FROM scratch\n")
    write(project / "docker-compose.yml", "services:\n  app:\n    build: ./app\n")
    assert_rebuilds(project, "docker-compose.yml,/path/to/medic/compose/medic.yml")


def assert_rebuilds(project: Path, files: str) -> None:
    """The rebuild action, run on service ``app`` of ``project`` made with compose
    ``files``, builds and recreates it."""
    fake = FakeDocker()
    app = fake.add(
        "shop-app-1",
        {
            "com.docker.compose.project": "shop",
            "com.docker.compose.service": "app",
            WD: str(project),
            FILES: files,
        },
    )
    actor = Actor(fake)
    try:
        result = actor.run_action(fake.inspect(app.id).ref, Action("rebuild"))
    finally:
        actor.shutdown(timeout=1)

    assert result.ok, result.error
    assert "recreate" in fake.requests


# --- variables in build: ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("$TAG-${TAG}", "1.2-1.2"),
        ("${EMPTY:-dflt} ${EMPTY-dflt} ${UNSET-dflt} ${UNSET:-dflt}", "dflt  dflt dflt"),
        ("${TAG:+alt} ${EMPTY:+alt} ${EMPTY+alt} ${UNSET+alt}", "alt  alt "),
        ("${UNSET:-${TAG}/x}", "1.2/x"),
        ("cost $$5 and $${TAG}", "cost $5 and ${TAG}"),
        ("${UNSET}", ""),
    ],
)
def test_variables_are_substituted_as_compose_does(text: str, expected: str) -> None:
    assert interpolate(text, {"TAG": "1.2", "EMPTY": ""}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${TAG:?set TAG to a version}", "TAG must be set: set TAG to a version"),
        ("${EMPTY?}", None),
        ("${TAG", "without its closing"),
        ("a $ b", "write \\$\\$ for a \\$"),
        ("${1X}", "names no variable"),
    ],
)
def test_malformed_or_missing_variables_say_what_is_wrong(text: str, message: str | None) -> None:
    variables = {"EMPTY": ""}
    if message is None:
        assert interpolate(text, variables) == ""
        return
    with pytest.raises(ValueError, match=message):
        interpolate(text, variables)


def test_build_sections_are_substituted_from_the_environment_then_the_dotenv(
    tmp_path: Path,
) -> None:
    write(tmp_path / ".env", "# versions\nexport APP=web\nVERSION='1.0'\nTAG=from-dotenv\n")
    file = write(
        tmp_path / "compose.yml",
        "services:\n"
        "  web:\n"
        "    image: shop/${APP}:${TAG}\n"
        "    build:\n"
        "      context: ./${APP}\n"
        "      dockerfile: ${DOCKERFILE:-Dockerfile.prod}\n"
        "      args: [VERSION=$VERSION, 'TAG=${TAG}']\n",
    )

    config = load_compose([file], environment={"TAG": "from-env"})
    spec = build_spec(config, "web", tmp_path)

    assert spec == BuildSpec(
        context=tmp_path / "web",
        dockerfile="Dockerfile.prod",
        args=(("VERSION", "1.0"), ("TAG", "from-env")),
    )
    assert config["services"]["web"]["image"] == "shop/web:from-env"


def test_a_required_variable_that_is_unset_fails_naming_service_and_file(tmp_path: Path) -> None:
    file = write(
        tmp_path / "compose.yml", "services:\n  web:\n    build: ${SRC:?where the source is}\n"
    )

    with pytest.raises(ActionError, match=r"service 'web' in .*compose\.yml .*SRC must be set"):
        load_compose([file], environment={})


# --- build: -----------------------------------------------------------------------------


def test_a_build_path_is_resolved_against_the_working_folder() -> None:
    config = {"services": {"web": {"build": "./web/../app"}}}

    assert build_spec(config, "web", Path("/srv/shop")) == BuildSpec(context=Path("/srv/shop/app"))


def test_a_build_mapping_carries_dockerfile_args_and_target() -> None:
    config = {
        "services": {
            "web": {
                "build": {
                    "context": "/opt/src",
                    "dockerfile": "docker/Dockerfile.prod",
                    "args": {"DEBUG": False, "VERSION": 2, "FROM_ENV": None},
                    "target": "runtime",
                }
            },
            "api": {"build": {"args": ["A=1", "B=x=y", "FROM_ENV"]}},
        }
    }

    web = build_spec(config, "web", Path("/srv/shop"))
    api = build_spec(config, "api", Path("/srv/shop"))

    assert web == BuildSpec(
        context=Path("/opt/src"),
        dockerfile="docker/Dockerfile.prod",
        args=(("DEBUG", "false"), ("VERSION", "2")),
        target="runtime",
    )
    assert api == BuildSpec(context=Path("/srv/shop"), args=(("A", "1"), ("B", "x=y")))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"services": {"web": {"image": "nginx"}}}, "has no build: section"),
        ({"services": {}}, "has no service 'web'"),
        ({"services": {"web": {"build": "https://github.com/x/y.git"}}}, "remote URL"),
        ({"services": {"web": {"build": ["."]}}}, "neither a path nor a mapping"),
    ],
)
def test_a_service_that_cannot_be_built_locally_says_why(
    config: dict[str, object], message: str
) -> None:
    with pytest.raises(ActionError, match=message):
        build_spec(config, "web", Path("/srv/shop"))


# --- dependencies ----------------------------------------------------------------------


def test_dependencies_come_from_depends_on_in_both_forms_and_from_network_mode() -> None:
    config = {
        "services": {
            "db": {"image": "postgres"},
            "api": {"depends_on": ["db", "cache"]},
            "worker": {"depends_on": {"api": {"condition": "service_healthy"}}},
            "sidecar": {"network_mode": "service:api"},
            "host": {"network_mode": "host"},
        }
    }

    assert compose_dependencies(config) == {
        "db": frozenset(),
        "api": frozenset({"db", "cache"}),
        "worker": frozenset({"api"}),
        "sidecar": frozenset({"api"}),
        "host": frozenset(),
    }


def test_compose_v2s_depends_on_label_names_the_services() -> None:
    assert depends_on_label("db:service_healthy:false,cache:service_started:true") == {
        "db",
        "cache",
    }
    assert depends_on_label("") == frozenset()
    assert depends_on_label(None) == frozenset()


def test_dependents_come_parents_first_and_leave_out_unrelated_services() -> None:
    graph = merge_graphs(
        {"api": {"db"}, "worker": {"api"}, "report": {"worker", "api"}},
        {"admin": {"db"}, "other": {"cache"}, "db": set()},
    )

    assert dependents_in_order(graph, "db") == ["admin", "api", "worker", "report"]
    assert dependents_in_order(graph, "worker") == ["report"]
    assert dependents_in_order(graph, "report") == []


def test_a_cycle_among_the_dependents_is_an_error_naming_it() -> None:
    graph = {"api": {"db", "worker"}, "worker": {"api"}}

    with pytest.raises(ActionError, match="cycle: api -> worker -> api"):
        dependents_in_order(graph, "db")


def test_a_cycle_through_the_healed_service_is_an_error_too() -> None:
    graph = {"db": {"b"}, "a": {"db"}, "b": {"a"}}

    with pytest.raises(ActionError, match="cycle: db -> b -> a -> db"):
        dependents_in_order(graph, "db")


# --- the Actor, through the fake engine ----------------------------------------------------


def service(name: str, **labels: str) -> dict[str, str]:
    return {
        "com.docker.compose.project": "shop",
        "com.docker.compose.service": name,
        **labels,
    }


def test_restart_dependents_restarts_in_order_and_skips_ignored_and_one_off_containers(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "compose.yml",
        "services:\n  db: {}\n  api: {depends_on: [db]}\n  job: {depends_on: [db]}\n",
    )
    files = {
        "com.docker.compose.project.working_dir": str(tmp_path),
        "com.docker.compose.project.config_files": "compose.yml",
    }
    fake = FakeDocker()
    db = fake.add("shop-db-1", service("db", **files))
    fake.add("shop-api-1", service("api", **files))
    fake.add("shop-worker-1", service("worker", **{"com.docker.compose.depends_on": "api:x:y"}))
    fake.add("shop-job-run", service("job", **{"com.docker.compose.oneoff": "True"}))
    fake.add("shop-admin-1", service("admin", **{"com.docker.compose.depends_on": "db:x:y"}))
    quiet = {"com.docker.compose.depends_on": "db:x:y", "medic.ignore": "true"}
    fake.add("shop-quiet-1", service("quiet", **quiet))
    fake.add("other-api-1", {"com.docker.compose.project": "other"})
    actor = Actor(fake)
    try:
        result = actor.run_action(fake.inspect(db.id).ref, Action("restart_dependents"))
    finally:
        actor.shutdown(timeout=1)

    assert result.ok, result.error
    assert result.output == "restarted in order: shop-admin-1, shop-api-1, shop-worker-1"
    restarted = [e.name for e in fake.history if e.action == "restart"]
    assert restarted == ["shop-admin-1", "shop-api-1", "shop-worker-1"]


def test_restart_dependents_with_unreadable_compose_files_uses_the_labels_and_says_so() -> None:
    files = {
        "com.docker.compose.project.working_dir": "/nowhere",
        "com.docker.compose.project.config_files": "compose.yml",
    }
    fake = FakeDocker()
    db = fake.add("shop-db-1", service("db", **files))
    fake.add("shop-api-1", service("api", **{"com.docker.compose.depends_on": "db:x:y"}))
    actor = Actor(fake)
    try:
        result = actor.run_action(fake.inspect(db.id).ref, Action("restart_dependents"))
    finally:
        actor.shutdown(timeout=1)

    assert result.ok, result.error
    assert result.output.startswith("dependencies read from labels only: cannot read")
    assert result.output.endswith("restarted in order: shop-api-1")


def test_cache_clear_runs_the_path_script_then_each_command_then_restarts() -> None:
    fake = FakeDocker()
    app = fake.add("shop-app-1", service("app"))
    action = Action(
        "cache_clear",
        paths=("/var/cache/app", "/tmp/x y"),
        commands=(("redis-cli", "FLUSHALL"),),
        restart=True,
    )
    actor = Actor(fake)
    try:
        result = actor.run_action(fake.inspect(app.id).ref, action)
    finally:
        actor.shutdown(timeout=1)

    assert result.ok, result.error
    assert fake.requests[-3:] == ["exec", "exec", "restart"]
    # The fake echoes each command: paths are arguments after the script, not spliced in.
    assert result.output.splitlines()[-2:] == ["redis-cli FLUSHALL", "restarted shop-app-1"]
    assert "sh /var/cache/app /tmp/x y" in result.output


def test_a_finished_job_is_left_alone_and_a_crashed_dependent_is_started_again() -> None:
    fake = FakeDocker()
    db = fake.add("shop-db-1", service("db"))
    needs_db = {"com.docker.compose.depends_on": "db:service_started:false"}
    fake.add("shop-migrate-1", service("migrate", **needs_db), state=State.EXITED, exit_code=0)
    fake.add("shop-api-1", service("api", **needs_db), state=State.EXITED, exit_code=1)
    actor = Actor(fake)
    try:
        result = actor.run_action(fake.inspect(db.id).ref, Action("restart_dependents"))
    finally:
        actor.shutdown(timeout=1)

    assert result.ok, result.error
    assert result.output == (
        "left alone, finished or never started: shop-migrate-1\nrestarted in order: shop-api-1"
    )
    states = {c.name: c.state for c in fake.containers.values()}
    assert states == {
        "shop-db-1": State.RUNNING,
        "shop-migrate-1": State.EXITED,
        "shop-api-1": State.RUNNING,
    }


@pytest.mark.parametrize(
    ("status", "state", "finished"),
    [
        ("Up 2 minutes", "running", False),
        ("Exited (0) 5 minutes ago", "exited", True),
        ("Exited (137) 5 minutes ago", "exited", False),
        ("Created", "created", True),
    ],
)
def test_list_entries_say_how_a_dependent_is_linked_and_whether_it_is_done(
    status: str, state: str, finished: bool
) -> None:
    member = project_container_from_list(
        {
            "Id": "c" * 64,
            "Names": ["/shop-sidecar-1"],
            "State": state,
            "Status": status,
            "Labels": {"com.docker.compose.service": "sidecar"},
            "HostConfig": {"NetworkMode": "container:" + "d" * 64},
        }
    )

    assert (member.name, member.service) == ("shop-sidecar-1", "sidecar")
    assert member.network_mode == "container:" + "d" * 64
    assert member.finished is finished


# --- compose's own reading rules ------------------------------------------------------------


def reader(files: dict[str, str]) -> Callable[[Path], str | None]:
    """A ``read`` over a dictionary: medic reads a commit or a fix's tree the same way."""
    return lambda path: files.get(str(path))


def test_include_is_followed_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path / "compose.yml", "include:\n  - parts/api.yml\nservices:\n  web: {image: web}\n")
    write(tmp_path / "parts" / "api.yml", "services:\n  api:\n    build: ./api\n")

    project = load_project([tmp_path / "compose.yml"], environment={})

    assert set(project.config["services"]) == {"web", "api"}
    assert project.config["services"]["api"]["build"] == str(tmp_path / "parts" / "api")
    assert project.files == (tmp_path / "compose.yml", tmp_path / "parts" / "api.yml")


def test_the_long_include_form_takes_its_folder_and_env_file() -> None:
    files = {
        "/p/compose.yml": (
            "include:\n"
            "  - path: [../shared/db.yml]\n"
            "    project_directory: ../shared/run\n"
            "    env_file: ../shared/db.env\n"
            "services:\n  web: {image: 'web:${TAG}'}\n"
        ),
        "/shared/db.yml": "services:\n  db:\n    image: 'postgres:${PG}'\n    env_file: db.env\n",
        "/shared/db.env": "PG=16\nTAG=from-include\n",
        "/p/.env": "TAG=1\n",
    }

    project = load_project([Path("/p/compose.yml")], environment={}, read=reader(files))

    services = project.config["services"]
    assert services["web"]["image"] == "web:1"
    assert services["db"]["image"] == "postgres:16"
    # Relative to the included project's folder, as compose resolves it.
    assert services["db"]["env_file"] == "/shared/run/db.env"
    assert Path("/shared/db.env") in project.files


def test_extends_merges_the_base_under_the_service_as_compose_does() -> None:
    files = {
        "/p/compose.yml": (
            "services:\n"
            "  web:\n"
            "    extends: {file: base/common.yml, service: app}\n"
            "    command: [serve]\n"
            "    cap_add: [CHOWN]\n"
            "    volumes: ['./web-data:/data']\n"
            "    environment: [MODE=web]\n"
            "  worker:\n"
            "    extends: web\n"
            "    command: [work]\n"
        ),
        "/p/base/common.yml": (
            "services:\n"
            "  app:\n"
            "    build: ./src\n"
            "    command: [default]\n"
            "    cap_add: [NET_BIND_SERVICE]\n"
            "    volumes: ['./data:/data', './logs:/logs']\n"
            "    environment: {MODE: base, LEVEL: info}\n"
        ),
    }

    services = load_compose([Path("/p/compose.yml")], environment={}, read=reader(files))[
        "services"
    ]

    assert services["web"] == {
        "build": "/p/base/src",
        "command": ["serve"],
        "cap_add": ["NET_BIND_SERVICE", "CHOWN"],
        "volumes": ["/p/web-data:/data", "/p/base/logs:/logs"],
        "environment": {"MODE": "web", "LEVEL": "info"},
    }
    assert services["worker"]["command"] == ["work"]
    assert services["worker"]["build"] == "/p/base/src"


def test_every_value_is_interpolated_but_no_key_and_extensions_and_anchors_work() -> None:
    files = {
        "/p/compose.yml": (
            "x-common: &common\n"
            "  restart: ${RESTART:-always}\n"
            "services:\n"
            "  web:\n"
            "    <<: *common\n"
            "    image: 'web:${TAG}'\n"
            "    command: 'echo $$HOME ${TAG:+tagged}'\n"
            "    labels: {'${KEY}': x}\n"
        )
    }

    config = load_compose([Path("/p/compose.yml")], environment={"TAG": "2"}, read=reader(files))

    assert config["x-common"] == {"restart": "always"}
    assert config["services"]["web"] == {
        "restart": "always",
        "image": "web:2",
        "command": "echo $HOME tagged",
        "labels": {"${KEY}": "x"},
    }


def test_an_unset_variable_is_empty_when_lenient_and_an_error_when_strict() -> None:
    files = {"/p/compose.yml": "services:\n  web:\n    privileged: ${PRIV}\n"}
    files_read = reader(files)

    lenient = load_compose([Path("/p/compose.yml")], environment={}, read=files_read)
    assert lenient["services"]["web"]["privileged"] == ""
    with pytest.raises(UnresolvedVariable, match=r"privileged of service 'web'.*PRIV is not set"):
        load_compose([Path("/p/compose.yml")], environment={}, read=files_read, strict=True)


def test_a_required_variable_fails_in_both_modes() -> None:
    files = {"/p/compose.yml": "services:\n  web:\n    image: ${IMG:?name the image}\n"}

    for strict in (False, True):
        with pytest.raises(UnresolvedVariable, match="IMG must be set: name the image"):
            load_compose(
                [Path("/p/compose.yml")], environment={}, read=reader(files), strict=strict
            )


def test_a_file_with_two_documents_is_refused_naming_it(tmp_path: Path) -> None:
    file = write(
        tmp_path / "compose.yml", "services: {}\n---\nservices:\n  x: {privileged: true}\n"
    )

    with pytest.raises(ActionError, match=r"compose\.yml holds 2 YAML documents"):
        load_compose([file])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"/p/compose.yml": "include: [a.yml]\n", "/p/a.yml": "include: [compose.yml]\n"},
            "include each other in a cycle: /p/compose.yml -> /p/a.yml -> /p/compose.yml",
        ),
        (
            {"/p/compose.yml": "services:\n  a: {extends: b}\n  b: {extends: a}\n"},
            "services extend each other in a cycle",
        ),
        ({"/p/compose.yml": "services:\n  a: {extends: ghost}\n"}, "extends 'ghost'"),
        ({"/p/compose.yml": "include: [gone.yml]\n"}, "includes /p/gone.yml, which does not"),
    ],
)
def test_includes_and_extends_that_cannot_be_followed_say_why(
    files: dict[str, str], message: str
) -> None:
    with pytest.raises(UnreadableCompose, match=message):
        load_compose([Path("/p/compose.yml")], environment={}, read=reader(files))


def test_reset_and_override_tags_work_as_in_compose() -> None:
    files = {
        "/p/compose.yml": "services:\n  web:\n    cap_drop: [ALL]\n    ports: ['80:80']\n",
        "/p/override.yml": (
            "services:\n  web:\n    cap_drop: !reset []\n    ports: !override ['127.0.0.1:81:80']\n"
        ),
    }

    config = load_compose(
        [Path("/p/compose.yml"), Path("/p/override.yml")], environment={}, read=reader(files)
    )

    assert config["services"]["web"] == {"ports": ["127.0.0.1:81:80"]}


def test_later_files_merge_volumes_by_target_and_append_other_sequences() -> None:
    files = {
        "/p/a.yml": "services:\n  web:\n    volumes: [d:/data, ./x:/x]\n    dns: [1.1.1.1]\n",
        "/p/b.yml": "services:\n  web:\n    volumes: [e:/data]\n    dns: [8.8.8.8, 1.1.1.1]\n",
    }

    web = load_compose([Path("/p/a.yml"), Path("/p/b.yml")], environment={}, read=reader(files))[
        "services"
    ]["web"]

    assert web == {"volumes": ["e:/data", "/p/x:/x"], "dns": ["1.1.1.1", "8.8.8.8"]}


def test_medics_overlay_is_left_out_through_a_reader_too() -> None:
    files = {"/p/compose.yml": "services:\n  web: {image: web}\n"}

    project = load_project(
        [Path("/p/compose.yml"), Path("/opt/medic/compose/medic.yml")],
        environment={},
        read=reader(files),
    )

    assert project.files == (Path("/p/compose.yml"),)


def test_build_spec_follows_a_build_from_an_extended_file(tmp_path: Path) -> None:
    write(
        tmp_path / "compose.yml",
        "services:\n  web:\n    extends: {file: ci/base.yml, service: b}\n",
    )
    write(
        tmp_path / "ci" / "base.yml",
        "services:\n  b:\n    build: {context: ../src, target: prod}\n",
    )

    spec = build_spec(load_compose([tmp_path / "compose.yml"]), "web", tmp_path)

    assert spec == BuildSpec(context=tmp_path / "src", target="prod")


def test_rebuild_finds_a_build_in_an_included_file(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    write(project / "services" / "app" / "Dockerfile", "FROM scratch\n")
    write(project / "compose.yml", "include: [services/app.yml]\n")
    write(project / "services" / "app.yml", "services:\n  app:\n    build: ./app\n")
    assert_rebuilds(project, "compose.yml")
