"""How submissions reach the instructor: the shared exchange, or archives downloaded from an LMS.

* **Exchange.** Every student's server and the instructor's share one nbgrader exchange folder,
  ``paths.exchange`` in course.yml (on a class server an NFS mount, e.g. /srv/nbgrader/exchange).
  Students fetch and submit through it; :func:`collect` copies the newest submission of each
  student into ``submitted/``. :func:`check_exchange` says, before nbgrader runs, which path is
  wrong and what to do about it: nbgrader's own messages name a path nobody configured
  (``/usr/local/share/nbgrader/exchange``) or tell the instructor to "contact your instructor".
* **LMS archives.** Where students upload to Canvas or Moodle instead, :func:`zip_collect` hands
  the downloaded archives to ``nbgrader zip_collect``, which extracts them and maps each file name
  to a student id with a regular expression (:func:`lms_pattern`). Files it cannot map are
  reported, never dropped in silence.

Both end in the same place, ``<runtime>/submitted/<student>/<assignment>/``, where autograde reads.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from pathlib import Path

from grading import pipeline, safecopy
from grading.course import Course
from grading.pipeline import PipelineError

# What nbgrader's exchange needs: everyone may create entries (students' servers run as other
# users), and the sticky bit keeps them from deleting each other's, as in /tmp.
EXCHANGE_MODE = 0o1777


def _owner(path: Path) -> str:
    import pwd  # Unix only, like nbgrader's exchange itself

    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _configure_or_explain(course: Course) -> None:
    """Apply the course's nbgrader configuration here, as course/nbgrader_config.py will in nbgrader.

    If that raises inside nbgrader, traitlets only logs it and nbgrader runs with its defaults (root
    = course/, exchange = /usr/local/share/nbgrader/exchange), so the error the instructor finally
    sees names none of the course's paths. Running the same function first turns it into one that does.
    """
    from traitlets.config import Config

    from grading.nbgrader_setup import configure

    try:
        configure(Config(), course)
    except OSError as err:
        # ensure_runtime_layout creates the runtime folder and the exchange and chmods the exchange.
        raise PipelineError(
            f"nbgrader's configuration for this course fails: {err}.\n"
            f"It creates {course.runtime_dir} and the exchange {course.exchange_dir} and makes the "
            f"exchange mode 1777; this account must be allowed to. On a class server the exchange is "
            f"a shared folder made once by an administrator: `sudo mkdir -p {course.exchange_dir} && "
            f"sudo chmod 1777 {course.exchange_dir}`, then run this again.") from err


def check_exchange(course: Course) -> Path:
    """Make sure the exchange exists and is usable by nbgrader; return its path.

    An exchange under the runtime folder (the default, one machine) is created here with mode 1777,
    as every nbgrader command of the course does. A shared one elsewhere (``paths.exchange``
    absolute, an NFS mount on a class server) is never created: a missing folder there usually
    means the mount is missing, and a local folder made in its place would receive releases that
    the students' servers never see.

    Raises
    ------
    PipelineError
        naming the path, what is wrong and the command that fixes it.
    """
    path = course.exchange_dir
    where = f"paths.exchange in {course.source_file}"
    shared = not path.is_relative_to(course.runtime_dir)
    if shared:
        if not path.exists():
            raise PipelineError(
                f"the nbgrader exchange {path} ({where}) does not exist. It is the folder every "
                f"student's server shares with yours: mount it there (NFS), or create it with "
                f"`sudo mkdir -p {path} && sudo chmod 1777 {path}`; or fix {where}.")
        if not path.is_dir():
            raise PipelineError(f"the nbgrader exchange {path} ({where}) is not a folder; fix {where}")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & EXCHANGE_MODE != EXCHANGE_MODE:
            raise PipelineError(
                f"the nbgrader exchange {path} ({where}) has mode {mode:04o}, owned by {_owner(path)}; "
                f"students' servers cannot submit into it. nbgrader needs it world-writable with the "
                f"sticky bit, like /tmp: `sudo chmod 1777 {path}` (as its owner or root).")
    _configure_or_explain(course)
    if not os.access(path, os.W_OK | os.X_OK):
        # Mode 1777 and still not writable: a read-only mount, or an NFS server mapping this user away.
        raise PipelineError(
            f"the nbgrader exchange {path} ({where}) is not writable from this account; releases and "
            f"collects write into it. Check that it is mounted read-write here (`findmnt -T {path}`) "
            f"and that this user may write to it.")
    return path


def submissions(course: Course, assignment_id: str) -> dict[str, str | None]:
    """{student id: the submission time from timestamp.txt, or None} of collected submissions."""
    found: dict[str, str | None] = {}
    submitted = course.runtime_dir / "submitted"
    for folder in sorted(submitted.glob(f"*/{assignment_id}")):
        if folder.is_dir():
            stamp = safecopy.read_small(folder / "timestamp.txt", limit=200)   # never through a link
            found[folder.parent.name] = stamp.strip() if stamp is not None else None
    return found


def collect(course: Course, assignment_id: str) -> dict[str, str | None]:
    """Check the exchange, collect the newest submission of every student, return :func:`submissions`."""
    check_exchange(course)
    pipeline.collect(course, assignment_id)
    return submissions(course, assignment_id)


# --- archives downloaded from an LMS ------------------------------------------------------------
def lms_pattern(notebooks: list[str]) -> str:
    """The default file-name pattern of :func:`zip_collect` for these released notebooks.

    Matches ``<student id>_<anything>_<notebook>.ipynb``: the student id is the text before the
    first underscore; the middle part (Canvas: user and submission ids, ``LATE``; Moodle:
    ``assignsubmission_file``) is optional; the name must end with a released notebook's name, with
    Canvas's ``-1``, ``-2``, ... of a resubmission allowed. E.g. ``ada_1001_5001_gan_foundations.ipynb``
    and ``bob_LATE_1002_5002_gan_foundations-1.ipynb``. Hidden files (``._x`` from macOS) never match.
    """
    names = sorted({Path(nb).stem for nb in notebooks}, key=len, reverse=True)
    alternatives = "|".join(re.escape(name) for name in names)
    # The middle part is lazy so that a longer notebook name wins over a shorter one it ends with.
    return rf"(?P<student_id>[^/._][^/_]*)_(?:[^/]*?_)?(?P<file_id>{alternatives})(?:-\d+)?\.ipynb$"


def _named_regexp(pattern: str) -> str:
    """nbgrader matches the regexp against the whole path of each extracted file (``re.match``);
    patterns here describe the file name, so any folders in front are allowed."""
    return r"(?:.*/)?" + pattern.removeprefix("^")


def _plan(extracted: Path, regexp: str, released: list[str]):
    """Which student each extracted file goes to, decided as nbgrader's FileNameCollectorPlugin and
    ``zip_collect --strict`` decide it (so what nbgrader leaves out can be reported by name).

    Returns ({student id: [notebook, ...]}, [(file, reason), ...] skipped, [(student, notebook)] twice).
    """
    plan: dict[str, list[str]] = {}
    skipped: list[tuple[Path, str]] = []
    duplicates: list[tuple[str, str]] = []
    files = sorted(Path(root) / name for root, _, names in os.walk(extracted) for name in names)
    for path in files:
        if path.suffix != ".ipynb":
            skipped.append((path, "not a notebook"))
            continue
        match = re.match(regexp, str(path))
        if not match or not match.group("student_id") or not match.group("file_id"):
            skipped.append((path, "the name does not match the pattern"))
            continue
        notebook = os.path.splitext(match.group("file_id"))[0] + ".ipynb"  # as nbgrader names it
        if notebook not in released:
            skipped.append((path, f"{notebook} is not a released notebook ({', '.join(released)})"))
            continue
        student = match.group("student_id")
        if notebook in plan.get(student, []):
            duplicates.append((student, notebook))
        plan.setdefault(student, []).append(notebook)
    return plan, skipped, duplicates


def _run_nbgrader(course: Course, *args: str) -> str:
    """``pipeline.nbgrader`` (which also fails on a configuration that did not load); its log."""
    result = pipeline.nbgrader(course, *args)
    return result.stdout + result.stderr


def zip_collect(course: Course, assignment_id: str, archives: list[Path], *,
                pattern: str | None = None) -> list[str]:
    """Collect submissions downloaded from an LMS with ``nbgrader zip_collect``; return the student ids.

    Parameters
    ----------
    course : the course (its runtime folder is nbgrader's course root).
    assignment_id : a week's assignment; its student version must be generated (release/ holds the
        notebook names the files are matched against).
    archives : the downloaded archives (.zip, .tar.gz) or single notebooks. They are copied (the
        originals stay where they are) into ``<runtime>/downloaded/<assignment>/archive/``, replacing
        what an earlier call put there, and nbgrader extracts them into ``.../extracted/``.
    pattern : a regular expression for a file's name (no folder), with the named groups
        ``student_id`` and ``file_id`` (the notebook's name) and optionally ``timestamp`` (then
        nbgrader writes timestamp.txt and late penalties apply); matched from the start of the name.
        Default: :func:`lms_pattern`. Canvas by numeric user id, say:
        ``[^_]+_(?:LATE_)?(?P<student_id>\\d+)_\\d+_(?P<file_id>gan_foundations)(?:-\\d+)?\\.ipynb$``.

    A collected student's earlier ``submitted/`` folder for the assignment is replaced (the download
    is the newest state). Files that map to no student, or to a notebook that was not released, are
    listed on stderr with the reason; if no file maps at all, PipelineError.
    """
    course.week_of(assignment_id)  # an unknown assignment fails here, with the known ones listed
    release = course.runtime_dir / "release" / assignment_id
    released = sorted(str(p.relative_to(release)) for p in release.rglob("*.ipynb")) if release.is_dir() else []
    if not released:
        raise PipelineError(f"no student version of {assignment_id} in {release}: run "
                            f"`python -m grading generate {assignment_id}` first (file names are "
                            f"matched against its notebooks)")
    archives = [Path(a) for a in archives]
    if not archives:
        raise PipelineError("zip_collect needs at least one archive downloaded from the LMS")
    missing = [str(a) for a in archives if not a.is_file()]
    if missing:
        raise PipelineError(f"archive not found: {', '.join(missing)}")
    names = [a.name for a in archives]
    if len(set(names)) != len(names):
        # nbgrader extracts each archive into a folder named after it: equal names would mix them.
        raise PipelineError(f"two archives share a file name ({', '.join(names)}); rename one")
    pattern = pattern or lms_pattern(released)
    try:
        groups = re.compile(pattern).groupindex
    except re.error as err:
        raise PipelineError(f"pattern {pattern!r} is not a regular expression: {err}") from None
    if "student_id" not in groups or "file_id" not in groups:
        raise PipelineError(f"pattern {pattern!r} needs the named groups (?P<student_id>...) and "
                            f"(?P<file_id>...)")
    regexp = _named_regexp(pattern)

    _configure_or_explain(course)
    downloaded = course.runtime_dir / "downloaded" / assignment_id
    archive_dir = downloaded / "archive"
    shutil.rmtree(archive_dir, ignore_errors=True)
    archive_dir.mkdir(parents=True)
    for archive in archives:
        shutil.copy2(archive, archive_dir / archive.name)

    # --force: clear extracted/ of an earlier call, and replace a student's earlier submitted/ folder.
    # --strict: skip notebooks whose name is not a released one instead of collecting them anyway.
    args = ("zip_collect", assignment_id, "--force", "--strict",
            f"--FileNameCollectorPlugin.named_regexp={regexp}")
    try:
        _run_nbgrader(course, *args)
    except PipelineError as err:
        _, _, duplicates = _plan(downloaded / "extracted", regexp, released)
        if duplicates and "timestamp" not in groups:
            twice = ", ".join(f"{student}: {notebook}" for student, notebook in duplicates)
            raise PipelineError(f"the archives hold more than one file for {twice}, and the file names "
                                f"carry no time to pick the newest: keep one per student, or use a "
                                f"pattern with a (?P<timestamp>...) group") from err
        raise

    plan, skipped, _ = _plan(downloaded / "extracted", regexp, released)
    if skipped:
        extracted = downloaded / "extracted"
        lines = [f"  {path.relative_to(extracted)}: {reason}" for path, reason in skipped]
        print(f"zip_collect {assignment_id}: {len(skipped)} file(s) under {extracted} not collected "
              f"(pattern {pattern}):\n"
              + "\n".join(lines) + "\nRename them to <student id>_..._<notebook>.ipynb and run zip_collect "
              "again, or pass a pattern that fits the LMS's names.", file=sys.stderr)
    if not plan:
        found = "the files are listed above" if skipped else "the archives hold no files"
        raise PipelineError(f"no file in {', '.join(names)} matched the pattern {pattern}; nothing was "
                            f"collected ({found})")
    submitted = course.runtime_dir / "submitted"
    lost = [f"{student}/{notebook}" for student, notebooks in plan.items() for notebook in notebooks
            if not (submitted / student / assignment_id / notebook).is_file()]
    if lost:
        raise PipelineError(f"nbgrader zip_collect did not put these where expected under {submitted}: "
                            f"{', '.join(lost)}")
    return sorted(plan)
