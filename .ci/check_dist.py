"""Check the built sdist and wheel as a new user would meet them.

Run by ``make check-dist`` after ``make dist``: the archives hold what they must (and
no tests), then the wheel goes into a fresh virtualenv with no extras, where
``llm plugins`` must list the plugin and ``llm async-attachments status`` must work;
then the install line the README gives (``llm install dist/...whl``) is run too. Last,
installing never downgrades: into an environment that already has llm 0.36, encode's
httpx 0.29 and llm-gemini (a plugin that pulls in the newest HTTP stack), the wheel goes
in and pip changes no installed distribution, only adds.
Usage: python .ci/check_dist.py [DIST_DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME, VERSION = PROJECT["name"], PROJECT["version"]
STEM = f"{NAME.replace('-', '_')}-{VERSION}"


def fail(message: str) -> None:
    sys.exit(f"check-dist: {message}")


def check_wheel(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    print(f"{wheel.name}:")
    for name in sorted(names):
        print(f"  {name}")
    required = [
        "llm_async_attachments/__init__.py",
        "llm_async_attachments/py.typed",
        "llm_async_attachments/testing/__init__.py",
        f"{STEM}.dist-info/licenses/LICENSE",
        f"{STEM}.dist-info/entry_points.txt",
        f"{STEM}.dist-info/METADATA",
    ]
    missing = [name for name in required if name not in names]
    if missing:
        fail(f"the wheel lacks {missing}")
    stray = [name for name in names if not name.startswith(("llm_async_attachments/", STEM))]
    if stray:
        fail(f"the wheel holds files outside the package: {stray}")
    entry_points = zipfile.ZipFile(wheel).read(f"{STEM}.dist-info/entry_points.txt").decode()
    for line in ("[llm]", "async_attachments = llm_async_attachments.plugin"):
        if line not in entry_points:
            fail(f"entry_points.txt lacks {line!r}:\n{entry_points}")
    metadata = zipfile.ZipFile(wheel).read(f"{STEM}.dist-info/METADATA").decode()
    for line in ("License-Expression: Apache-2.0", "License-File: LICENSE"):
        if line not in metadata.splitlines():
            fail(f"METADATA lacks {line!r}")


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"{STEM}/") for name in archive.getnames()}
    print(f"{sdist.name}: {len(names)} entries")
    for name in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/support/__init__.py",
        "docs/index.md",
    ):
        if name not in names:
            fail(f"the sdist lacks {name}")
    if "llm_async_attachments/py.typed" not in names:
        fail("the sdist lacks llm_async_attachments/py.typed")


def run(command: list[str], cwd: Path, env: dict[str, str], *, echo: bool = True) -> str:
    print("$", Path(command[0]).name, *command[1:])
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if echo or result.returncode != 0:
        print(result.stdout, end="")
        print(result.stderr, end="", file=sys.stderr)
    if result.returncode != 0:
        fail(f"{' '.join(command)} exited with {result.returncode}")
    return result.stdout


def check_install(wheel: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="check-dist-") as scratch:
        where = Path(scratch)
        venv.create(where / "venv", with_pip=True)
        bin_dir = where / "venv" / "bin"
        # Nothing from this checkout or the caller's environment may leak in.
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "VIRTUAL_ENV") and not key.startswith("LLM_")
        }
        env |= {"LLM_USER_PATH": str(where / "llm-user"), "PATH": f"{bin_dir}:{env['PATH']}"}
        pip = [str(bin_dir / "python"), "-m", "pip", "--quiet"]
        run([*pip, "install", str(wheel)], where, env, echo=False)
        check_plugins(run([str(bin_dir / "llm"), "plugins"], where, env))
        status = run([str(bin_dir / "llm"), "async-attachments", "status"], where, env)
        for text in ("Async models (", "\nLimits:\n", "\nGuard: raise"):
            if text not in status:
                fail(f"llm async-attachments status printed no {text!r}")
        # The README's line for a built wheel, into the same environment.
        run([*pip, "uninstall", "--yes", NAME], where, env)
        run([str(bin_dir / "llm"), "install", str(wheel)], where, env, echo=False)
        check_plugins(run([str(bin_dir / "llm"), "plugins"], where, env))


# An llm environment as a user of other plugins has it: the newest releases these allow.
EXISTING = ["llm==0.36", "httpx==0.29.0", "llm-gemini"]


def check_no_downgrade(wheel: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="check-dist-") as scratch:
        where = Path(scratch)
        venv.create(where / "venv", with_pip=True)
        python = str(where / "venv" / "bin" / "python")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        run([python, "-m", "pip", "install", "--quiet", *EXISTING], where, env, echo=False)
        before = installed(python, where, env)
        run([python, "-m", "pip", "install", "--quiet", str(wheel)], where, env, echo=False)
        after = installed(python, where, env)
        changed = {name: (version, after.get(name)) for name, version in before.items()}
        changed = {name: pair for name, pair in changed.items() if pair[0] != pair[1]}
        if changed:
            fail(f"installing the wheel changed installed distributions: {changed}")
        added = sorted(f"{name}=={after[name]}" for name in after.keys() - before.keys())
        print(f"installed beside {' '.join(EXISTING)}: changed nothing, added {added}")


def installed(python: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    listing = run([python, "-m", "pip", "list", "--format=json"], cwd, env, echo=False)
    return {entry["name"].lower(): entry["version"] for entry in json.loads(listing)}


def check_plugins(output: str) -> None:
    plugins = {plugin["name"]: plugin for plugin in json.loads(output)}
    if NAME not in plugins:
        fail(f"llm plugins does not list {NAME}: {sorted(plugins)}")
    if plugins[NAME].get("version") != VERSION:
        fail(f"llm plugins lists {NAME} {plugins[NAME].get('version')}, not {VERSION}")


def main() -> None:
    dist = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "dist").resolve()
    wheel = dist / f"{STEM}-py3-none-any.whl"
    sdist = dist / f"{STEM}.tar.gz"
    for path in (wheel, sdist):
        if not path.is_file():
            fail(f"{path} is missing: run make dist")
    check_wheel(wheel)
    check_sdist(sdist)
    check_install(wheel)
    check_no_downgrade(wheel)
    print(f"check-dist: {wheel.name} and {sdist.name} are good")


if __name__ == "__main__":
    main()
