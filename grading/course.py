"""Read course/course.yml, the single source of truth of the course.

Everything else (nbgrader's configuration, the syllabus, the grading pipeline, the demo) asks this
module, so nothing about the course is written twice. A malformed file fails with the file name,
the key that is wrong and what to write instead.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COURSE_FILE = REPO_ROOT / "course" / "course.yml"


class CourseError(ValueError):
    """course.yml is missing, malformed, or contradicts itself."""


@dataclass(frozen=True)
class Paper:
    title: str
    authors: str
    venue: str
    year: int
    link: str


@dataclass(frozen=True)
class Week:
    week: int
    title: str
    release: dt.date
    due: dt.datetime
    notebook: str            # path relative to the repository root
    assignment: str          # nbgrader assignment id == folder name under assignments/
    points: float            # total points of the assignment (checked against the notebook)
    papers: tuple[Paper, ...]

    def notebook_path(self) -> Path:
        return REPO_ROOT / self.notebook

    def assignment_dir(self) -> Path:
        return REPO_ROOT / "assignments" / self.assignment


@dataclass(frozen=True)
class Grading:
    cell_timeout_s: int = 120
    notebook_timeout_s: int = 900
    max_kernel_restarts: int = 2
    parameters: dict = field(default_factory=dict)
    gradebook_url: str | None = None   # course.yml grading.gradebook_url; None: SQLite in the runtime
    max_processes: int = 512   # processes and threads one sandboxed kernel may run at once
    max_output_mb: float = 16  # output one cell may print before it is interrupted
    max_submission_output_mb: float = 1024   # all files one graded submission may leave in autograded/


@dataclass(frozen=True)
class LatePolicy:
    penalty_per_day: float = 0.0
    max_days: int = 0


@dataclass(frozen=True)
class Course:
    course_id: str
    title: str
    term: str
    timezone: str
    runtime_dir: Path        # absolute; everything nbgrader writes lives below it
    exchange_dir: Path       # absolute
    grading: Grading
    late_policy: LatePolicy
    weeks: tuple[Week, ...]
    source_file: Path

    @property
    def gradebook_url(self) -> str:
        """The SQLAlchemy URL of the one gradebook the coordinator writes.

        ``GANKIT_GRADEBOOK_URL`` if set (tests use it; it keeps a server's URL out of git), else
        ``grading.gradebook_url`` from course.yml, else SQLite at ``<runtime>/gradebook.db``.
        Read when asked, not when loaded, like nbgrader reads its own config.
        """
        from_env = os.environ.get("GANKIT_GRADEBOOK_URL")
        if from_env:
            return checked_gradebook_url(from_env, "GANKIT_GRADEBOOK_URL")
        if self.grading.gradebook_url:
            return checked_gradebook_url(self.grading.gradebook_url, f"{self.source_file}: grading.gradebook_url")
        return f"sqlite:///{self.runtime_dir / 'gradebook.db'}"

    @property
    def data_dir(self) -> Path:
        """Where the embedded (synthetic) datasets are built for smoke runs and grading."""
        return self.runtime_dir / "data"

    def week_of(self, assignment_id: str) -> Week:
        for week in self.weeks:
            if week.assignment == assignment_id:
                return week
        known = ", ".join(w.assignment for w in self.weeks)
        raise CourseError(f"{self.source_file}: no week has assignment {assignment_id!r}; known: {known}")

    def available_assignments(self) -> list[Week]:
        """Weeks whose nbgrader source folder exists already (later weeks are listed, not written)."""
        return [w for w in self.weeks if w.assignment_dir().is_dir()]


def mask_password(url: str) -> str:
    """``url`` with its password replaced by ***, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if sep:
        netloc, slash, path = rest.partition("/")
        userinfo, at, host = netloc.rpartition("@")   # rpartition: a password may hold an @
        if at and ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:***@{host}{slash}{path}"
    # libpq also takes ?password=... in the query string
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", f"{scheme}{sep}{rest}")


def checked_gradebook_url(url: str, where: str) -> str:
    """A gradebook URL nbgrader and the grader can both open, or a CourseError that says what to write.

    ``postgresql://`` means psycopg2 to SQLAlchemy, which the kit does not install: it becomes
    ``postgresql+psycopg://`` (psycopg 3, installed by ``make setup``).
    """
    example = "postgresql+psycopg://grader@dbhost/gan_course or sqlite:////srv/course/gradebook.db"
    scheme, sep, rest = url.partition("://")
    if scheme == "postgresql":
        return f"postgresql+psycopg://{rest}"
    if scheme == "postgresql+psycopg":
        return url
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else ""
        # nbgrader runs in course/ and the grader wherever it was started: a relative path
        # would name two different files.
        if not rest.startswith("/") or not Path(path).is_absolute():
            raise CourseError(f"{where}: the SQLite gradebook {url!r} needs an absolute path, "
                              f"four slashes in all: sqlite:////srv/course/gradebook.db")
        return url
    raise CourseError(f"{where}: {mask_password(url)!r} is not a supported gradebook URL; "
                      f"write SQLite or PostgreSQL (psycopg 3), e.g. {example}")


def load_course(path: str | os.PathLike | None = None) -> Course:
    """Parse and validate course.yml.

    Without ``path``, ``GANKIT_COURSE_FILE`` names the file, else course/course.yml. nbgrader runs
    in its own process and reads course/nbgrader_config.py, which calls this without a path: the
    variable is how such a process sees another course file (a class server's own, or a test's).
    ``GANKIT_COURSE_RUNTIME`` overrides ``paths.runtime`` (tests and the demo use it to work in a
    temporary folder).
    """
    if path is None:
        path = os.environ.get("GANKIT_COURSE_FILE") or COURSE_FILE
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        named = " (named by GANKIT_COURSE_FILE)" if source != COURSE_FILE else ""
        raise CourseError(f"{source}{named}: not found; the course definition lives in course/course.yml") from None
    except yaml.YAMLError as err:
        raise CourseError(f"{source}: not valid YAML ({err}); fix the line it names") from None
    if not isinstance(raw, dict):
        raise CourseError(f"{source}: expected a mapping at the top level")

    def need(mapping: dict, key: str, kind: type | tuple, where: str) -> Any:
        if key not in mapping:
            raise CourseError(f"{source}: {where} lacks the key '{key}'")
        value = mapping[key]
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise CourseError(f"{source}: {where}.{key} must be {names}, got {value!r}")
        return value

    paths = raw.get("paths", {}) or {}
    runtime = Path(os.environ.get("GANKIT_COURSE_RUNTIME") or paths.get("runtime", "runtime"))
    runtime = runtime if runtime.is_absolute() else (source.parent.parent / runtime)
    exchange = Path(paths.get("exchange", "exchange"))
    exchange = exchange if exchange.is_absolute() else runtime / exchange

    weeks = []
    for i, entry in enumerate(need(raw, "weeks", list, "the file")):
        where = f"weeks[{i}]"
        papers = tuple(
            Paper(
                title=need(p, "title", str, f"{where}.papers[{j}]"),
                authors=need(p, "authors", str, f"{where}.papers[{j}]"),
                venue=need(p, "venue", str, f"{where}.papers[{j}]"),
                year=need(p, "year", int, f"{where}.papers[{j}]"),
                link=need(p, "link", str, f"{where}.papers[{j}]"),
            )
            for j, p in enumerate(need(entry, "papers", list, where))
        )
        due = need(entry, "due", (dt.datetime, dt.date), where)
        if not isinstance(due, dt.datetime):
            due = dt.datetime.combine(due, dt.time(23, 59))
        weeks.append(Week(
            week=need(entry, "week", int, where),
            title=need(entry, "title", str, where),
            release=need(entry, "release", dt.date, where),
            due=due,
            notebook=need(entry, "notebook", str, where),
            assignment=need(entry, "assignment", str, where),
            points=float(need(entry, "points", (int, float), where)),
            papers=papers,
        ))
    numbers = [w.week for w in weeks]
    if numbers != list(range(1, len(weeks) + 1)):
        raise CourseError(f"{source}: weeks must be numbered 1..{len(weeks)} in order, got {numbers}")
    ids = [w.assignment for w in weeks]
    if len(set(ids)) != len(ids):
        raise CourseError(f"{source}: two weeks share an assignment id: {ids}")
    for w in weeks:
        if not 3 <= len(w.papers) <= 4:
            raise CourseError(f"{source}: week {w.week} lists {len(w.papers)} papers; a week reads 3-4")
        if w.due.date() <= w.release:
            raise CourseError(f"{source}: week {w.week} is due ({w.due}) before it is released ({w.release})")

    grading_raw = raw.get("grading", {}) or {}
    late_raw = raw.get("late_policy", {}) or {}
    max_processes = grading_raw.get("max_processes", 512)
    if isinstance(max_processes, bool) or not isinstance(max_processes, int) or max_processes < 16:
        raise CourseError(f"{source}: grading.max_processes must be a whole number of at least 16 (a kernel "
                          f"alone runs about 15 threads), e.g. 512; got {max_processes!r}")
    max_output_mb = grading_raw.get("max_output_mb", 16)
    if isinstance(max_output_mb, bool) or not isinstance(max_output_mb, (int, float)) or max_output_mb <= 0:
        raise CourseError(f"{source}: grading.max_output_mb must be a positive number of megabytes, e.g. 16; "
                          f"got {max_output_mb!r}")
    max_submission_output_mb = grading_raw.get("max_submission_output_mb", 1024)
    if (isinstance(max_submission_output_mb, bool) or not isinstance(max_submission_output_mb, (int, float))
            or max_submission_output_mb <= 0):
        raise CourseError(f"{source}: grading.max_submission_output_mb must be a positive number of megabytes, "
                          f"e.g. 1024; got {max_submission_output_mb!r}")
    gradebook_url = grading_raw.get("gradebook_url")
    if gradebook_url is not None:   # checked here so a wrong file fails on load, naming itself
        if not isinstance(gradebook_url, str):
            raise CourseError(f"{source}: grading.gradebook_url must be a URL string, got {type(gradebook_url).__name__}")
        checked_gradebook_url(gradebook_url, f"{source}: grading.gradebook_url")
    return Course(
        course_id=need(raw, "course_id", str, "the file"),
        title=need(raw, "title", str, "the file"),
        term=need(raw, "term", str, "the file"),
        timezone=raw.get("timezone", "UTC"),
        runtime_dir=runtime.resolve(),
        exchange_dir=exchange.resolve(),
        grading=Grading(
            cell_timeout_s=int(grading_raw.get("cell_timeout_s", 120)),
            notebook_timeout_s=int(grading_raw.get("notebook_timeout_s", 900)),
            max_kernel_restarts=int(grading_raw.get("max_kernel_restarts", 2)),
            parameters=dict(grading_raw.get("parameters", {}) or {}),
            gradebook_url=gradebook_url or None,
            max_processes=max_processes,
            max_output_mb=float(max_output_mb),
            max_submission_output_mb=float(max_submission_output_mb),
        ),
        late_policy=LatePolicy(
            penalty_per_day=float(late_raw.get("penalty_per_day", 0.0)),
            max_days=int(late_raw.get("max_days", 0)),
        ),
        weeks=tuple(weeks),
        source_file=source.resolve(),
    )
