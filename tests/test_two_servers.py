"""An instructor's server and a student's server on one machine, sharing only the exchange.

Each "server" is a folder of its own: the instructor's course runtime, and the student's clone
(the student copy, grading/student_copy.py: no solutions, no grader), its runtime and HOME. The
student's side runs as another Unix uid with no passwd entry (HOME and USER set), through nbgrader's
own apps and the clone's student configuration (course/server/student/), exactly as the Assignment
List of `make lab` runs them; the instructor's side runs the pipeline as root.
The round trip: generate + release -> fetch + validate + submit -> collect + autograde + feedback ->
fetch_feedback, the student reading the HTML. On the way, an inbound folder the student cannot
write is found by `gankit doctor` from both sides, with the chmod that fixes it.

How the exchange is shared is a *route* (the ``two_servers`` fixture is parametrized by
``ROUTES``): here a shared folder (what an NFS or sshfs mount gives each server). Another route
(an HTTP exchange) plugs in as one more class with the same attributes and methods: its
``course_yaml`` points each side's course.yml at it, ``env`` adds what a side's processes need
(a token), ``close`` stops what it started; ``shared_folder = False`` skips the steps that break
the folder's modes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from grading import pipeline
from grading.course import COURSE_FILE, REPO_ROOT, Course, load_course
from grading.student_copy import build_student_copy

pytestmark = [pytest.mark.slow, pytest.mark.needs_root]

ASSIGNMENT = "week01_gan_foundations"
STUDENT = "ada"
STUDENT_UID = STUDENT_GID = 4242   # no passwd entry, as on a server whose users come from LDAP
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)


@dataclass
class Server:
    """One side: its course.yml, runtime folder, HOME, and the environment its processes get."""

    name: str
    course_file: Path
    runtime: Path
    home: Path
    extra_env: dict
    code: Path = REPO_ROOT   # the clone the side runs: the repository, or the student copy a student cloned

    def course(self) -> Course:
        os.environ["GANKIT_COURSE_RUNTIME"] = str(self.runtime)   # restored by the fixture
        return load_course(self.course_file)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "GANKIT_", "IPYTHON"))}
        env.update(HOME=str(self.home), USER=self.name, LOGNAME=self.name, PYTHONDONTWRITEBYTECODE="1",
                   GANKIT_COURSE_FILE=str(self.course_file), GANKIT_COURSE_RUNTIME=str(self.runtime),
                   PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
                   PYTHONPATH=str(self.code), **self.extra_env)
        return env


class SharedFolderRoute:
    """The exchange is one folder both servers see at the same path (an NFS/sshfs mount), made
    once by an admin with mode 1777; course.yml's paths.exchange names it on both sides."""

    name = "shared-folder"
    shared_folder = True   # the student's side sees the exchange as a folder (modes, the doctor)

    def __init__(self, base: Path):
        self.exchange = base / "srv" / "nbgrader" / "exchange"
        self.exchange.mkdir(parents=True)
        os.chmod(self.exchange, 0o1777)

    def course_yaml(self, text: str, side: str) -> str:
        """course.yml as ``side`` ("instructor" or "student") has it for this route."""
        return re.sub(r"(?m)^(\s*)exchange: .*$", rf"\1exchange: {self.exchange}", text, count=1)

    def env(self, side: str) -> dict:
        """Extra environment of ``side``'s nbgrader processes."""
        return {}

    def close(self) -> None:
        pass


ROUTES = {"shared-folder": SharedFolderRoute}


@pytest.fixture(params=sorted(ROUTES))
def two_servers(request, monkeypatch, grant_traverse):
    """(route, instructor Server, student Server) in a fresh world-traversable temp folder."""
    base = Path(tempfile.mkdtemp(prefix="gankit-two-servers-"))
    os.chmod(base, 0o755)   # pytest's tmp_path is 0700: the student's uid could not reach its folders
    route = ROUTES[request.param](base)
    try:
        for path in (sys.executable, REPO_ROOT / "grading"):
            grant_traverse(path)
        monkeypatch.setenv("GANKIT_COURSE_RUNTIME", "")   # Server.course() sets it; undone afterwards
        text = COURSE_FILE.read_text()
        # The student's server runs the student copy (grading/student_copy.py), as its student cloned it.
        clone = base / "student" / "gan-course"
        build_student_copy(clone, say=lambda *_: None)
        sides = {}
        for side, name in (("instructor", "instructor"), ("student", STUDENT)):
            folder = base / side
            (folder / "home").mkdir(parents=True)
            course_file = folder / "course.yml" if side == "instructor" else clone / "course" / "course.yml"
            course_file.write_text(route.course_yaml(text, side))
            runtime = folder / "runtime" if side == "instructor" else clone / "runtime"
            sides[side] = Server(name, course_file, runtime, folder / "home", route.env(side),
                                 REPO_ROOT if side == "instructor" else clone)
        student = sides["student"]
        student.runtime.mkdir()
        for path in (base / "student", *(p for p in (base / "student").rglob("*") if not p.is_symlink())):
            os.chown(path, STUDENT_UID, STUDENT_GID)
        yield route, sides["instructor"], student
    finally:
        route.close()
        shutil.rmtree(base, ignore_errors=True)


def as_student(student: Server, *argv: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ARGV as the student's uid with the student's server configuration (course/server/student)."""
    env = student.env()
    env.update(JUPYTER_CONFIG_PATH=str(student.code / "course" / "server" / "student"), GANKIT_STUDENT_ID=STUDENT)
    result = subprocess.run(list(argv), env=env, cwd=cwd or student.home, user=STUDENT_UID, group=STUDENT_GID,
                            extra_groups=[], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    if check and result.returncode != 0:
        pytest.fail(f"{argv} as uid {STUDENT_UID} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    return result


def student_nbgrader(student: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return as_student(student, sys.executable, "-m", "nbgrader", *args, check=check)


def student_doctor(student: Server) -> str:
    """The course's doctor verdicts (grading/doctor.py) as the student's uid, one per line."""
    code = ("from grading.doctor import findings\n"
            "for f in findings(): print(f.level.upper(), f.message)")
    return as_student(student, sys.executable, "-c", code, check=False).stdout


def instructor_doctor(instructor: Server, monkeypatch) -> str:
    """The course's doctor verdicts on the instructor's server (this process, root), one per line."""
    from grading.doctor import findings

    instructor.course()   # its runtime folder
    with monkeypatch.context() as patch:
        patch.setenv("GANKIT_ROLE", "instructor")
        return "\n".join(f"{f.level.upper()} {f.message}" for f in findings())


def solve(notebook: Path, source: Path) -> None:
    """Put the instructor's solutions into the student's fetched notebook (as the student would type
    them), and `SMOKE = True` in a new cell below the parameters, as the notebook says to validate offline."""
    key = nbformat.read(source, as_version=4)
    nb = nbformat.read(notebook, as_version=4)
    for index, cell in enumerate(key.cells):
        if cell.metadata.get("nbgrader", {}).get("solution"):
            nb.cells[index].source = MARKERS.sub("", cell.source).rstrip("\n")
    parameters = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(parameters + 1, nbformat.v4.new_code_cell("SMOKE = True"))
    nbformat.write(nb, notebook)


def test_release_fetch_submit_grade_and_feedback_between_two_servers(two_servers, monkeypatch):
    route, instructor_server, student = two_servers
    monkeypatch.setenv("GANKIT_COURSE_FILE", str(instructor_server.course_file))
    course = instructor_server.course()
    if route.shared_folder:
        assert course.exchange_dir == student.course().exchange_dir != course.runtime_dir / "exchange"
    own = student.runtime / "students" / STUDENT

    if route.shared_folder:   # before any release: the student's side is fine, with nothing to fetch
        before = student_doctor(student)
        assert "ERROR" not in before and "nothing released yet" in before, before

    # The instructor's server: generate and release into the shared exchange.
    course = instructor_server.course()
    pipeline.generate(course, ASSIGNMENT)
    from grading import intake
    intake.check_exchange(course)
    pipeline.release(course, ASSIGNMENT)

    # The student's server: fetch into the student's own folder, then solve.
    student_nbgrader(student, "fetch_assignment", ASSIGNMENT)
    [fetched] = sorted((own / ASSIGNMENT).glob("*.ipynb"))
    assert fetched.stat().st_uid == STUDENT_UID, "fetched by the student's uid, into their folder"
    solve(fetched, REPO_ROOT / "assignments" / ASSIGNMENT / fetched.name)
    os.chown(fetched, STUDENT_UID, STUDENT_GID)
    # Validate, as the Assignment List's button does: offline, on the embedded data (SMOKE).
    validated = student_nbgrader(student, "validate", str(fetched))
    assert "Success! Your notebook passes all the tests." in validated.stdout + validated.stderr, validated.stdout

    if route.shared_folder:
        # A broken inbound: the student cannot submit; the doctor says so on both sides, with the fix.
        inbound = course.exchange_dir / course.course_id / "inbound"
        os.chmod(inbound, 0o755)
        refused = student_nbgrader(student, "submit", ASSIGNMENT, check=False)
        assert refused.returncode != 0 and "write permissions" in refused.stdout + refused.stderr
        verdict = student_doctor(student)
        assert re.search(rf"ERROR {re.escape(str(inbound))} has mode 0755 .*you cannot submit.*chmod 2733 "
                         rf"{re.escape(str(inbound))}", verdict), verdict
        verdict = instructor_doctor(instructor_server, monkeypatch)
        assert f"ERROR {inbound} has mode 0755: students cannot submit" in verdict and "chmod 2733" in verdict, verdict
        os.chmod(inbound, 0o2733)   # the fix the doctor named
        verdict = student_doctor(student)
        assert "ERROR" not in verdict and f"you can submit into {inbound}" in verdict, verdict

    student_nbgrader(student, "submit", ASSIGNMENT)
    if route.shared_folder:
        [submission] = [p.name for p in inbound.iterdir()]
        assert submission.startswith(f"{STUDENT}+{ASSIGNMENT}+")
        listing = as_student(student, "ls", str(inbound), check=False)
        assert listing.returncode != 0, "a student cannot list the others' submissions"

    # The instructor's server: collect, autograde, feedback into the exchange.
    collected = intake.collect(course, ASSIGNMENT)
    assert list(collected) == [STUDENT] and collected[STUDENT], "collected with the exchange's timestamp"
    pipeline.autograde(course, ASSIGNMENT, STUDENT)
    scores = pipeline.cell_scores(course, ASSIGNMENT)[STUDENT]
    auto = {g: s for g, s in scores.items() if not s.needs_manual_grade}
    assert auto and all(s.score == s.max_score for s in auto.values()), auto
    released = pipeline.feedback(course, ASSIGNMENT)
    assert released.released == (STUDENT,)

    # The student's server: fetch the feedback and read it.
    student_nbgrader(student, "fetch_feedback", ASSIGNMENT)
    [page] = sorted((own / ASSIGNMENT / "feedback").glob("*/*.html"))
    html = as_student(student, "cat", str(page)).stdout
    total = sum(s.max_score for s in auto.values())
    assert fetched.stem in html and re.search(rf"\b{total:g}(\.0)?\b", html), "the feedback page shows the score"
