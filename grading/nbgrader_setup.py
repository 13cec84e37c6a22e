"""Turn course.yml into nbgrader configuration (used by course/nbgrader_config.py)."""
from __future__ import annotations

import os

from grading.course import REPO_ROOT, Course, CourseError, Grading

AUTOGRADE_PREPROCESSORS = [
    "grading.preprocessors.InjectGradingParameters",
    "grading.reference_check.FlagReferenceAnswers",   # an answer that imports gankit's own: not done
    "grading.preprocessors.GradingExecute",
    "grading.reference_check.NoteReferenceAnswers",
    "grading.preprocessors.RelabelStderr",
    "grading.preprocessors.MarkUnrunTestCells",
    "grading.checks.CompareHiddenChecks",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# nbgrader's own feedback, with the hidden tests left out (grading/checks.py HideHiddenTests)
FEEDBACK_PREPROCESSORS = ["grading.checks.HideHiddenTests", "nbgrader.preprocessors.GetGrades",
                          "grading.feedback.MarkPendingGrades",   # "waiting for grading", not 0.0 / 4.0
                          "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]


def ensure_runtime_layout(course: Course) -> None:
    """Create the runtime folder; nbgrader's ``source/`` there points at the repo's assignments/.

    Instructors author in assignments/ (tracked); nbgrader wants ``<root>/source/<assignment>``.
    A symlink keeps one copy. A ``source`` that is already there and is something else (a link to
    another checkout's assignments, a dangling link) is someone's choice or mistake: it is refused
    with what to do, never re-pointed behind their back. A real folder is left as it is (a job's
    scratch course holds the assignment's data files there).
    """
    course.runtime_dir.mkdir(parents=True, exist_ok=True)
    source = course.runtime_dir / "source"
    target = REPO_ROOT / "assignments"
    if source.is_symlink() and source.resolve() != target.resolve():
        raise CourseError(f"{source} is a link to {os.readlink(source)}, not to this repository's {target}: "
                          f"remove the link (`rm {source}`) to grade from {target}, or grade that other "
                          f"course with `gankit grade ASSIGNMENT --course DIR`")
    if not source.exists():
        source.symlink_to(target, target_is_directory=True)
    ensure_local_exchange(course)


def ensure_local_exchange(course: Course) -> None:
    """Create the exchange when it lies inside the runtime folder (one machine's course), mode 1777.

    nbgrader's default exchange refuses directories that are not world-writable (sticky /tmp-style).
    Only an exchange inside the runtime is ours to create and chmod; a shared one (an NFS mount
    set up by an admin) is checked by grading/intake.py, never created in place of a missing mount.
    """
    if course.exchange_dir.is_relative_to(course.runtime_dir):
        course.exchange_dir.mkdir(parents=True, exist_ok=True)
        if course.exchange_dir.stat().st_mode & 0o7777 != 0o1777:
            os.chmod(course.exchange_dir, 0o1777)


def grading_parameters(course: Course) -> dict:
    """What papermill injects into each graded notebook."""
    return {**course.grading.parameters, "DATA_DIR": str(course.data_dir)}


def configure_autograde(c, grading: Grading, parameters: dict) -> None:
    """The autograde pass alone: also used on assignments that are not ours (nbgrader's example)."""
    # A deleted test cell comes back from the gradebook and runs, instead of being recorded as None.
    c.OverwriteCells.add_missing_cells = True
    c.Autograde.autograde_preprocessors = AUTOGRADE_PREPROCESSORS
    c.Execute.timeout = grading.cell_timeout_s
    c.GradingExecute.timeout = grading.cell_timeout_s
    c.GradingExecute.notebook_timeout = grading.notebook_timeout_s
    c.GradingExecute.max_kernel_restarts = grading.max_kernel_restarts
    c.GradingExecute.max_output_bytes = int(grading.max_output_mb * 2**20)
    # Read only when grading in the sandbox (grading/sandbox.py); harmless otherwise.
    c.SandboxedKernelManager.max_procs = grading.max_processes
    c.InjectGradingParameters.parameters = parameters


def configure_feedback_template(c) -> None:
    """nbgrader's feedback template, with ungraded written answers shown as waiting (grading/templates)."""
    import nbgrader
    nbgrader_templates = os.path.join(os.path.dirname(nbgrader.__file__), "server_extensions", "formgrader", "templates")
    c.HTMLExporter.template_name = "gankit_feedback"
    c.HTMLExporter.template_file = "gankit_feedback.html.j2"   # extends nbgrader's index.html.j2
    ours = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
    c.HTMLExporter.extra_template_basedirs = [nbgrader_templates, ours]


def configure_exchange(c, course: Course) -> None:
    """What students and instructors share: the course id and where the exchange lives."""
    c.CourseDirectory.course_id = course.course_id
    c.Exchange.root = str(course.exchange_dir)
    c.Exchange.timezone = course.timezone


def configure_student(c, course: Course, student_id: str | None = None) -> None:
    """A student's server (course/server/student/): fetch, validate and submit, nothing else.

    No course root and no gradebook. ``student_id`` names the submission, and fetched assignments
    land in that student's folder, ``<runtime>/students/<id>`` (nbgrader's ``Exchange.assignment_dir``;
    grading/lab.py roots the server at the repository above it). Without it nbgrader uses the login
    name (``nbgrader.utils.get_username``) and the server's notebook folder (".").
    """
    configure_exchange(c, course)
    if student_id:
        c.Exchange.assignment_dir = str(course.runtime_dir / "students" / student_id)
    # Validate runs each cell under the grader's limit, not nbgrader's 30 s, so it agrees with autograde.
    c.Execute.timeout = course.grading.cell_timeout_s
    # Validate names the first cell that raised and warns of answers using gankit's own reference.
    from grading import validate_hooks
    c.Execute.on_notebook_start = validate_hooks.on_notebook_start
    c.Execute.on_cell_start = validate_hooks.on_cell_start
    c.Execute.on_cell_error = validate_hooks.on_cell_error
    if student_id:
        c.CourseDirectory.student_id = student_id
    if course.exchange_server.url:
        # No shared folder: the assignment list talks to the course's exchange server over HTTP
        # (grading/exchange_http.py), as the student its token names (README, "Separate servers").
        from grading.exchange_http import STUDENT_CLASSES

        for action, class_name in STUDENT_CLASSES.items():
            setattr(c.ExchangeFactory, action, class_name)
        c.HttpExchange.url = course.exchange_server.url
        c.HttpExchange.max_upload_mb = course.exchange_server.max_upload_mb


def configure(c, course: Course) -> None:
    """Fill a traitlets Config ``c`` for every nbgrader app of this course."""
    ensure_runtime_layout(course)
    configure_exchange(c, course)
    c.CourseDirectory.root = str(course.runtime_dir)
    c.CourseDirectory.db_url = course.gradebook_url
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]
    configure_autograde(c, course.grading, grading_parameters(course))
    # collect never follows a link or opens a pipe planted in the exchange (grading/safe_collect.py)
    c.ExchangeFactory.collect = "grading.safe_collect.SafeExchangeCollect"
    # Hidden checks are compared with answer keys kept here, outside every kernel (grading/checks.py),
    # and feedback never shows the hidden tests themselves (nbgrader's own does: jupyter/nbgrader#917).
    c.CompareHiddenChecks.keys_dir = str(course.runtime_dir / "grading" / "keys")
    c.GenerateFeedback.preprocessors = FEEDBACK_PREPROCESSORS
    configure_feedback_template(c)
    c.AssignLatePenalties.plugin_class = "grading.late.CourseLatePolicy"
    c.CourseLatePolicy.penalty_per_day = course.late_policy.penalty_per_day
    c.CourseLatePolicy.max_days = course.late_policy.max_days
    # What generate_assignment leaves in each solution region of the student version.
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
