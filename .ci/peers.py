"""Run other llm plugins' own test suites with and without llm-async-attachments.

llm loads every installed plugin into one process, and this package hooks
``register_models`` and patches ``llm.Attachment``: what it does can break another
plugin that was never written with it in mind (an earlier default did break
llm-all-models-async). So for each peer in PEERS, pinned to an exact release, this
downloads its source distribution from PyPI, which carries its tests, and runs
that suite twice, in two virtualenvs that differ only by this package:

* without us: llm, the peer and what its tests need (from the sdist's own
  pyproject.toml), every package at the version .ci/peers/pins.json gives;
* with us: the same, then ``pip install -e`` of this checkout; llm must really
  load our plugin in that run (.ci/peers/peers_probe.py reports what it loaded).

Outcomes are compared per test id (from pytest's JUnit XML). A test that passes or
is skipped without us and fails, errors or is missing with us is a regression. So
is a baseline that fails a test or passes none: a suite that did not run is not a
pass. Any of these makes the exit status non-zero.

The suites run offline: each pytest process runs in a network namespace of its
own (``unshare --net``) where loopback is the only interface, with ``HOME`` and
``LLM_USER_PATH`` in a temporary directory and none of the caller's environment
but PATH and the locale (no API key, no LLM_ASYNC_ATTACHMENTS_* setting); the
peers' own cassettes and mocks answer for the APIs, and their tests that need
what the sdist does not ship are deselected (docs/peers.md says which and why).
Only pip reaches the network, and only PyPI. Virtualenvs and sdists are cached in
.venv-peers/ and rebuilt when a pin or our pyproject.toml changes; ``--freeze``
resolves the peers afresh and rewrites their pins.

Usage: python3.11 .ci/peers.py [PEER ...]   (make test-peers runs them all)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "peers"
# Per peer, the version of every package its baseline installs (written by --freeze).
PINS = DATA / "pins.json"
CACHE = ROOT / ".venv-peers"
OURS = "llm-async-attachments"
LLM = "llm==0.36"
WORKERS = 2  # peers set up and run at once
SUITE_TIMEOUT = 600  # seconds for one pytest run
PASSING = frozenset({"passed", "skipped"})
# pytest-recording's tests that replay cassettes the sdist does not ship.
NO_CASSETTES = ("-m", "not vcr", "--record-mode=none")


@dataclass(frozen=True)
class Peer:
    """A plugin whose sdist ships a test suite that passes offline on its own."""

    name: str
    version: str
    extra: str | None = None  # the [project.optional-dependencies] its tests need
    group: str | None = None  # or the [dependency-groups] entry in its sdist
    args: tuple[str, ...] = ()  # pytest arguments after "tests", in the unpacked sdist

    @property
    def pin(self) -> str:
        extra = f"[{self.extra}]" if self.extra else ""
        return f"{self.name}{extra}=={self.version}"


MISTRAL_DESELECT = tuple(
    f"--deselect=tests/{test}"
    for test in (
        # They read tests/fixtures/, which is not in the sdist.
        "test_reasoning_audit.py::test_recorded_magistral_response",
        "test_reasoning_audit.py::test_recorded_magistral_thinking_is_preserved",
        "test_reasoning_audit.py::test_streamed_reasoning_is_not_split_on_closed_flag",
        # Fails on its own: it expects httpx2-pytest to mock without its fixture.
        "test_httpx2_mock.py::test_unmocked_httpx2_requests_cannot_use_network",
    )
)
# Each is the newest release of that plugin, run against LLM. docs/peers.md lists
# them, what each one deselects, and the plugins left out and why.
PEERS = (
    Peer("llm-all-models-async", "0.1", group="dev"),
    Peer("llm-mistral", "0.16", group="dev", args=MISTRAL_DESELECT),
    Peer("llm-echo", "0.5", group="dev"),
    Peer("llm-markov", "0.1", extra="test"),
    Peer("llm-gemini", "0.35", group="dev", args=NO_CASSETTES),
    Peer("llm-anthropic", "0.30", group="dev", args=NO_CASSETTES),
    Peer("llm-openrouter", "0.7.1", group="dev", args=NO_CASSETTES),
    Peer("llm-openai-plugin", "0.7", extra="test", args=NO_CASSETTES),
    Peer("llm-perplexity", "2026.9.1", group="dev", args=("--record-mode=none",)),
    Peer("llm-deepseek", "0.1.6", extra="test"),
)


@dataclass(frozen=True)
class Run:
    """One pytest run of a peer's suite."""

    outcomes: dict[str, str]  # test id: passed, failed or skipped
    plugins: list[str]  # the llm plugins loaded in that process
    packages: dict[str, str]  # what the virtualenv had installed
    exit_code: int
    seconds: float
    log: Path

    def counts(self) -> str:
        counts = Counter(self.outcomes.values())
        return f"{counts['passed']:4d} {counts['failed']:4d} {counts['skipped']:4d}"


def pip(venv: Path, *args: str) -> list[str]:
    """This Python's pip, acting on ``venv`` (whose own pip is not needed)."""
    return [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args]


def setup_step(cmd: list[str], what: str) -> None:
    """Run a setup command, showing its output only if it fails."""
    CACHE.mkdir(exist_ok=True)
    done = subprocess.run(cmd, cwd=CACHE, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {' '.join(cmd)}\n{done.stdout}{done.stderr}")


def fetch_sdist(peer: Peer) -> Path:
    """The peer's source distribution from PyPI (cached), the one with its tests."""
    folder = CACHE / "sdists" / f"{peer.name}-{peer.version}"
    if not folder.is_dir():
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        download += ["--no-binary", ":all:", "--dest", str(folder)]
        setup_step([*download, f"{peer.name}=={peer.version}"], f"downloading {peer.name}")
    (sdist,) = folder.glob("*.tar.gz")
    return sdist


def unpack(sdist: Path, into: Path) -> Path:
    """Unpack ``sdist`` into ``into``; return its top folder."""
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data")
    (top,) = into.iterdir()
    return top


def group_requirements(pyproject: dict[str, object], group: str) -> list[str]:
    """A PEP 735 dependency group, its ``include-group`` entries expanded."""
    groups = pyproject.get("dependency-groups")
    if not isinstance(groups, dict) or group not in groups:
        raise RuntimeError(f"no dependency group {group!r} in the sdist's pyproject.toml")
    found: list[str] = []
    for item in groups[group]:
        if isinstance(item, dict):
            found += group_requirements(pyproject, item["include-group"])
        else:
            found.append(item)
    return found


def requirements(peer: Peer, sdist: Path) -> list[str]:
    """What both of the peer's virtualenvs get: llm, the peer, what its tests need."""
    wanted = [LLM, peer.pin]
    if peer.group:
        with tempfile.TemporaryDirectory() as tmp:
            pyproject = tomllib.loads((unpack(sdist, Path(tmp)) / "pyproject.toml").read_text())
        wanted += group_requirements(pyproject, peer.group)
    return wanted


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_venv(folder: Path, wanted: list[str], pins: dict[str, str], with_us: bool) -> Path:
    """A virtualenv with ``wanted`` at ``pins``, plus this checkout (editable, and
    free to move what it needs off its pins) if ``with_us``; kept while what it was
    built from is unchanged."""
    stamp: dict[str, object] = {"python": sys.version, "requirements": wanted, "pins": pins}
    if with_us:
        stamp["ours"] = [str(ROOT), digest(ROOT / "pyproject.toml")]
    stamp_file = folder / "peers-stamp.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    setup_step([sys.executable, "-m", "venv", "--without-pip", str(folder)], f"making {folder}")
    constraints = folder / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    install = pip(folder, "install", "--quiet", "--no-compile")
    setup_step([*install, "--constraint", str(constraints), *wanted], f"installing {wanted}")
    if with_us:
        setup_step([*install, "--editable", str(ROOT)], f"installing {OURS} from {ROOT}")
    stamp_file.write_text(json.dumps(stamp))
    return folder


def installed(venv: Path) -> dict[str, str]:
    """Name and version of every distribution in ``venv``."""
    code = "import importlib.metadata as m, json\n"
    code += "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    python = [str(venv / "bin" / "python"), "-I", "-c", code]  # -I: not the current folder
    listed = subprocess.run(python, capture_output=True, text=True, check=True)
    packages: dict[str, str] = json.loads(listed.stdout)
    return packages


def offline(cmd: list[str]) -> list[str]:
    """``cmd`` in a network namespace of its own (mapping root if we are not root)."""
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
    return [*unshare, sys.executable, __file__, "--exec-offline", *cmd]


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = "16sH22x"  # struct ifreq: an interface's name, then its flags


def exec_offline(cmd: list[str]) -> None:
    """In the new namespace: bring loopback up, check it is the only interface,
    and become ``cmd``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _, flags = struct.unpack(
            IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0))
        )
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        sys.exit(f"peers: the network namespace has {interfaces}, not loopback alone")
    os.execv(cmd[0], cmd)


def suite_env(venv: Path, scratch: Path, probe_out: Path) -> dict[str, str]:
    """A clean environment: no API key, no LLM_ASYNC_ATTACHMENTS_* setting."""
    env = {key: os.environ[key] for key in ("LANG", "LC_ALL", "TERM") if key in os.environ}
    return env | {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(scratch / "home"),
        "LLM_USER_PATH": str(scratch / "llm"),
        "PYTHONPATH": str(DATA),  # for -p peers_probe
        "PEERS_PROBE_OUT": str(probe_out),
    }


def parse_junit(path: Path) -> dict[str, str]:
    """Outcome per test id from pytest's JUnit XML: passed, failed or skipped (an
    error, in setup, teardown or collection, counts as failed)."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            outcomes[test_id] = "failed"
        else:
            outcomes.setdefault(test_id, "skipped" if "skipped" in tags else "passed")
    return outcomes


def run_suite(peer: Peer, sdist: Path, venv: Path, label: str) -> Run:
    """Run the peer's suite offline, in a fresh copy of its sdist."""
    log = CACHE / "logs" / f"{peer.name}-{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"peers-{peer.name}-") as tmp:
        scratch = Path(tmp)
        source = unpack(sdist, scratch / "src")
        for folder in ("home", "llm"):
            (scratch / folder).mkdir()
        junit, probe = scratch / "junit.xml", scratch / "plugins.json"
        cmd = [str(venv / "bin" / "pytest"), "-p", "no:cacheprovider", "-p", "peers_probe"]
        cmd += ["-rA", f"--junitxml={junit}", "tests", *peer.args]
        with log.open("w") as out:
            code = subprocess.run(
                offline(cmd),
                cwd=source,
                env=suite_env(venv, scratch, probe),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=SUITE_TIMEOUT,
                check=False,
            ).returncode
        outcomes = parse_junit(junit) if junit.is_file() else {}
        plugins = json.loads(probe.read_text()) if probe.is_file() else []
    return Run(outcomes, plugins, installed(venv), code, time.monotonic() - started, log)


def problems(base: Run, ours: Run) -> list[str]:
    """Why this peer fails the check; empty if it passes."""
    found = [
        f"pytest {label} exited {run.exit_code} (see {run.log})"
        for label, run in (("without us", base), ("with us", ours))
        if run.exit_code not in (0, 1)
    ]
    if "passed" not in base.outcomes.values():
        found.append(f"no test passed without us (see {base.log})")
    found += [
        f"{test_id} fails without us (see {base.log})"
        for test_id, outcome in sorted(base.outcomes.items())
        if outcome == "failed"
    ]
    if OURS in base.plugins:
        found.append(f"{OURS} was loaded in the run without us")
    if OURS not in ours.plugins:
        found.append(f"llm did not load {OURS} in the run with us (it loaded {ours.plugins})")
    found += [
        f"{test_id}: {base.outcomes[test_id]} without us, {outcome} with us (see {ours.log})"
        for test_id, outcome in changes(base, ours)
        if base.outcomes.get(test_id) in PASSING and outcome not in PASSING
    ]
    return found


def changes(base: Run, ours: Run) -> list[tuple[str, str]]:
    """Each test whose outcome differs with us, and its outcome with us."""
    return [
        (test_id, ours.outcomes.get(test_id, "missing"))
        for test_id in sorted(base.outcomes.keys() | ours.outcomes.keys())
        if base.outcomes.get(test_id) != ours.outcomes.get(test_id)
    ]


def package_changes(base: Run, ours: Run) -> str:
    """What installing us added to or changed in the peer's virtualenv."""
    added = [
        f"{name}=={version}"
        if name not in base.packages
        else f"{name} {base.packages[name]}->{version}"
        for name, version in sorted(ours.packages.items())
        if base.packages.get(name) != version
    ]
    return ", ".join(added)


@dataclass(frozen=True)
class Result:
    peer: Peer
    row: str
    notes: list[str]
    problems: list[str]


def check_peer(peer: Peer) -> Result:
    """Set up, run both ways and compare one peer."""
    started = time.monotonic()
    try:
        sdist = fetch_sdist(peer)
        wanted, pins = requirements(peer, sdist), load_pins().get(peer.name, {})
        venvs = CACHE / peer.name
        base_venv = ensure_venv(venvs / "without", wanted, pins, with_us=False)
        base = run_suite(peer, sdist, base_venv, "without")
        ours_venv = ensure_venv(venvs / "with", wanted, pins, with_us=True)
        ours = run_suite(peer, sdist, ours_venv, "with")
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as error:
        row = f"{peer.name:22} {peer.version:9} {'(not run)':50} FAIL"
        return Result(peer, row, [], [f"setting up or running failed: {error}"])
    found = problems(base, ours)
    notes = [f"installing us added or changed {package_changes(base, ours)}"]
    if not pins:
        notes.append(f"not pinned in {PINS.name}: python3.11 .ci/peers.py --freeze {peer.name}")
    notes += [
        f"{test_id}: {base.outcomes.get(test_id, 'missing')} without us, {now} with us"
        for test_id, now in changes(base, ours)
    ]
    row = f"{peer.name:22} {peer.version:9} {base.counts()}   {ours.counts()}"
    row += f"  {time.monotonic() - started:6.1f} s {base.seconds + ours.seconds:6.1f} s"
    row += f"  {'FAIL' if found else 'ok'}"
    return Result(peer, row, notes, found)


def load_pins() -> dict[str, dict[str, str]]:
    pins: dict[str, dict[str, str]] = json.loads(PINS.read_text()) if PINS.is_file() else {}
    return pins


def freeze(chosen: list[Peer]) -> None:
    """Resolve each peer's baseline afresh, unpinned, and pin all it installed."""
    pins = load_pins()
    for peer in chosen:
        sdist = fetch_sdist(peer)
        venv = ensure_venv(CACHE / peer.name / "without", requirements(peer, sdist), {}, False)
        pins[peer.name] = {n: v for n, v in sorted(installed(venv).items()) if n != OURS}
        print(f"{peer.name}: {len(pins[peer.name])} packages pinned", flush=True)
    PINS.write_text(json.dumps(dict(sorted(pins.items())), indent=1) + "\n")


HEADER = f"{'peer':22} {'version':9} {'without us':14}   {'with us':14}  {'all':>8} {'tests':>8}"
SUBHEADER = f"{'':32} pass fail skip   pass fail skip"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peers", nargs="*", help="only these peers (default: all)")
    parser.add_argument("--freeze", action="store_true", help=f"rewrite their pins in {PINS}")
    parser.add_argument("--exec-offline", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.exec_offline:
        exec_offline(args.exec_offline)
    if unknown := set(args.peers) - {peer.name for peer in PEERS}:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    chosen = [peer for peer in PEERS if not args.peers or peer.name in args.peers]
    if args.freeze:
        freeze(chosen)
        return 0
    started = time.monotonic()
    print(f"Peers' test suites offline, without and with {OURS} ({LLM})", flush=True)
    results = []
    with ThreadPoolExecutor(WORKERS) as pool:
        for result in pool.map(check_peer, chosen):
            print(result.row, *(f"    {note}" for note in result.notes), sep="\n", flush=True)
            results.append(result)
    print("", HEADER, SUBHEADER, *(result.row for result in results), sep="\n")
    print(f"{len(chosen)} peers in {time.monotonic() - started:.1f} s; logs in {CACHE / 'logs'}")
    failures = [
        f"{result.peer.name}: {problem}" for result in results for problem in result.problems
    ]
    for failure in failures:
        print(f"FAILED {failure}")
    failed = sum(1 for result in results if result.problems)
    print(f"peers: {len(results) - failed} passed, {failed} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
