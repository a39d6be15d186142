"""Errors a user meets are one line each, and sentences built around them read right.

The rule (agent/errors.py): an error's message carries no final period, because
it is often put inside another sentence (``Could not restart web: {error} (attempt
2 by playbook x).``); the command that prints one alone finishes the sentence.
"""

from __future__ import annotations

import errno
import gc
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
import requests
import requests.exceptions

from agent.cli import sentence
from agent.engine.docker_sdk import DockerSDKGateway, translate_errors, unreachable_message
from agent.errors import DockerError, DockerUnavailable


def wrapped(cause: BaseException) -> BaseException:
    """``cause`` under the layers the docker SDK puts around it."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise requests.exceptions.ConnectionError(inner) from inner
    except requests.exceptions.ConnectionError as outer:
        try:
            raise docker.errors.DockerException(
                f"Error while fetching server API version: {outer}"
            ) from outer
        except docker.errors.DockerException as top:
            outermost: BaseException = top
            return outermost


@pytest.fixture
def collect_failed_connections() -> Iterator[None]:
    """The SDK leaves the socket of a failed connection to the garbage collector, which
    warns about it, and warnings are errors here: collect it now, quietly."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.parametrize(
    "library_error",
    [
        docker.errors.NotFound("No such container: abc"),
        docker.errors.APIError("boom", explanation="engine exploded"),
        requests.exceptions.ConnectionError("Connection aborted."),
        requests.exceptions.ReadTimeout("Read timed out."),
        docker.errors.DockerException("Invalid bind address format."),
    ],
)
def test_docker_errors_carry_no_final_period_so_a_sentence_can_hold_them(
    library_error: Exception,
) -> None:
    with pytest.raises(DockerError) as raised, translate_errors("Restarting web"):
        raise library_error

    message = str(raised.value)
    assert message.startswith("Restarting web: ")
    assert not message.endswith(".")
    assert ".." not in f"Could not restart web: {message}."


@pytest.mark.parametrize(
    ("cause", "reason", "check"),
    [
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            "connection refused",
            "check that the Docker engine runs there and that DOCKER_HOST is right",
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory"),
            "there is no socket there",
            "mount its socket into medic's container",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied"),
            "permission denied",
            "give medic's user the socket's group (DOCKER_GID",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "its host name does not resolve",
            "check the host name in DOCKER_HOST",
        ),
        (
            requests.exceptions.ConnectTimeout("timed out"),
            "it did not answer in time",
            "DOCKER_HOST is right",
        ),
    ],
)
def test_a_failure_to_connect_names_the_host_the_reason_and_what_to_check(
    cause: BaseException, reason: str, check: str
) -> None:
    line = unreachable_message("tcp://docker:2375", wrapped(cause))

    assert line.startswith(f"cannot reach the Docker engine at tcp://docker:2375: {reason}; ")
    assert check in line
    assert "\n" not in line
    assert "HTTPConnectionPool" not in line
    assert "fetching server API version" not in line


@pytest.mark.usefixtures("collect_failed_connections")
def test_connecting_to_a_port_where_nothing_listens_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        # Bound but not listening: a connection is refused, whoever else runs here.
        with pytest.raises(DockerUnavailable) as raised:
            DockerSDKGateway.from_env({"DOCKER_HOST": f"tcp://127.0.0.1:{port}"})

    assert str(raised.value) == (
        f"cannot reach the Docker engine at tcp://127.0.0.1:{port}: connection refused; "
        "check that the Docker engine runs there and that DOCKER_HOST is right"
    )


@pytest.mark.usefixtures("collect_failed_connections")
def test_connecting_to_a_socket_that_is_not_there_says_to_mount_it(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/docker.sock"

    with pytest.raises(DockerUnavailable) as raised:
        DockerSDKGateway.from_env({"DOCKER_HOST": host})

    assert str(raised.value).startswith(
        f"cannot reach the Docker engine at {host}: there is no socket there; "
        "start the Docker engine, or mount its socket into medic's container"
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("MEDIC_WORKERS='x' is not valid: write a whole number, like 4", "… like 4."),
        ("There is no incident with id 'abc'.", "… id 'abc'."),
        ("Is the server running?", "… running?"),
        ("  padded  ", "padded."),
    ],
)
def test_a_message_printed_alone_ends_in_exactly_one_full_stop(text: str, line: str) -> None:
    printed = sentence(text)

    assert printed.endswith(line.removeprefix("… "))
    assert not printed.endswith("..")
