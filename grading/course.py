"""Read course/course.yml, the single source of truth of the course.

Everything else (nbgrader's configuration, the syllabus, the grading pipeline, the demo) asks this
module, so nothing about the course is written twice. A malformed file fails with the file name,
the key that is wrong and what to write instead; so does a key this module does not know (a
misspelt ``late_polcy:`` would otherwise silently mean no late penalty).
"""
from __future__ import annotations

import datetime as dt
import difflib
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


# Every key course.yml may hold, level by level ("" is the top level; "weeks[]" and "papers[]" one
# entry of those lists). A key missing here is refused with its name and the file, so a misspelling
# cannot silently turn into a default. grading.parameters is free-form: its keys are the names of
# the notebooks' parameters (checked to be Python names).
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "": ("course_id", "title", "term", "instructors", "timezone", "paths", "grading", "late_policy", "weeks",
         "exchange_server"),
    "paths": ("runtime", "exchange"),
    "grading": ("cell_timeout_s", "notebook_timeout_s", "max_kernel_restarts", "max_processes", "max_output_mb",
                "max_submission_output_mb",
                "gradebook_url", "parameters"),
    "late_policy": ("penalty_per_day", "max_days"),
    "exchange_server": ("url", "listen", "max_upload_mb"),
    "weeks[]": ("week", "title", "release", "due", "notebook", "assignment", "points", "papers"),
    "papers[]": ("title", "authors", "venue", "year", "link"),
}


def reject_unknown_keys(mapping: dict, known: tuple[str, ...], where: str, source: Path) -> None:
    """Raise CourseError naming the first key of ``mapping`` not in ``known``, with the closest known one.

    ``where`` is the mapping's place in the file ("" for the top level, "grading", "weeks[2]").
    """
    for key in mapping:
        if key in known:
            continue
        name = str(key)   # YAML keys may be numbers or booleans (`yes:` is True)
        place = f"{where}.{name}" if where else name
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean '{where + '.' if where else ''}{close[0]}'?"
        else:
            hint = f"the keys {'in ' + where if where else 'at the top level'} are: {', '.join(known)}"
        level = "" if where else " at the top level"
        raise CourseError(f"{source}: unknown key '{place}'{level}; {hint}")


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
class ExchangeServer:
    """The HTTP exchange (grading/exchange_server.py) for students' servers that share no folder."""
    url: str | None = None          # students' side: where the server is; None: the shared-folder exchange
    listen: str = "127.0.0.1:8765"  # course server's side: loopback; reached through SSH or a TLS proxy
    max_upload_mb: float = 100.0    # the largest submission accepted


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
    exchange_server: ExchangeServer = field(default_factory=ExchangeServer)

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
        # PyYAML's own message spans several lines; the CLI prints one.
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).replace("\n", " ")
        raise CourseError(f"{source}: not valid YAML{where} ({problem}); fix that line") from None
    if not isinstance(raw, dict):
        raise CourseError(f"{source}: expected a mapping at the top level")

    reject_unknown_keys(raw, KNOWN_KEYS[""], "", source)

    def need(mapping: dict, key: str, kind: type | tuple, where: str) -> Any:
        if key not in mapping:
            raise CourseError(f"{source}: {where} lacks the key '{key}'")
        value = mapping[key]
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise CourseError(f"{source}: {where}.{key} must be {names}, got {value!r}")
        return value

    def section(mapping: dict, key: str, known: tuple[str, ...] | None, where: str) -> dict:
        """The mapping under ``key`` (absent or empty: {}), its keys checked against ``known``."""
        value = mapping.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise CourseError(f"{source}: {where} must be a mapping of keys, got {value!r}")
        if known is not None:
            reject_unknown_keys(value, known, where, source)
        return value

    def text(mapping: dict, key: str, default: str, where: str) -> str:
        value = mapping.get(key, default)
        if not isinstance(value, str):
            raise CourseError(f"{source}: {where} must be text, got {value!r}")
        return value

    def whole_number(mapping: dict, key: str, default: int, where: str, minimum: int, hint: str = "") -> int:
        value = mapping.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise CourseError(f"{source}: {where} must be a whole number of at least {minimum}{hint}; got {value!r}")
        return value

    def fraction(mapping: dict, key: str, default: float, where: str, hint: str) -> float:
        value = mapping.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise CourseError(f"{source}: {where} must be a number between 0 and 1{hint}; got {value!r}")
        return float(value)

    paths = section(raw, "paths", KNOWN_KEYS["paths"], "paths")
    runtime = Path(os.environ.get("GANKIT_COURSE_RUNTIME") or text(paths, "runtime", "runtime", "paths.runtime"))
    runtime = runtime if runtime.is_absolute() else (source.parent.parent / runtime)
    exchange = Path(text(paths, "exchange", "exchange", "paths.exchange"))
    exchange = exchange if exchange.is_absolute() else runtime / exchange
    instructors = raw.get("instructors", [])
    if not isinstance(instructors, list) or not all(isinstance(name, str) for name in instructors):
        raise CourseError(f"{source}: instructors must be a list of names, e.g. [\"Course staff\"]; got {instructors!r}")

    weeks = []
    for i, entry in enumerate(need(raw, "weeks", list, "the file")):
        where = f"weeks[{i}]"
        if not isinstance(entry, dict):
            raise CourseError(f"{source}: {where} must be a mapping (week: ..., title: ...), got {entry!r}")
        reject_unknown_keys(entry, KNOWN_KEYS["weeks[]"], where, source)
        for j, p in enumerate(need(entry, "papers", list, where)):
            if not isinstance(p, dict):
                raise CourseError(f"{source}: {where}.papers[{j}] must be a mapping (title: ..., authors: ...), got {p!r}")
            reject_unknown_keys(p, KNOWN_KEYS["papers[]"], f"{where}.papers[{j}]", source)
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

    grading_raw = section(raw, "grading", KNOWN_KEYS["grading"], "grading")
    late_raw = section(raw, "late_policy", KNOWN_KEYS["late_policy"], "late_policy")
    parameters = section(grading_raw, "parameters", None, "grading.parameters")
    for name in parameters:
        if not (isinstance(name, str) and name.isidentifier()):
            raise CourseError(f"{source}: grading.parameters: {name!r} is not a Python name, so no notebook "
                              "can have it as a parameter (write e.g. SMOKE: true)")
    cell_timeout_s = whole_number(grading_raw, "cell_timeout_s", 120, "grading.cell_timeout_s", 1, " (seconds)")
    notebook_timeout_s = whole_number(grading_raw, "notebook_timeout_s", 900, "grading.notebook_timeout_s", 1,
                                      " (seconds)")
    max_kernel_restarts = whole_number(grading_raw, "max_kernel_restarts", 2, "grading.max_kernel_restarts", 0)
    max_processes = whole_number(grading_raw, "max_processes", 512, "grading.max_processes", 16,
                                 " (a kernel alone runs about 15 threads), e.g. 512")
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
    penalty_per_day = fraction(late_raw, "penalty_per_day", 0.0, "late_policy.penalty_per_day",
                               " (the share of the score off per day late, e.g. 0.10)")
    max_days = whole_number(late_raw, "max_days", 0, "late_policy.max_days", 0, " (days late still accepted)")
    server_raw = section(raw, "exchange_server", KNOWN_KEYS["exchange_server"], "exchange_server")
    server_url = server_raw.get("url")
    if server_url is not None and not (isinstance(server_url, str) and re.match(r"^https?://[^/\s]+", server_url)):
        raise CourseError(f"{source}: exchange_server.url must be the exchange server's address, e.g. "
                          f"http://127.0.0.1:8765 (through an SSH tunnel) or https://course.example.org; got {server_url!r}")
    max_upload_mb = server_raw.get("max_upload_mb", 100)
    if isinstance(max_upload_mb, bool) or not isinstance(max_upload_mb, (int, float)) or max_upload_mb <= 0:
        raise CourseError(f"{source}: exchange_server.max_upload_mb must be a positive number of megabytes, e.g. 100; "
                          f"got {max_upload_mb!r}")
    exchange_server = ExchangeServer(url=server_url or None,
                                     listen=text(server_raw, "listen", "127.0.0.1:8765", "exchange_server.listen"),
                                     max_upload_mb=float(max_upload_mb))
    return Course(
        course_id=need(raw, "course_id", str, "the file"),
        title=need(raw, "title", str, "the file"),
        term=need(raw, "term", str, "the file"),
        timezone=text(raw, "timezone", "UTC", "timezone"),
        runtime_dir=runtime.resolve(),
        exchange_dir=exchange.resolve(),
        grading=Grading(
            cell_timeout_s=cell_timeout_s,
            notebook_timeout_s=notebook_timeout_s,
            max_kernel_restarts=max_kernel_restarts,
            parameters=dict(parameters),
            gradebook_url=gradebook_url or None,
            max_processes=max_processes,
            max_output_mb=float(max_output_mb),
            max_submission_output_mb=float(max_submission_output_mb),
        ),
        late_policy=LatePolicy(penalty_per_day=penalty_per_day, max_days=max_days),
        weeks=tuple(weeks),
        source_file=source.resolve(),
        exchange_server=exchange_server,
    )
