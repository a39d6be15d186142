"""agent/errors.py draws every error class medic defines; this holds the drawing to the code.

Each line of the drawing names one class, indented under the class it derives from,
with its module in a last column when that is not agent/errors.py, and
``(temporary)`` when it is a TemporaryError. Every module under agent/ is imported,
every MedicError subclass they define is collected, and each must be drawn once, in
its place. The exceptions outside the tree are named in the prose after it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import agent
import agent.errors
from agent.errors import MedicError, TemporaryError

#: One line of the drawing: the branches, the name, a note, and maybe a module column.
LINE = re.compile(r"^(?P<lead>(?:│   |    )*)(?P<branch>[├└]── )?(?P<name>\w+)(?P<rest>.*)$")
REST = re.compile(r"^(?:\s+(?P<note>.*?))?(?:\s{2,}(?P<module>[a-z_]+(?:\.[a-z_]+)*))?\s*$")


@dataclass(frozen=True)
class Drawn:
    name: str
    parent: str | None
    note: str
    module: str | None


def drawing(doc: str, root: str) -> Iterator[Drawn | str]:
    """The drawn classes, from the line naming ``root`` to the next blank line; a line
    that names no class is yielded as it is, for the caller to report."""
    lines = doc.splitlines()
    start = lines.index(f"    {root}")
    parents: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            return
        found = LINE.match(line[4:])
        rest = REST.match(found["rest"]) if found else None
        if found is None or rest is None:
            yield line
            continue
        depth = len(found["lead"]) // 4 + (1 if found["branch"] else 0)
        if depth > len(parents) or (depth == 0 and parents):
            yield line
            continue
        del parents[depth:]
        yield Drawn(
            found["name"], parents[-1] if parents else None, rest["note"] or "", rest["module"]
        )
        parents.append(found["name"])


def mismatches(
    doc: str, classes: Iterable[type[BaseException]], *, root: type, temporary: type, home: str
) -> list[str]:
    """Where the drawing in ``doc`` and ``classes`` (every subclass of ``root``) disagree."""
    classes = list(classes)
    by_name = {cls.__name__: cls for cls in classes}
    names = Counter(cls.__name__ for cls in classes)
    problems = [f"two classes are called {name}" for name, n in names.items() if n > 1]
    entries = list(drawing(doc, root.__name__))
    problems += [f"cannot read the line {e!r}" for e in entries if isinstance(e, str)]
    drawn = [e for e in entries if isinstance(e, Drawn)]
    counts = Counter(d.name for d in drawn)
    problems += [f"{name} is drawn {n} times" for name, n in counts.items() if n > 1]
    problems += [f"{name} is not drawn" for name in sorted(set(by_name) - set(counts))]
    problems += [
        f"{name} is drawn but defined nowhere" for name in sorted(set(counts) - set(by_name))
    ]
    for line in drawn:
        cls = by_name.get(line.name)
        if cls is None:
            continue
        if line.parent is None:
            if cls is not root:
                problems.append(f"{line.name} is drawn as the root")
        elif by_name.get(line.parent) not in cls.__bases__:
            bases = ", ".join(base.__name__ for base in cls.__bases__)
            problems.append(f"{line.name} is drawn under {line.parent} but derives from {bases}")
        module = None if cls.__module__ == home else cls.__module__.removeprefix("agent.")
        if line.module != module:
            problems.append(f"{line.name} is drawn in {line.module} but lives in {cls.__module__}")
        is_temporary = issubclass(cls, temporary) and cls is not temporary
        if ("(temporary)" in line.note) != is_temporary:
            problems.append(f"{line.name} is {'' if is_temporary else 'not '}temporary")
    return problems


def import_every_module() -> None:
    for module in pkgutil.walk_packages(agent.__path__, "agent."):
        if not module.name.endswith(".__main__"):  # that one runs the command line
            importlib.import_module(module.name)


def defined_in_agent(base: type[BaseException]) -> set[type[BaseException]]:
    """``base`` and every subclass of it that a module under agent/ defines."""
    found: set[type[BaseException]] = set()
    todo = [base]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return {cls for cls in found if cls.__module__.split(".")[0] == "agent"}


def test_the_error_tree_draws_every_medic_error_once_under_its_parent() -> None:
    import_every_module()
    classes = defined_in_agent(MedicError)
    doc = agent.errors.__doc__ or ""
    found = mismatches(doc, classes, root=MedicError, temporary=TemporaryError, home="agent.errors")
    assert found == []


def test_the_exceptions_outside_the_tree_are_named_with_their_module() -> None:
    import_every_module()
    outside = defined_in_agent(Exception) - defined_in_agent(MedicError)
    doc = " ".join((agent.errors.__doc__ or "").split())
    missing = sorted(
        f"{cls.__name__} ({cls.__module__})"
        for cls in outside
        if f"``{cls.__name__}`` ({cls.__module__.removeprefix('agent.')})" not in doc
    )
    assert missing == []


# --- the check fails where it should: a small tree of its own ------------------------------


class Root(Exception):
    pass


class Temporary(Root):
    pass


class Engine(Root):
    pass


class EngineAway(Engine, Temporary):
    pass


class Lost(Engine):
    pass


class Added(Engine):
    pass


SYNTHETIC = [Root, Temporary, Engine, EngineAway, Lost]

GOOD = """A tree::

    Root
    ├── Temporary               the mixin
    └── Engine                  the engine failed
        ├── EngineAway          it does not answer (temporary)
        └── Lost                it is gone

More prose.
"""


def check(doc: str, classes: Iterable[type[BaseException]]) -> list[str]:
    return mismatches(doc, classes, root=Root, temporary=Temporary, home=__name__)


def test_a_true_drawing_passes() -> None:
    assert check(GOOD, SYNTHETIC) == []


def test_a_class_without_a_line_fails() -> None:
    assert check(GOOD, [*SYNTHETIC, Added]) == ["Added is not drawn"]


def test_a_class_under_the_wrong_parent_fails() -> None:
    wrong = GOOD.replace(
        "    └── Engine                  the engine failed\n"
        "        ├── EngineAway          it does not answer (temporary)\n"
        "        └── Lost                it is gone\n",
        "    │   └── Lost                it is gone\n"
        "    └── Engine                  the engine failed\n"
        "        └── EngineAway          it does not answer (temporary)\n",
    )
    assert wrong != GOOD
    assert check(wrong, SYNTHETIC) == ["Lost is drawn under Temporary but derives from Engine"]


def test_a_class_drawn_twice_or_not_at_all_or_in_the_wrong_module_fails() -> None:
    twice = GOOD.replace(
        "        └── Lost", "        ├── Lost                again\n        └── Lost"
    )
    assert check(twice, SYNTHETIC) == ["Lost is drawn 2 times"]
    stale = GOOD.replace("└── Lost", "└── Gone")
    assert check(stale, SYNTHETIC) == ["Lost is not drawn", "Gone is drawn but defined nowhere"]
    elsewhere = GOOD.replace("it is gone", "it is gone                  store.base")
    assert check(elsewhere, SYNTHETIC) == [f"Lost is drawn in store.base but lives in {__name__}"]
    calm = GOOD.replace(" (temporary)", "")
    assert check(calm, SYNTHETIC) == ["EngineAway is temporary"]
