"""Shared fixtures. Tests never touch the network or the repository's own course runtime (they
grade in temporary folders); the browser test only leaves its screenshots in runtime/test-output/
(where it and tests/test_lab.py also keep a course while they run: a student's lab is rooted at
the repository and must find the student's folder below it).

Tests that need a program beyond Python carry a marker (needs_bwrap, needs_chromium,
needs_postgres; needs_root for tests acting as a second Unix user). Before such a test runs, the
program itself is tried (not dpkg's list: a package can be installed and its binary unusable,
e.g. bubblewrap without user namespaces). When it does not work the test skips, and the session
ends with one line naming what was not tested and the command that installs it; under CI
(CI=true) the test fails instead, since CI installs them all (.ci/system-packages)."""
from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent
UNDER_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
CHROMIUM = Path(os.environ.get("GANKIT_CHROMIUM", "/usr/bin/chromium"))

# Kernels started by nbgrader/papermill, and nbgrader's own `alembic` call, must come from the
# interpreter running the tests (the project's .venv), whatever PATH the caller had.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def course_runtime(tmp_path, monkeypatch):
    """A fresh course runtime folder (gradebook, exchange, release, ...) for one test."""
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(runtime))
    from grading.course import load_course
    return load_course()


@pytest.fixture
def grant_traverse(capsys):
    """``grant(path)``: let other users pass through every folder above ``path`` (o+x only, no
    listing) where they cannot yet, e.g. /root holding pyenv's Python, or a fresh clone under a
    0700 mktemp folder; for tests that run a process as another uid (needs_root). The old modes
    are restored when the test ends."""
    undo: list[tuple[Path, int]] = []

    def grant(path) -> None:
        for folder in reversed(Path(path).resolve().parents):
            mode = stat.S_IMODE(folder.stat().st_mode)
            if not mode & stat.S_IXOTH:
                undo.append((folder, mode))
                os.chmod(folder, mode | stat.S_IXOTH)
                with capsys.disabled():
                    print(f"\n[o+x until the test ends] {folder}")

    try:
        yield grant
    finally:
        for folder, mode in reversed(undo):
            os.chmod(folder, mode)


def _version_problem(program: Path) -> str | None:
    """Why `PROGRAM --version` does not run here, or None when it does."""
    if not (program.is_file() and os.access(program, os.X_OK)):
        return f"{program} is not an executable file"
    try:
        probe = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{program} --version failed: {err}"
    if probe.returncode != 0:
        return f"{program} --version failed ({probe.stderr.strip()[-300:] or f'exit {probe.returncode}'})"
    return None


def postgres_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres (on PATH, or Debian's), or None."""
    initdb = shutil.which("initdb")
    if initdb:   # /usr/local/bin/initdb may be a link: pg_ctl and postgres sit beside its target
        folder = Path(initdb).resolve().parent
        if (folder / "pg_ctl").exists() and (folder / "postgres").exists():
            return folder
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    for folder in sorted(versions, key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                         reverse=True):
        if all((Path(folder) / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _bwrap_problem() -> str | None:
    from grading.sandbox import SandboxError, check_sandbox

    try:
        check_sandbox()   # runs bwrap once: installed is not enough, it must make a sandbox here
    except SandboxError as err:
        return str(err)
    return None


def _chromium_problem() -> str | None:
    return _version_problem(CHROMIUM)


def _postgres_problem() -> str | None:
    if os.environ.get("GANKIT_TEST_POSTGRES_URL"):
        return None
    folder = postgres_bin()
    if folder is None:
        return "no PostgreSQL server: set GANKIT_TEST_POSTGRES_URL, or install PostgreSQL (initdb, pg_ctl)"
    if os.geteuid() == 0 and not (shutil.which("runuser") or shutil.which("setpriv")):
        return "running as root without runuser or setpriv: initdb refuses to run as root"
    return _version_problem(folder / "initdb")


def _root_problem() -> str | None:
    if os.geteuid() != 0:
        return "not running as root: a test that acts as a second Unix user (another server's student) needs root"
    return None


@dataclass(frozen=True)
class SystemRequirement:
    packages: str          # the Debian packages that provide it
    untested: str          # what goes untested without it
    problem: Callable[[], str | None]
    remedy: str = ""       # what to do instead of installing packages, when that is not the fix


REQUIREMENTS = {
    "needs_bwrap": SystemRequirement("bubblewrap", "sandboxed grading", _bwrap_problem),
    "needs_chromium": SystemRequirement("chromium chromium-driver", "JupyterLab in a browser", _chromium_problem),
    "needs_postgres": SystemRequirement("postgresql", "the PostgreSQL gradebook", _postgres_problem),
    "needs_root": SystemRequirement("", "two servers' users on one exchange", _root_problem,
                                    remedy="run the tests as root (a container, or sudo) to include them"),
}
_problems: dict[str, str | None] = {}          # marker: why it is unusable (None: usable), probed once
_not_tested: dict[str, list[str]] = {}         # marker: the tests skipped for it


def _problem(marker: str) -> str | None:
    if marker not in _problems:
        _problems[marker] = REQUIREMENTS[marker].problem()
    return _problems[marker]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Skip (under CI: fail) a test whose system requirement is unusable, before its fixtures run."""
    for marker in dict.fromkeys(m.name for m in item.iter_markers() if m.name in REQUIREMENTS):
        problem = _problem(marker)
        if problem is None:
            continue
        if UNDER_CI:
            need = REQUIREMENTS[marker]
            fix = need.remedy or f"{need.packages} must work: .ci/system-packages installs it"
            pytest.fail(f"{problem} (CI is set, so {fix})", pytrace=False)
        _not_tested.setdefault(marker, []).append(item.nodeid)
        pytest.skip(f"{marker}: {problem}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)   # outermost: after the -ra list
def pytest_terminal_summary(terminalreporter):
    """One line: what this machine did not test, and how to install what it lacks (after -ra's list)."""
    yield
    if not _not_tested:
        return
    parts = [f"{REQUIREMENTS[m].untested} ({len(ids)} test{'s' if len(ids) > 1 else ''}, {REQUIREMENTS[m].packages})"
             for m, ids in _not_tested.items()]
    packages = " ".join(REQUIREMENTS[m].packages for m in _not_tested if REQUIREMENTS[m].packages)
    remedies = "".join(f"; {REQUIREMENTS[m].remedy}" for m in _not_tested if REQUIREMENTS[m].remedy)
    install = (f" Install with: sudo apt-get install --no-install-recommends {packages} (or `make system-packages` "
               "as root)") if packages else ""
    terminalreporter.write_line(f"NOT TESTED here: {'; '.join(parts)}.{install}{remedies}", yellow=True, bold=True)


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    """The Chromium the browser test drives (GANKIT_CHROMIUM, default Debian's)."""
    return CHROMIUM


@pytest.fixture(scope="session")
def postgres_bin_dir() -> Path | None:
    """The folder of initdb, pg_ctl and postgres for a throw-away server (None: none here)."""
    return postgres_bin()
