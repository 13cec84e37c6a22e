"""What `gankit grade` grades: our course (course.yml) or any plain nbgrader course folder.

Both go through one path (grading/batch.py). A :class:`GradingTarget` names what the grader must
know of a course: where nbgrader's folders are (``submitted/``, ``autograded/``, ``feedback/``),
its course id and gradebook, the nbgrader configuration every job loads, where an assignment's
source (and so its data files) lives, and the limits the grader puts on student code.

* Ours (:func:`target_of`): course/nbgrader_config.py, which reads course.yml; the source is the
  repository's ``assignments/``; answer keys of hidden checks are built before grading.
* A foreign course (:func:`foreign_target`, ``--course DIR``): DIR/nbgrader_config.py as nbgrader
  itself would load it in DIR, with DIR as the course root; the grader adds only its safety
  (sandboxed kernel, trap handlers, default limits: :func:`job_config_text`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from grading.course import REPO_ROOT, Course, CourseError, Grading, checked_gradebook_url

OUR_CONFIG = REPO_ROOT / "course" / "nbgrader_config.py"
# The folder names nbgrader uses by default; the grader's jobs and coordinator use the same.
STANDARD_FOLDERS = {"source_directory": "source", "submitted_directory": "submitted",
                    "autograded_directory": "autograded", "feedback_directory": "feedback"}


@dataclass(frozen=True)
class GradingTarget:
    """One nbgrader course to grade. ``runtime_dir``, ``course_id``, ``gradebook_url`` and ``title``
    are what the ledger and the reports read of a :class:`~grading.course.Course` too."""

    runtime_dir: Path          # nbgrader's course root: submitted/, autograded/, feedback/
    course_id: str
    title: str
    gradebook_url: str
    config_file: Path          # the nbgrader_config.py each job loads
    source_root: Path          # <source_root>/<assignment>: the instructor's version, data files included
    grading: Grading           # limits on student code
    course: Course | None = None   # ours: course.yml (weeks, answer keys); None: a foreign course

    @property
    def ours(self) -> bool:
        return self.course is not None

    def source_dir(self, assignment: str) -> Path:
        return self.source_root / assignment


def target_of(course: Course) -> GradingTarget:
    """Our course, as course.yml describes it."""
    return GradingTarget(runtime_dir=course.runtime_dir, course_id=course.course_id, title=course.title,
                         gradebook_url=course.gradebook_url, config_file=OUR_CONFIG,
                         source_root=REPO_ROOT / "assignments", grading=course.grading, course=course)


def _load_nbgrader_config(config_file: Path):
    """The traitlets Config that nbgrader would read from ``config_file`` (which runs as Python)."""
    from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

    try:
        return PyFileConfigLoader(config_file.name, path=str(config_file.parent)).load_config()
    except ConfigFileNotFound:
        raise CourseError(f"{config_file}: not found; a course folder has its own nbgrader_config.py") from None
    except Exception as err:   # the instructor's Python: any error, named with the file
        raise CourseError(f"{config_file} does not load ({type(err).__name__}: {err}); fix it so "
                          f"`nbgrader` itself can run in {config_file.parent}") from None


def foreign_target(folder: str | os.PathLike) -> GradingTarget:
    """A plain nbgrader course folder (source/, submitted/, its own nbgrader_config.py, a gradebook).

    The course id and gradebook come from its configuration, exactly as nbgrader run in the folder
    reads them; the folder is the course root whatever the file says (a different
    ``CourseDirectory.root`` is refused: it would mean grading another folder than the one named).
    """
    from nbgrader.coursedir import CourseDirectory

    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise CourseError(f"--course {folder}: no such folder")
    config_file = root / "nbgrader_config.py"
    if not config_file.is_file():
        raise CourseError(f"{config_file}: not found; --course takes an nbgrader course folder with its own "
                          f"nbgrader_config.py (c.CourseDirectory.course_id = ...)")
    config = _load_nbgrader_config(config_file)
    named_root = config.get("CourseDirectory", {}).get("root")
    if named_root and Path(root, named_root).resolve() != root:
        raise CourseError(f"{config_file} sets CourseDirectory.root to {named_root!r}, not {root}: pass "
                          f"--course {named_root} or remove that line")
    coursedir = CourseDirectory(config=config)
    coursedir.root = str(root)
    for trait, standard in STANDARD_FOLDERS.items():
        if getattr(coursedir, trait) != standard:
            raise CourseError(f"{config_file} renames nbgrader's {standard}/ folder to "
                              f"{getattr(coursedir, trait)!r}; gankit grade --course needs the standard names")
    url = coursedir.db_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        # nbgrader run in the folder reads a relative SQLite path from there
        url = f"sqlite:///{(root / url[len('sqlite:///'):]).resolve()}"
    url = checked_gradebook_url(url, f"{config_file}: CourseDirectory.db_url")
    return GradingTarget(runtime_dir=root, course_id=coursedir.course_id, title=coursedir.course_id or root.name,
                         gradebook_url=url, config_file=config_file, source_root=root / "source",
                         grading=Grading())


def job_config_text(config_file: Path, grading: Grading | None) -> str:
    """The nbgrader_config.py of a job's scratch course: the course's own, loaded as it is, and for
    a foreign course (``grading`` given) the grader's autograde pass over it: sandbox-aware
    execution, trap handlers and limits (grading/nbgrader_setup.py ``configure_autograde``).

    The scratch course's root and gradebook are set on nbgrader's command line, which wins over
    any file.
    """
    lines = ["# Written by gankit grade for one job; deleted with the job's scratch course.",
             "c = get_config()  # noqa: F821",
             f"load_subconfig({str(config_file)!r})  # noqa: F821 - the course's own configuration"]
    if grading is not None:
        lines += ["import sys",
                  f"sys.path.insert(0, {str(REPO_ROOT)!r})",
                  "from grading.course import Grading",
                  "from grading.nbgrader_setup import configure_autograde",
                  f"configure_autograde(c, {grading!r}, {{}})"]
    return "\n".join(lines) + "\n"
