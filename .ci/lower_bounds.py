"""Print pyproject.toml's runtime dependencies pinned to their lower bounds, as pip constraints.

``make test-oldest`` installs with these, so every ``>=`` in ``[project.dependencies]``,
and in the extras that add a runtime feature (:data:`RUNTIME_EXTRAS`: ``redis``, the
fleet tier), is a version the test suite has run on. A dependency without a lower bound is an error:
an untested floor is a guess. With ``--check``, exit 1 unless the running Python has
exactly those versions installed (run by ``make test-oldest`` before the suite).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
_LOWER = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


RUNTIME_EXTRAS = ("redis",)


def lower_bounds(pyproject: Path = PYPROJECT) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    dependencies = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        dependencies += project["optional-dependencies"][extra]
    pins = []
    for requirement in dependencies:
        match = _LOWER.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: {requirement!r} has no '>=' lower bound")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


def check() -> None:
    from importlib.metadata import version

    from packaging.version import Version  # pytest's dependency, in every test venv

    wrong = []
    for pin in lower_bounds():
        name, _, wanted = pin.partition("==")
        if Version(version(name)) != Version(wanted):
            wrong.append(f"{name} {version(name)} (wanted {wanted})")
    if wrong:
        raise SystemExit("not at the lower bounds: " + ", ".join(wrong))
    print("at the lower bounds:", " ".join(lower_bounds()))


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        check()
    else:
        sys.stdout.write("".join(f"{pin}\n" for pin in lower_bounds()))
