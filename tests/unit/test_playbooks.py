"""Playbook files: what they turn into, and how every mistake in them is reported."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.config import BUNDLED_PLAYBOOKS
from agent.errors import PlaybookError, PlaybookErrors
from agent.healing.actions import KINDS, describe
from agent.healing.playbooks import check_paths, load_playbooks
from agent.model import Action, Backoff, Escalation, Match, Playbook, Signal

KUBELET_BACKOFF = Backoff(initial=10.0, factor=2.0, max=300.0, reset_after=600.0)
ESCALATE_AFTER_3_IN_30M = Escalation(after_attempts=3, within=1800.0)

MINIMAL = """\
playbooks:
  - name: start-exited
    match: {signals: [exited]}
    actions: [start]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_in(path: Path) -> list[PlaybookError]:
    playbooks, errors = check_paths([path])
    assert errors, f"expected errors, got playbooks {playbooks}"
    return errors


def only_error(tmp_path: Path, text: str) -> PlaybookError:
    errors = errors_in(write(tmp_path, "book.yml", text))
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def located(errors: list[PlaybookError]) -> list[tuple[int | None, str | None]]:
    return [(e.line, e.field) for e in errors]


# --- the bundled playbooks -------------------------------------------------------------


def test_bundled_playbooks_are_the_five_defaults_in_order() -> None:
    playbooks = load_playbooks(BUNDLED_PLAYBOOKS)

    assert [(p.name, sorted(p.match.signals), p.actions) for p in playbooks] == [
        ("restart-unhealthy", [Signal.UNHEALTHY], (Action("restart", timeout=10.0),)),
        ("start-exited", [Signal.EXITED], (Action("start"),)),
        ("restart-oom-killed", [Signal.OOM_KILLED], (Action("restart"),)),
        ("back-off-crash-loop", [Signal.CRASH_LOOP], (Action("start"),)),
        ("start-dead", [Signal.DEAD], (Action("start"),)),
    ]


def test_bundled_playbooks_back_off_like_the_kubelet_and_escalate_after_3_in_30m() -> None:
    for playbook in load_playbooks(BUNDLED_PLAYBOOKS):
        assert playbook.backoff == KUBELET_BACKOFF, playbook.name
        assert playbook.escalation == ESCALATE_AFTER_3_IN_30M, playbook.name


def test_bundled_playbooks_match_any_service_and_say_where_they_come_from() -> None:
    for playbook in load_playbooks(BUNDLED_PLAYBOOKS):
        assert playbook.match.services == frozenset()
        assert playbook.match.labels == {}
        assert playbook.description
        assert playbook.source == str(BUNDLED_PLAYBOOKS / "default.yml")
        assert playbook.line is not None
        line = (BUNDLED_PLAYBOOKS / "default.yml").read_text().splitlines()[playbook.line - 1]
        assert line.strip() == f"- name: {playbook.name}"


# --- what a valid file turns into ------------------------------------------------------

FULL_EXAMPLE = """\
version: 1
playbooks:
  - name: clear-cache-then-restart
    description: >
      Clear the web cache, then restart.
    match:
      signals: [unhealthy, probe_failed]
      services: [web, api]
      labels: {tier: frontend}
    actions:
      - exec: {command: ["sh", "-c", "rm -rf /tmp/cache/*"], user: root, timeout: 30s}
      - restart: {timeout: 10s}
      - start
      - stop: {timeout: 30}
    backoff: {initial: 5s, factor: 3, max: 10m, reset_after: 1h}
    escalate: {after_attempts: 5, within: 2h}
"""


def test_a_full_example_reads_into_the_playbook_it_describes(tmp_path: Path) -> None:
    path = write(tmp_path, "full.yml", FULL_EXAMPLE)

    assert load_playbooks(path) == [
        Playbook(
            name="clear-cache-then-restart",
            description="Clear the web cache, then restart.",
            match=Match(
                signals=frozenset({Signal.UNHEALTHY, Signal.PROBE_FAILED}),
                services=frozenset({"web", "api"}),
                labels={"tier": "frontend"},
            ),
            actions=(
                Action(
                    "exec",
                    command=("sh", "-c", "rm -rf /tmp/cache/*"),
                    user="root",
                    timeout=30.0,
                ),
                Action("restart", timeout=10.0),
                Action("start"),
                Action("stop", timeout=30.0),
            ),
            backoff=Backoff(initial=5.0, factor=3.0, max=600.0, reset_after=3600.0),
            escalation=Escalation(after_attempts=5, within=7200.0),
            source=str(path),
            line=3,
        )
    ]


def test_unset_backoff_and_escalate_take_the_model_defaults(tmp_path: Path) -> None:
    [playbook] = load_playbooks(write(tmp_path, "book.yml", MINIMAL))

    assert playbook.backoff == Backoff()
    assert playbook.escalation == Escalation()
    assert playbook.description == ""
    assert playbook.match == Match(signals=frozenset({Signal.EXITED}))


def test_file_defaults_apply_to_every_playbook_that_does_not_set_its_own(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "book.yml",
        """\
        defaults:
          backoff: {initial: 1s, max: 1m}
          escalate: {after_attempts: 2}
        playbooks:
          - name: a
            match: {signals: [exited]}
            actions: [start]
          - name: b
            match: {signals: [dead]}
            actions: [start]
            backoff: {max: 2m}
            escalate: {within: 5m}
        """,
    )

    a, b = load_playbooks(path)

    assert a.backoff == Backoff(initial=1.0, factor=2.0, max=60.0, reset_after=600.0)
    assert a.escalation == Escalation(after_attempts=2, within=1800.0)
    # A playbook's own settings replace the defaults one field at a time.
    assert b.backoff == Backoff(initial=1.0, factor=2.0, max=120.0, reset_after=600.0)
    assert b.escalation == Escalation(after_attempts=2, within=300.0)


def test_file_defaults_do_not_reach_playbooks_in_other_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yml",
        """\
        defaults: {backoff: {initial: 1s}}
        playbooks: [{name: a, match: {signals: [exited]}, actions: [start]}]
        """,
    )
    write(tmp_path, "b.yml", MINIMAL)

    a, b = load_playbooks(tmp_path)

    assert a.backoff.initial == 1.0
    assert b.backoff.initial == Backoff().initial


def test_an_exec_command_written_as_one_string_is_split_like_a_shell_would(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "book.yml",
        """\
        playbooks:
          - name: vacuum
            match: {signals: [log_match]}
            actions:
              - exec: {command: "psql -c 'VACUUM ANALYZE'"}
        """,
    )

    [playbook] = load_playbooks(path)

    assert playbook.actions == (Action("exec", command=("psql", "-c", "VACUUM ANALYZE")),)


def test_strings_are_read_as_written_not_as_yaml_numbers_or_booleans(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "book.yml",
        """\
        playbooks:
          - name: as-written
            match:
              signals: [unhealthy]
              services: [1]
              labels: {medic.enable: true, release: 1.10}
            actions:
              - exec: {command: [touch, /tmp/x], user: 1000:1000}
        """,
    )

    [playbook] = load_playbooks(path)

    assert playbook.match.services == {"1"}
    assert playbook.match.labels == {"medic.enable": "true", "release": "1.10"}
    assert playbook.actions[0].text("user") == "1000:1000"


def test_an_action_may_be_a_bare_kind_or_a_kind_with_empty_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "book.yml",
        """\
        playbooks:
          - name: start-three-ways
            match: {signals: [exited]}
            actions:
              - start
              - start:
              - start: {}
              - restart
        """,
    )

    [playbook] = load_playbooks(path)

    assert playbook.actions == (
        Action("start"),
        Action("start"),
        Action("start"),
        Action("restart"),
    )


# --- every kind of mistake names file, line and field ----------------------------------


def test_an_unknown_top_level_key_is_reported_on_its_line(tmp_path: Path) -> None:
    error = only_error(tmp_path, MINIMAL + "defualts: {}\n")

    assert error.file == str(tmp_path / "book.yml")
    assert (error.line, error.field) == (5, "defualts")
    assert error.reason == "unknown key 'defualts'; allowed keys: version, defaults, playbooks"
    assert str(error) == f"{tmp_path / 'book.yml'}:5: defualts: {error.reason}"


def test_an_unknown_key_inside_match_is_reported_on_the_key_line(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match:
              signals: [exited]
              service: [web]
            actions: [start]
        """,
    )

    assert (error.line, error.field) == (5, "playbooks[0].match.service")
    assert error.reason == (
        "unknown key 'service'; allowed keys: signals, services, labels, log, probe"
    )


def test_an_unknown_action_kind_lists_the_kinds(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [exited]}
            actions:
              - start
              - reboot: {timeout: 5s}
        """,
    )

    assert (error.line, error.field) == (6, "playbooks[0].actions[1]")
    assert error.reason == f"'reboot' is not an action; use one of: {', '.join(KINDS)}"
    assert "restart, start, stop, exec" in error.reason


def test_an_unknown_action_option_lists_the_options_of_that_kind(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [unhealthy]}
            actions:
              - start
              - restart:
                  timout: 10s
        """,
    )

    assert (error.line, error.field) == (7, "playbooks[0].actions[1].restart.timout")
    assert error.reason == "unknown key 'timout'; allowed keys: timeout"


def test_start_takes_no_options(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [exited]}
            actions:
              - start: {timeout: 10s}
        """,
    )

    assert (error.line, error.field) == (5, "playbooks[0].actions[0].start.timeout")
    assert "takes no options" in error.reason


def test_a_misspelt_signal_lists_the_signals(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match:
              signals:
                - exited
                - unhealty
            actions: [start]
        """,
    )

    assert (error.line, error.field) == (6, "playbooks[0].match.signals[1]")
    assert error.reason == (
        "'unhealty' is not a signal; use one of: "
        "unhealthy, exited, oom_killed, crash_loop, dead, log_match, probe_failed"
    )


def test_a_bad_duration_says_how_to_write_one(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [unhealthy]}
            actions:
              - restart: {timeout: 10 seconds}
        """,
    )

    assert (error.line, error.field) == (5, "playbooks[0].actions[0].restart.timeout")
    assert error.reason == "'10 seconds' is not a duration; write seconds like 30, or 30s, 5m, 1h"


def test_true_is_not_a_duration(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        MINIMAL + "    backoff:\n      reset_after: true\n",
    )

    assert (error.line, error.field) == (6, "playbooks[0].backoff.reset_after")
    assert "must be a duration" in error.reason


def test_a_missing_required_key_is_reported_where_it_belongs(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match:
              services: [web]
            actions: [start]
        """,
    )

    assert (error.line, error.field) == (4, "playbooks[0].match.signals")
    assert error.reason == "required key is missing; add e.g. signals: [unhealthy]"


def test_a_playbook_without_a_name_or_actions_is_reported_on_its_first_line(
    tmp_path: Path,
) -> None:
    errors = errors_in(
        write(
            tmp_path,
            "book.yml",
            """\
            playbooks:
              - description: nameless
                match: {signals: [exited]}
            """,
        )
    )

    assert located(errors) == [(2, "playbooks[0].name"), (2, "playbooks[0].actions")]


def test_empty_actions_are_an_error(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [exited]}
            actions: []
        """,
    )

    assert (error.line, error.field) == (4, "playbooks[0].actions")
    assert error.reason.startswith("must not be empty; list at least one item")


def test_a_signal_written_as_a_scalar_instead_of_a_list_is_a_type_error(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match:
              signals: unhealthy
            actions: [restart]
        """,
    )

    assert (error.line, error.field) == (4, "playbooks[0].match.signals")
    assert error.reason == "must be a list, like [unhealthy]; found the string 'unhealthy'"


def test_the_same_name_in_two_files_names_the_first_definition(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", MINIMAL)
    write(
        tmp_path,
        "b.yml",
        """\
        # the same playbook again

        playbooks:
          - match: {signals: [exited]}
            name: start-exited
            actions: [start]
        """,
    )

    playbooks, errors = check_paths([tmp_path])

    assert [p.source for p in playbooks] == [str(tmp_path / "a.yml")]
    [error] = errors
    assert (error.file, error.line, error.field) == (
        str(tmp_path / "b.yml"),
        5,
        "playbooks[0].name",
    )
    assert error.reason == (
        f"playbook 'start-exited' is already defined at {tmp_path / 'a.yml'}:2; rename one of them"
    )


def test_the_same_name_twice_on_one_line_is_still_a_duplicate(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks: [{name: a, match: {signals: [dead]}, actions: [start]},
                    {name: a, match: {signals: [exited]}, actions: [start]}]
        """,
    )

    assert (error.line, error.field) == (2, "playbooks[1].name")
    assert error.reason.endswith(
        f"already defined at {tmp_path / 'book.yml'}:1; rename one of them"
    )


def test_a_key_written_twice_in_one_mapping_is_an_error_not_a_silent_override(
    tmp_path: Path,
) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [exited]}
            actions: [start]
            backoff:
              initial: 10s
              max: 5m
              initial: 1s
        """,
    )

    assert (error.line, error.field) == (8, "playbooks[0].backoff.initial")
    assert error.reason == "duplicate key 'initial', already set on line 6; keep only one"


def test_a_yaml_syntax_error_is_reported_on_the_line_of_the_problem(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [exited]
            actions: [start]
        """,
    )

    assert error.field is None
    assert error.line == 4
    assert error.reason.startswith("YAML syntax error: ")


def test_an_exec_without_a_command_says_how_to_write_one(tmp_path: Path) -> None:
    errors = errors_in(
        write(
            tmp_path,
            "book.yml",
            """\
            playbooks:
              - name: a
                match: {signals: [log_match]}
                actions:
                  - exec
                  - exec: {user: root}
            """,
        )
    )

    assert located(errors) == [
        (5, "playbooks[0].actions[0]"),
        (6, "playbooks[0].actions[1].exec.command"),
    ]


def test_two_kinds_in_one_action_item_are_an_error(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [exited]}
            actions:
              - {stop: {timeout: 5s}, start: null}
        """,
    )

    assert (error.line, error.field) == (5, "playbooks[0].actions[0]")
    assert "write each action as its own list item" in error.reason


def test_a_backoff_cap_below_its_initial_delay_blames_the_field_the_playbook_set(
    tmp_path: Path,
) -> None:
    error = only_error(
        tmp_path,
        """\
        defaults:
          backoff: {initial: 1m}
        playbooks:
          - name: a
            match: {signals: [exited]}
            actions: [start]
            backoff:
              max: 30s
        """,
    )

    assert (error.line, error.field) == (8, "playbooks[0].backoff.max")
    assert error.reason == "max (30s) is less than initial (60s); make max at least 60s"


@pytest.mark.parametrize(
    ("setting", "field", "reason"),
    [
        ("backoff: {initial: 0}", "backoff.initial", "must be more than 0, not 0; write e.g. 10s"),
        ("backoff: {factor: 0.5}", "backoff.factor", "must be at least 1, not 0.5; write e.g. 2"),
        ("backoff: {factor: yes}", "backoff.factor", "must be a number like 2; found yes"),
        ("backoff: {reset_after: -1}", "backoff.reset_after", "'-1' is not a duration"),
        ("escalate: {after_attempts: 0}", "escalate.after_attempts", "must be at least 1, not 0"),
        ("escalate: {after_attempts: 2.5}", "escalate.after_attempts", "must be a whole number"),
        ("escalate: {within: 0s}", "escalate.within", "must be more than 0, not 0s"),
    ],
)
def test_backoff_and_escalate_values_out_of_range_are_reported(
    tmp_path: Path, setting: str, field: str, reason: str
) -> None:
    error = only_error(tmp_path, MINIMAL + f"    {setting}\n")

    assert (error.line, error.field) == (5, f"playbooks[0].{field}")
    assert error.reason.startswith(reason)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Restart Web", "'Restart Web' is not a valid playbook name"),
        ("-restart", "'-restart' is not a valid playbook name"),
        ("[a]", "must be a string; found a list"),
    ],
)
def test_a_playbook_name_must_be_a_plain_lowercase_word(
    tmp_path: Path, name: str, reason: str
) -> None:
    error = only_error(tmp_path, MINIMAL.replace("start-exited", name))

    assert (error.line, error.field) == (2, "playbooks[0].name")
    assert error.reason.startswith(reason)


def test_only_version_1_is_accepted(tmp_path: Path) -> None:
    error = only_error(tmp_path, "version: 2\n" + MINIMAL)

    assert (error.line, error.field) == (1, "version")
    assert error.reason.startswith("only version 1 exists; write version: 1 or leave it out")


def test_yaml_merge_keys_are_refused_with_a_pointer_to_defaults(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: a
            match: {signals: [exited]}
            actions: [start]
            backoff: &slow {initial: 1m}
          - name: b
            match: {signals: [dead]}
            actions: [start]
            backoff: {<<: *slow, max: 10m}
        """,
    )

    assert (error.line, error.field) == (9, "playbooks[1].backoff")
    assert "defaults:" in error.reason


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", None, "the file is empty"),
        ("# nothing here yet\n", None, "the file is empty"),
        ("- name: a\n", 1, "a playbook file is a mapping with a 'playbooks:' list; found a list"),
        ("version: 1\n", 1, "required key is missing"),
        ("playbooks: []\n", 1, "must not be empty"),
    ],
)
def test_a_file_without_playbooks_is_an_error(
    tmp_path: Path, text: str, line: int | None, reason: str
) -> None:
    error = only_error(tmp_path, text)

    assert error.line == line
    assert error.reason.startswith(reason)


def test_every_error_in_a_file_is_reported_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "book.yml",
        """\
        version: 1
        playbooks:
          - name: a
            match:
              signals: [unhealty]
            actions:
              - restart: {timeout: soon}
          - name: b
            match: {signals: [exited], labels: {tier: [web]}}
            actions: [reboot]
            escalate: {after_attempts: 0}
          - name: a
            match: {signals: [dead]}
            actions: [start]
        """,
    )

    playbooks, errors = check_paths([path])

    assert playbooks == []
    assert located(errors) == [
        (5, "playbooks[0].match.signals[0]"),
        (7, "playbooks[0].actions[0].restart.timeout"),
        (9, "playbooks[1].match.labels.tier"),
        (10, "playbooks[1].actions[0]"),
        (11, "playbooks[1].escalate.after_attempts"),
        (12, "playbooks[2].name"),
    ]


def test_load_playbooks_raises_with_every_error_of_every_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yml", MINIMAL.replace("[exited]", "[exitted]"))
    write(tmp_path, "b.yml", MINIMAL.replace("start]", "begin]").replace("start-", "restart-"))

    with pytest.raises(PlaybookErrors) as raised:
        load_playbooks(tmp_path)

    assert [(Path(e.file).name, e.line, e.field) for e in raised.value.errors] == [
        ("a.yml", 3, "playbooks[0].match.signals[0]"),
        ("b.yml", 4, "playbooks[0].actions[0]"),
    ]
    assert str(raised.value).startswith("2 playbook errors:\n")


def test_check_paths_keeps_the_valid_playbooks_next_to_the_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "book.yml",
        MINIMAL + "  - name: broken\n    match: {signals: [nope]}\n    actions: [start]\n",
    )

    playbooks, errors = check_paths([path])

    assert [p.name for p in playbooks] == ["start-exited"]
    assert located(errors) == [(6, "playbooks[1].match.signals[0]")]


def test_wrong_file_defaults_leave_out_every_playbook_of_that_file(tmp_path: Path) -> None:
    path = write(tmp_path, "book.yml", "defaults: {backoff: {factor: 0}}\n" + MINIMAL)

    playbooks, errors = check_paths([path])

    assert playbooks == []
    assert located(errors) == [(1, "defaults.backoff.factor")]


# --- files and folders -----------------------------------------------------------------


def test_a_folder_is_read_in_name_order_skipping_other_and_hidden_files(
    tmp_path: Path,
) -> None:
    for name in ("b.yaml", "a.yml", "c.yml", ".hidden.yml"):
        write(tmp_path, name, MINIMAL.replace("start-exited", name.strip(".").replace(".", "-")))
    write(tmp_path, "README.md", "not a playbook")
    write(tmp_path, "d.yml.bak", "not: [valid")
    (tmp_path / "sub.yml").mkdir()
    write(tmp_path / "sub.yml", "nested.yml", MINIMAL)

    playbooks = load_playbooks(tmp_path)

    assert [(p.name, Path(p.source).name) for p in playbooks] == [
        ("a-yml", "a.yml"),
        ("b-yaml", "b.yaml"),
        ("c-yml", "c.yml"),
    ]


def test_a_file_named_explicitly_may_have_any_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "playbooks.conf", MINIMAL)

    assert [p.name for p in load_playbooks(path)] == ["start-exited"]


def test_a_file_given_twice_is_read_once(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yml", MINIMAL)

    playbooks, errors = check_paths([tmp_path, path])

    assert errors == []
    assert [p.name for p in playbooks] == ["start-exited"]


def test_a_folder_without_playbook_files_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "notes.txt", "nothing")

    error = errors_in(tmp_path)[0]

    assert (error.file, error.line, error.field) == (str(tmp_path), None, None)
    assert error.reason.startswith("this folder has no *.yml or *.yaml playbook files")


def test_a_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"

    with pytest.raises(PlaybookErrors) as raised:
        load_playbooks(missing)

    [error] = raised.value.errors
    assert (error.file, error.line, error.field) == (str(missing), None, None)
    assert error.reason.startswith("no such file or folder")
    assert str(error).startswith(f"{missing}: no such file or folder")


def test_every_complete_file_shown_in_the_docs_is_valid(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "playbooks.md"
    blocks = docs.read_text().split("```yaml\n")[1:]
    files = [block.split("```")[0] for block in blocks]
    complete = [text for text in files if "\nplaybooks:" in f"\n{text}"]
    assert len(complete) >= 2

    for number, text in enumerate(complete):
        load_playbooks(write(tmp_path, f"{number}.yml", text))


# --- recreate, rebuild, cache_clear, restart_dependents ---------------------------------


def test_the_healing_actions_beyond_restart_read_into_their_actions(tmp_path: Path) -> None:
    [playbook] = load_playbooks(
        write(
            tmp_path,
            "book.yml",
            """\
            playbooks:
              - name: deep-heal
                match: {signals: [dead]}
                actions:
                  - recreate
                  - rebuild: {timeout: 20s}
                  - restart_dependents: {timeout: 5}
                  - cache_clear:
                      paths: [/var/cache/nginx/, /app/.cache//]
                      commands: ["redis-cli -n 0 FLUSHDB", [sh, -c, "rm -f /tmp/x"]]
                      user: "0"
                      restart: true
                      timeout: 3s
                  - cache_clear: {commands: [redis-cli FLUSHALL]}
            """,
        )
    )

    assert playbook.actions == (
        Action("recreate"),
        Action("rebuild", timeout=20.0),
        Action("restart_dependents", timeout=5.0),
        Action(
            "cache_clear",
            paths=("/var/cache/nginx", "/app/.cache"),
            commands=(("redis-cli", "-n", "0", "FLUSHDB"), ("sh", "-c", "rm -f /tmp/x")),
            user="0",
            restart=True,
            timeout=3.0,
        ),
        Action("cache_clear", commands=(("redis-cli", "FLUSHALL"),)),
    )
    # Frozen and hashable, so plans can be compared and kept in sets.
    assert len(set(playbook.actions)) == 5
    assert [describe(a) for a in playbook.actions] == [
        "recreate",
        "rebuild (stop timeout 20s)",
        "restart_dependents (stop timeout 5s)",
        "cache_clear 2 paths, 2 commands, then restart (stop timeout 3s)",
        "cache_clear 1 command",
    ]


def test_cache_clear_refuses_the_root_folder_system_folders_and_relative_or_empty_paths(
    tmp_path: Path,
) -> None:
    errors = errors_in(
        write(
            tmp_path,
            "book.yml",
            """\
            playbooks:
              - name: a
                match: {signals: [unhealthy]}
                actions:
                  - cache_clear:
                      paths:
                        - /
                        - //
                        - /var/cache/../..
                        - ""
                        - cache/nginx
                        - /etc
                        - /var/cache/ok
            """,
        )
    )

    field = "playbooks[0].actions[0].cache_clear.paths"
    assert located(errors) == [(line, f"{field}[{n}]") for n, line in enumerate(range(7, 13))]
    reasons = [e.reason for e in errors]
    assert reasons[0] == "'/' is the root folder; name the cache folder itself"
    assert reasons[1] == "'//' is the root folder; name the cache folder itself"
    assert reasons[2] == "'/var/cache/../..' is the root folder; name the cache folder itself"
    assert reasons[3].startswith("the path is empty")
    assert reasons[4].startswith("'cache/nginx' is not an absolute path")
    assert reasons[5].startswith("'/etc' is a system folder, not a cache")


def test_cache_clear_needs_paths_or_commands_and_a_timeout_only_with_restart(
    tmp_path: Path,
) -> None:
    errors = errors_in(
        write(
            tmp_path,
            "book.yml",
            """\
            playbooks:
              - name: a
                match: {signals: [unhealthy]}
                actions:
                  - cache_clear
                  - cache_clear: {restart: true}
                  - cache_clear: {paths: [/c], timeout: 5s}
                  - cache_clear: {paths: [/c], restart: yes please}
                  - cache_clear: {path: [/c]}
                  - cache_clear: {commands: []}
            """,
        )
    )

    assert located(errors) == [
        (5, "playbooks[0].actions[0]"),
        (6, "playbooks[0].actions[1].cache_clear"),
        (7, "playbooks[0].actions[2].cache_clear.timeout"),
        (8, "playbooks[0].actions[3].cache_clear.restart"),
        (9, "playbooks[0].actions[4].cache_clear.path"),
        # Both are true of a misspelt key: it is unknown, and nothing is left to clear.
        (9, "playbooks[0].actions[4].cache_clear"),
        (10, "playbooks[0].actions[5].cache_clear.commands"),
    ]
    reasons = [e.reason for e in errors]
    assert reasons[0].startswith("cache_clear needs paths, commands or both")
    assert reasons[2] == (
        "timeout is the stop timeout of the restart; add restart: true or remove timeout"
    )
    assert reasons[3] == "must be true or false; found the string 'yes please'"
    assert reasons[4] == (
        "unknown key 'path'; allowed keys: paths, commands, user, restart, timeout"
    )


def test_recreate_rebuild_and_restart_dependents_take_only_a_stop_timeout(tmp_path: Path) -> None:
    errors = errors_in(
        write(
            tmp_path,
            "book.yml",
            """\
            playbooks:
              - name: a
                match: {signals: [dead]}
                actions:
                  - recreate: {timeout: soon}
                  - rebuild: {no_cache: true}
                  - restart_dependents: {dependents: true}
            """,
        )
    )

    assert located(errors) == [
        (5, "playbooks[0].actions[0].recreate.timeout"),
        (6, "playbooks[0].actions[1].rebuild.no_cache"),
        (7, "playbooks[0].actions[2].restart_dependents.dependents"),
    ]
    assert errors[1].reason == "unknown key 'no_cache'; allowed keys: timeout"


def test_every_complete_file_shown_in_the_actions_docs_is_valid(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "actions.md"
    blocks = docs.read_text().split("```yaml\n")[1:]
    files = [block.split("```")[0] for block in blocks]
    complete = [text for text in files if "\nplaybooks:" in f"\n{text}"]
    assert len(complete) >= 5

    kinds: set[str] = set()
    for number, text in enumerate(complete):
        for playbook in load_playbooks(write(tmp_path, f"{number}.yml", text)):
            kinds.update(action.kind for action in playbook.actions)
    assert {
        "recreate",
        "rebuild",
        "cache_clear",
        "restart_dependents",
    } <= kinds


def test_an_invalid_regex_says_what_is_wrong_with_it_and_where(tmp_path: Path) -> None:
    error = only_error(
        tmp_path,
        """\
        playbooks:
          - name: x
            match:
              signals: [log_match]
              log: {pattern: 'too many (connections', count: 1, window: 1m}
            actions: [restart]
        """,
    )

    assert (error.line, error.field) == (5, "playbooks[0].match.log.pattern")
    assert error.reason.startswith(
        "'too many (connections' is not a regular expression: "
        "missing ), unterminated subpattern at position 9 ('(')"
    )
    # Quoting in YAML does not fix a pattern; a backslash does.
    assert "quote it in YAML" not in error.reason
    assert "\\(" in error.reason
