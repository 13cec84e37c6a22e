"""Each step of the instructor's and TA's week, driving nbgrader's own command line.

nbgrader stays the source of truth (checksums, gradebook, feedback); every step runs
``nbgrader <command>`` from course/, so it reads course/nbgrader_config.py exactly as an
instructor's own terminal would. The student side (fetch, submit) runs from the student's folder
with the exchange named on the command line, as a student's server would have it configured.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grading.course import REPO_ROOT, Course
from grading.nbgrader_setup import FEEDBACK_PREPROCESSORS, ensure_runtime_layout
from grading.target import GradingTarget
from gankit.io import atomic_write_text


class PipelineError(RuntimeError):
    """An nbgrader step failed; the message holds the command and the end of its log."""


def _env(course: Course) -> dict:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    # nbgrader shells out to `alembic` and starts kernels by name: both must come from this venv.
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["GANKIT_COURSE_RUNTIME"] = str(course.runtime_dir)
    env["GANKIT_COURSE_FILE"] = str(course.source_file)  # nbgrader's process reads the same course.yml
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def nbgrader(course: Course, *args: str, cwd: Path | None = None, check: bool = True,
             quiet: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` (from course/ unless ``cwd``); raise PipelineError on failure."""
    command = [sys.executable, "-m", "nbgrader", *args]
    result = subprocess.run(command, cwd=cwd or REPO_ROOT / "course", env=_env(course),
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    log = result.stdout + result.stderr
    # When course/nbgrader_config.py raises, nbgrader only logs it and goes on with its own
    # defaults (root course/, exchange /usr/local/share/nbgrader/exchange): never what was meant.
    if check and "Exception while loading config file" in log:
        reason = next((line.strip() for line in reversed(log.splitlines())
                       if re.match(r"\s*\w[\w.]*(Error|Exception): ", line)), "see the log")
        raise PipelineError(f"`nbgrader {args[0]}` could not load course/nbgrader_config.py and would "
                            f"have run with nbgrader's defaults: {reason}")
    # nbgrader logs per-notebook failures and still exits 0 for some of them.
    failed = result.returncode != 0 or "There was an error processing" in log
    if check and failed:
        tail = "\n".join(log.splitlines()[-30:])
        raise PipelineError(f"`nbgrader {' '.join(args)}` failed (exit {result.returncode}):\n{tail}")
    if not quiet:
        print(log, end="")
    return result


def generate(course: Course, assignment_id: str) -> Path:
    """Build the student version under release/ and record the due date in the gradebook."""
    from nbgrader.api import Gradebook

    ensure_runtime_layout(course)
    week = course.week_of(assignment_id)
    if not week.assignment_dir().is_dir():
        raise PipelineError(f"assignments/{assignment_id}/ does not exist yet (course.yml lists week {week.week})")
    with Gradebook(course.gradebook_url, course.course_id) as gb:
        gb.update_or_create_assignment(assignment_id, duedate=week.due)
    nbgrader(course, "generate_assignment", assignment_id, "--force")
    return course.runtime_dir / "release" / assignment_id


def release(course: Course, assignment_id: str) -> None:
    nbgrader(course, "release_assignment", assignment_id, "--force")


def _student_exchange(course: Course, kind: str, assignment_id: str, student_home: Path,
                      student_id: str | None = None) -> None:
    """Run nbgrader's own exchange code for one student, in process (a student's server does
    the same from its assignment list; a subprocess per click would cost seconds each)."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange import ExchangeError
    from nbgrader.exchange.default import ExchangeFetchAssignment, ExchangeSubmit
    from traitlets.config import Config

    cfg = Config()
    cfg.Exchange.root = str(course.exchange_dir)
    cfg.Exchange.assignment_dir = str(student_home)
    cfg.Exchange.timezone = course.timezone
    cfg.CourseDirectory.course_id = course.course_id
    cfg.CourseDirectory.root = str(student_home)
    cfg.CourseDirectory.assignment_id = assignment_id
    if student_id:
        cfg.CourseDirectory.student_id = student_id
    cls = {"fetch": ExchangeFetchAssignment, "submit": ExchangeSubmit}[kind]
    app = cls(coursedir=CourseDirectory(config=cfg), authenticator=Authenticator(config=cfg), config=cfg)
    try:
        app.start()
    except ExchangeError as err:
        raise PipelineError(f"{kind} of {assignment_id} for {student_id or 'this user'} failed: {err}") from err


def fetch(course: Course, assignment_id: str, student_home: Path) -> Path:
    """What a student's 'Fetch' button does: copy the released version into their home."""
    student_home.mkdir(parents=True, exist_ok=True)
    _student_exchange(course, "fetch", assignment_id, student_home)
    return student_home / assignment_id


def submit(course: Course, assignment_id: str, student_id: str, student_home: Path) -> None:
    """What a student's 'Submit' button does (the exchange records student id and timestamp)."""
    _student_exchange(course, "submit", assignment_id, student_home, student_id)


def collect(course: Course, assignment_id: str) -> None:
    nbgrader(course, "collect", assignment_id, "--update")


def autograde(course: Course, assignment_id: str, student_id: str | None = None) -> None:
    """Sanitize, inject parameters, execute and score (grading/preprocessors.py), headless.

    The answer keys of hidden checks are built (or found up to date) first: grading/checks.py.
    """
    from grading.checks import build_keys

    build_keys(course, assignment_id)
    args = ["autograde", assignment_id, "--force"]
    if student_id:
        args.append(f"--student={student_id}")
    nbgrader(course, *args)


def foreign_nbgrader(target: GradingTarget, *args: str) -> subprocess.CompletedProcess:
    """``nbgrader ARGS`` in another course's folder, as its instructor would run it there (its own
    nbgrader_config.py), with our feedback preprocessors (no hidden tests shown)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    command = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={target.runtime_dir}"]
    if args[0] == "generate_feedback":
        command += [f"--GenerateFeedback.preprocessors={name}" for name in FEEDBACK_PREPROCESSORS]
    result = subprocess.run(command, cwd=target.runtime_dir, env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    log = result.stdout + result.stderr
    if result.returncode != 0 or "There was an error processing" in log or "Exception while loading config" in log:
        tail = "\n".join(log.splitlines()[-30:])
        raise PipelineError(f"`nbgrader {' '.join(args)}` in {target.runtime_dir} failed (exit {result.returncode}):\n{tail}")
    return result


@dataclass(frozen=True)
class Feedback:
    """Where each student's feedback went."""
    released: tuple[str, ...]      # through the exchange: the student fetches it in Jupyter
    to_return: tuple[str, ...]     # collected from an LMS: the pages are in feedback/<student>/<assignment>/
    folder: Path                   # <course root>/feedback


def feedback(course: Course | GradingTarget, assignment_id: str) -> Feedback:
    """Write every graded submission's feedback, and release it to those who submitted through the
    exchange. nbgrader's release_feedback keys a page by the secret the exchange gave the
    submission (submission_secret.txt) and stops at the first submission without one: those
    collected from an LMS (zip_collect) are left out of the release and their pages named for the
    instructor to return through the LMS.
    """
    run = (lambda *args: nbgrader(course, *args)) if isinstance(course, Course) else \
        (lambda *args: foreign_nbgrader(course, *args))
    run("generate_feedback", assignment_id, "--force")
    folder = course.runtime_dir / "feedback"
    released, to_return = [], []
    for page_dir in sorted(p for p in folder.glob(f"*/{assignment_id}") if p.is_dir()):
        student = page_dir.parent.name
        (released if (page_dir / "submission_secret.txt").is_file() else to_return).append(student)
    if released:
        exclude = [f"--CourseDirectory.student_id_exclude={','.join(to_return)}"] if to_return else []
        run("release_feedback", assignment_id, *exclude)
    return Feedback(tuple(released), tuple(to_return), folder)


def export_grades(course: Course) -> Path:
    """nbgrader's CSV export, written beside and renamed into place so a crash leaves the old one."""
    target = course.runtime_dir / "reports" / "grades.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(".grades.csv.partial")
    nbgrader(course, "export", f"--to={partial}")
    os.replace(partial, target)
    return target


@dataclass(frozen=True)
class CellScore:
    grade_id: str
    score: float | None      # None: waiting for a manual grade
    max_score: float
    needs_manual_grade: bool


def cell_scores(course: Course, assignment_id: str) -> dict[str, dict[str, CellScore]]:
    """{student: {grade_id: CellScore}} from the gradebook, for every submission of the assignment."""
    from nbgrader.api import Gradebook

    table: dict[str, dict[str, CellScore]] = {}
    with Gradebook(course.gradebook_url, course.course_id) as gb:
        assignment = gb.find_assignment(assignment_id)
        for submission in assignment.submissions:
            row = {}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    manual = grade.manual_score is not None
                    score = grade.manual_score if manual else grade.auto_score
                    row[grade.name] = CellScore(grade.name, None if score is None else float(score),
                                                float(grade.max_score), bool(grade.needs_manual_grade))
            table[submission.student.id] = row
    return table


def set_manual_grade(course: Course, assignment_id: str, student_id: str, grade_id: str, score: float) -> None:
    """What formgrader's score box does for a hand-graded cell."""
    from nbgrader.api import Gradebook

    with Gradebook(course.gradebook_url, course.course_id) as gb:
        submission = gb.find_submission(assignment_id, student_id)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if grade.name == grade_id:
                    grade.manual_score = score
                    grade.needs_manual_grade = False
        gb.db.commit()


def read_grades_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)
