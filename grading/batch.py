"""`gankit grade ASSIGNMENT`: grade a class in parallel, one GPU per job, resumable.

nbgrader autogrades one notebook after another and writes the gradebook from inside the run. Here
a coordinator hands out one job per collected submission and alone writes what comes back:

* A job (:func:`grade_submission`) grades one submission in a private scratch course: a copy of
  that submission, a snapshot of the gradebook, the assignment's data files from its source (which
  nbgrader restores over the student's) and the course's own nbgrader configuration, with
  ``CUDA_VISIBLE_DEVICES`` set to the job's GPU. It runs nbgrader's own ``autograde`` there and
  returns the result as data (scores, comments, late penalty, the autograded files), so it can run
  in a local worker or on another server through Dask, and never touches the real gradebook.
* The coordinator (:func:`record`) puts the autograded files in place, then writes the student's
  scores and a row of ``gankit_graded`` in one transaction. That row is the commit point: killing
  the batch at any moment and running it again loses no grade and grades nothing twice, because a
  submission is skipped when a row says it was graded at the same submission timestamp.

Workers: ``--workers N`` (default one per GPU, else one per core), ``--gpus all|none|0,1``;
``--scheduler ADDRESS`` sends the same jobs to a Dask cluster whose workers were started with a
``GPU=1`` resource each, so one job holds one GPU (README, "Grading on several servers").

``--course DIR`` grades another nbgrader course folder the same way (grading/target.py): its own
nbgrader_config.py and gradebook, with the grader's sandbox, trap handlers and default limits.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import queue
import shutil
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from grading import safecopy, scratch
from grading.course import REPO_ROOT, Course, CourseError, Grading, load_course
from grading.launcher import LauncherGone, WarmNbgrader
from grading.nbgrader_setup import ensure_runtime_layout
from grading.target import OUR_CONFIG, GradingTarget, foreign_target, job_config_text, target_of

LEDGER = "gankit_graded"


@dataclass(frozen=True)
class Job:
    """One submission to grade; plain data, so it travels to a Dask worker."""

    assignment: str
    student: str
    submitted_at: str          # timestamp.txt as collected: what "already graded" compares
    submission_dir: Path       # <runtime>/submitted/<student>/<assignment>
    snapshot: Path             # a copy of the gradebook taken when the batch started
    wall_limit_s: float
    gpu: str | None = None     # set by the local pool; under Dask the worker's own environment
    sandbox: bool = True       # the kernel in bubblewrap (grading/sandbox.py)
    course_file: Path = REPO_ROOT / "course" / "course.yml"
    nbgrader_args: tuple = ()  # more nbgrader options, e.g. ("--GradingExecute.timeout=20",)
    keys: tuple = ()           # ((notebook, answer-key JSON bytes), ...): compared outside the kernel
    notebooks: tuple = ()      # ((notebook, (grade ids, ...)), ...): what the submission must contain
    threads: int = 0           # the kernel's torch/OpenMP threads (0: the library's default)
    output_limit_bytes: int = 0   # course.yml grading.max_submission_output_mb: the autograded folder's budget
    stage_in: Path | None = None  # autograded/<student>: the job copies its files into a .new~ folder
    #                               there; None (another host): the files travel back as bytes
    config_file: Path = OUR_CONFIG   # the course's own nbgrader_config.py, loaded by the job's nbgrader
    source_dir: Path | None = None   # <source>/<assignment>: its data files are restored over the student's
    grading: Grading | None = None   # a foreign course: the grader's limits put over its configuration
    data_seed: Path | None = None    # <runtime>/data: embedded data the answer-key run built, copied in


@dataclass
class Result:
    """What a job sends back to the coordinator."""

    assignment: str
    student: str
    submitted_at: str
    status: str                # "graded" or "failed"
    reason: str = ""
    duration_s: float = 0.0
    gpu: str | None = None
    host: str = ""
    notebooks: dict = field(default_factory=dict)  # name -> {"grades": {id: [auto, needs_manual]},
    #                                                "comments": {id: text}, "late_penalty": float|None}
    files: dict = field(default_factory=dict)      # path relative to autograded/<s>/<a> -> bytes
    staged: str = ""           # or: a folder beside autograded/<s>/<a> holding them, to be renamed in


# --- a job ---------------------------------------------------------------------------------------
def grade_submission(job: Job, warm: WarmNbgrader | None = None) -> Result:
    """Autograde one submission in a scratch course and return its scores as data.

    ``warm``: a warm nbgrader launcher of this worker slot (grading/launcher.py); without one (a
    Dask worker) nbgrader starts cold, as its own process."""
    started = time.monotonic()
    gpu = job.gpu if job.gpu is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    result = Result(job.assignment, job.student, job.submitted_at, "failed", gpu=gpu, host=platform.node())
    scratch.remove_stale_scratch()   # a killed job's keys on this host, whoever ran it
    work = scratch.scratch_dir(scratch.SCRATCH_PREFIX, job.student)
    try:
        submission = work / "submitted" / job.student / job.assignment
        refused = _copy_submission_safely(job.submission_dir, submission)
        intake_note = ("not graded: " + safecopy.describe(refused)) if refused else ""
        problem = check_submission(job, submission)
        if problem:   # flagged with a reason a TA can act on, instead of an nbgrader traceback
            result.reason = f"{problem}; {intake_note}" if intake_note else problem
            return result
        if refused:
            _tell_the_student(submission, job, refused)
        shutil.copy2(job.snapshot, work / "gradebook.db")
        keys = work / "keys"   # beside the gradebook: never bound into the sandbox
        for notebook, data in job.keys:
            (keys / job.assignment).mkdir(parents=True, exist_ok=True)
            (keys / job.assignment / f"{notebook}.json").write_bytes(data)
        _prepare_scratch_course(job, work)
        if job.data_seed is not None and job.data_seed.is_dir():
            # Built once per class by the instructor's own notebook (the answer-key run), as nbgrader's
            # serial autograde shares it: rebuilding it per job cost 0.6 s. A copy, so that no
            # student's code can change what the next one reads.
            safecopy.copy_tree(job.data_seed, work / "data")
        env = {**_nbgrader_env(), "GANKIT_COURSE_RUNTIME": str(work), "MPLBACKEND": "Agg",
               "GANKIT_COURSE_FILE": str(job.course_file),
               # the private copy, whatever course.yml or this worker's environment names
               "GANKIT_GRADEBOOK_URL": f"sqlite:///{work / 'gradebook.db'}"}
        if job.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = job.gpu   # "" hides every GPU: the job runs on the CPU
        if job.threads:   # passed on into the sandbox: kernels side by side do not fight over cores
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(job.threads)
        argv = _nbgrader_args(job, work, keys, gpu)
        log_file = work / "nbgrader.log"   # beside the gradebook, outside anything the kernel sees
        returncode = _run_nbgrader(argv, cwd=work, env=env, log=log_file, timeout=job.wall_limit_s, warm=warm)
        if returncode is None:
            result.reason = f"grading took longer than {job.wall_limit_s:.0f} s and was stopped"
            return result
        log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.is_file() else ""
        if "Exception while loading config file" in log:   # nbgrader went on with its own defaults
            lines = [line for line in log.splitlines() if "Error" in line or "Exception" in line]
            result.reason = f"{job.config_file} did not load in the job: {lines[-1].strip()[:400] if lines else ''}"
            return result
        autograded = work / "autograded" / job.student / job.assignment
        if returncode != 0 or "There was an error processing" in log or not autograded.is_dir():
            errors = [line for line in log.splitlines() if "[ERROR]" in line or "Error" in line]
            result.reason = (errors[-1] if errors else f"nbgrader exit {returncode}").strip()[:500]
            return result
        result.notebooks = _scores(work / "gradebook.db", job)
        problem = _hand_over_output(autograded, job, result)
        if problem:
            result.reason = problem
            return result
        result.reason = intake_note
        result.status = "graded"
        return result
    finally:
        result.duration_s = time.monotonic() - started
        shutil.rmtree(work, ignore_errors=True)


def _prepare_scratch_course(job: Job, work: Path) -> None:
    """The rest of the scratch course besides the submission and the gradebook: its
    nbgrader_config.py and ``source/<assignment>/`` with the assignment's data files.

    nbgrader's autograde copies every file of the source folder but the notebooks over the
    student's copy (``Autograde.exclude_overwriting`` names exceptions), so a data file a student
    changed is graded as the instructor wrote it. Only those files are copied: the source
    notebooks (hidden tests) stay out of the scratch course, which the kernel cannot see anyway
    (grading/sandbox.py binds the autograded folder alone).
    """
    (work / "nbgrader_config.py").write_text(job_config_text(job.config_file, job.grading), encoding="utf-8")
    data = work / "source" / job.assignment
    data.mkdir(parents=True, exist_ok=True)
    if job.source_dir is not None and job.source_dir.is_dir():
        _copy_data_files(job.source_dir, data)


def _copy_data_files(source: Path, target: Path) -> None:
    """Copy the files under SOURCE but notebooks; a link is followed only to a file inside SOURCE."""
    root = source.resolve()
    for folder, _subfolders, files in os.walk(source):   # os.walk does not descend into linked folders
        for name in files:
            path = Path(folder, name)
            if name.endswith(".ipynb"):
                continue
            real = path.resolve()
            if not real.is_file() or not real.is_relative_to(root):
                continue
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real, destination)


def _nbgrader_args(job: Job, work: Path, keys: Path, gpu: str | None) -> list[str]:
    """``nbgrader autograde`` of this one submission in the scratch course (the arguments after
    ``nbgrader``).

    Root and gradebook on the command line win over any configuration file. The sandbox is set on
    nbgrader's ``Execute``, which our GradingExecute extends: even a course configuration that
    left nbgrader's own executor in place runs student code in the sandbox.
    """
    args = ["autograde", job.assignment, f"--student={job.student}", "--force",
            f"--CourseDirectory.root={work}", f"--CourseDirectory.db_url=sqlite:///{work / 'gradebook.db'}",
            f"--CompareHiddenChecks.keys_dir={keys}"]
    if job.sandbox:
        (work / "data").mkdir(exist_ok=True)  # the grading DATA_DIR: the smoke data is built there
        args += ["--Execute.kernel_manager_class=grading.sandbox.SandboxedKernelManager",
                 f"--SandboxedKernelManager.gpu={gpu or ''}",
                 f"--SandboxedKernelManager.writable={work / 'data'}"]
    return args + list(job.nbgrader_args)


def _nbgrader_env() -> dict[str, str]:
    """This environment, with this interpreter's scripts (nbgrader shells out to `alembic`) and the
    repository (the course's nbgrader_config.py imports grading) found first."""
    return {**os.environ,
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run_nbgrader(argv: list[str], *, cwd: Path, env: dict, log: Path, timeout: float,
                  warm: WarmNbgrader | None) -> int | None:
    """nbgrader's exit status (its output in ``log``), or None when it ran past ``timeout``.

    Forked from the slot's warm launcher when there is one; if that launcher is gone, and on
    Dask workers, as a process of its own (still without the import nbgrader never uses)."""
    if warm is not None:
        try:
            return warm.run(argv, cwd=cwd, env=env, log=log, timeout=timeout)
        except LauncherGone:
            pass
    with open(log, "wb") as out:
        try:
            return subprocess.run([sys.executable, "-m", "grading.launcher", "--", *argv], cwd=cwd, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return None


def _copy_submission_safely(source: Path, target: Path) -> list[tuple[str, str]]:
    """Copy the regular files of a collected submission, never through a link, a pipe or a hard
    link; return what was left out, with what collect already left out of it (grading/safe_collect.py)."""
    from grading.safe_collect import INTAKE_NOTE, read_intake_note

    try:
        refused = safecopy.copy_tree(source, target, ignore=lambda folder, names: {INTAKE_NOTE} & set(names))
    except OSError as err:   # the submission folder itself is a link, or unreadable
        target.mkdir(parents=True, exist_ok=True)
        return [(".", f"the submission folder could not be opened without following links ({err.strerror})")]
    return read_intake_note(source) + refused


def _tell_the_student(submission: Path, job: Job, refused: list[tuple[str, str]]) -> None:
    """A note on top of each notebook, so the feedback says which files were left out, and why."""
    import nbformat

    lines = "\n".join(f"* `{path}`: {reason}" for path, reason in refused)
    text = ("**Note from the grader.** These files of your submission were not used, so code that reads "
            f"them failed:\n\n{lines}\n\nSubmit regular files only (no links, pipes or hard links).")
    for name, _ in job.notebooks:
        path = submission / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(text))
        nbformat.write(nb, path)


def _hand_over_output(autograded: Path, job: Job, result: Result) -> str | None:
    """Put the autograded files where the coordinator takes them, within the output budget: into a
    folder beside their destination (same host), else into ``result.files``. Never through a link
    the kernel made. Returns why not, or None."""
    limit = job.output_limit_bytes
    total = safecopy.tree_size(autograded)
    if limit and total > limit:
        return (f"the graded notebook left {total / 2**20:.0f} MB of files, over grading.max_submission_output_mb "
                f"= {limit / 2**20:g} MB: look at what the submission writes in its folder")
    try:
        if job.stage_in is not None:
            job.stage_in.mkdir(parents=True, exist_ok=True)
            staged = _new_folder(job.stage_in / job.assignment)
            try:
                safecopy.copy_tree(autograded, staged, limit_bytes=limit)
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
            result.staged = str(staged)
        else:
            result.files, _ = safecopy.read_tree(autograded, limit_bytes=limit)
    except safecopy.OutputTooLarge as err:
        return f"the graded notebook's files grew past grading.max_submission_output_mb while copied ({err})"
    return None


def check_submission(job: Job, folder: Path | None = None) -> str | None:
    """Why the submission cannot be graded as it stands (renamed, missing, unreadable or another
    assignment's notebook), or None. nbgrader alone scores such a submission 0 without a word.

    ``folder``: where to read it (the job's safe copy); messages name ``job.submission_dir``.
    """
    import nbformat

    folder = folder or job.submission_dir
    present = sorted(p.name for p in folder.glob("*.ipynb"))
    rerun = f"then rerun `gankit grade {job.assignment} --student {job.student}`"
    for name, grade_ids in job.notebooks:
        path = folder / f"{name}.ipynb"
        if not path.is_file():
            others = [p for p in present if p[:-6] not in dict(job.notebooks)]
            if others:
                return (f"{path.name} is missing; the submission has {', '.join(others)} instead (renamed?): "
                        f"rename it in {job.submission_dir}, {rerun}")
            return f"{path.name} is missing from the submission (no notebook of this assignment in {job.submission_dir})"
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:   # not JSON, not a notebook, an nbformat from the future
            detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            return (f"{path.name} is not a readable notebook ({detail}): ask the student for a copy saved by "
                    f"Jupyter, put it in {job.submission_dir}, {rerun}")
        found = {cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") for cell in nb.get("cells", [])}
        # Less than half: a student who deleted a test cell still has the rest; assignments may share a
        # name or two (`losses`, `test_training_ran`), never most of them.
        if grade_ids and 2 * len(found & set(grade_ids)) < len(grade_ids):
            return (f"{path.name} has only {len(found & set(grade_ids))} of this assignment's {len(grade_ids)} graded "
                    f"cells: it looks like the notebook of another assignment (or most cells were deleted); ask the "
                    f"student to resubmit, {rerun}")
    return None


def expected_notebooks(course: Course, assignment: str) -> tuple:
    """((notebook, (grade ids of its graded and solution cells, ...)), ...) from the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(gradebook_url(course), course.course_id) as gb:
        try:
            notebooks = gb.find_assignment(assignment).notebooks
        except MissingEntry:
            raise CourseError(f"{assignment} is not in the gradebook: generate and release it first") from None
        return tuple((nb.name, tuple(sorted({c.name for c in nb.grade_cells} | {c.name for c in nb.solution_cells})))
                     for nb in notebooks)


def _scores(db: Path, job: Job) -> dict:
    from nbgrader.api import Gradebook

    notebooks = {}
    with Gradebook(f"sqlite:///{db}") as gb:
        submission = gb.find_submission(job.assignment, job.student)
        for notebook in submission.notebooks:
            notebooks[notebook.name] = {
                "grades": {g.name: [g.auto_score, bool(g.needs_manual_grade)] for g in notebook.grades},
                "comments": {c.name: c.auto_comment for c in notebook.comments},
                "late_penalty": notebook.late_submission_penalty,
            }
    return notebooks


# --- the coordinator -----------------------------------------------------------------------------
def gradebook_url(course: Course) -> str:
    return course.gradebook_url   # SQLite in the runtime, or the database course.yml names


def _ledger_table():
    from sqlalchemy import Column, Float, MetaData, String, Table, Text

    return Table(LEDGER, MetaData(),
                 Column("assignment", String(128), primary_key=True), Column("student", String(128), primary_key=True),
                 Column("submitted_at", String(64)), Column("status", String(16)), Column("reason", Text),
                 Column("duration_s", Float), Column("gpu", String(64)), Column("host", String(128)),
                 Column("graded_at", String(64)))


def ledger(course: Course, assignment: str) -> dict[str, dict]:
    """{student: the last grading of their submission} (status, submitted_at, gpu, duration_s, ...)."""
    from nbgrader.api import Gradebook
    from sqlalchemy import select

    table = _ledger_table()
    with Gradebook(gradebook_url(course), course.course_id) as gb:
        table.create(gb.db.get_bind(), checkfirst=True)
        rows = gb.db.execute(select(table).where(table.c.assignment == assignment)).mappings().all()
    return {row["student"]: dict(row) for row in rows}


def record(course: Course, result: Result) -> None:
    """Write one result: the autograded folder first, then scores and the ledger row in one commit."""
    from nbgrader.api import Gradebook
    from nbgrader.utils import parse_utc
    from sqlalchemy import delete, insert
    from sqlalchemy.exc import SAWarning

    if result.status == "graded":
        target = course.runtime_dir / "autograded" / result.student / result.assignment
        if result.staged:
            _swap_in(target, Path(result.staged))
        else:
            _replace_folder(target, result.files)
    elif result.staged:
        shutil.rmtree(result.staged, ignore_errors=True)
    table = _ledger_table()
    with Gradebook(gradebook_url(course), course.course_id) as gb:
        table.create(gb.db.get_bind(), checkfirst=True)
        if result.status == "graded":
            # Creates the submission's rows if they are new (nbgrader commits that on its own; a
            # kill right after leaves no ledger row, so the rerun grades the student again).
            gb.update_or_create_student(result.student)
            stamp = {} if result.submitted_at.startswith("sha256:") else {"timestamp": parse_utc(result.submitted_at)}
            with warnings.catch_warnings():  # nbgrader's add_submission trips SQLAlchemy's autoflush notice
                warnings.filterwarnings("ignore", message=".*not in session", category=SAWarning)
                gb.update_or_create_submission(result.assignment, result.student, **stamp)
            for name, scores in result.notebooks.items():
                for grade_id, (auto_score, needs_manual) in scores["grades"].items():
                    grade = gb.find_grade(grade_id, name, result.assignment, result.student)
                    grade.auto_score, grade.needs_manual_grade = auto_score, needs_manual
                for comment_id, text in scores["comments"].items():
                    gb.find_comment(comment_id, name, result.assignment, result.student).auto_comment = text
                notebook = gb.find_submission_notebook(name, result.assignment, result.student)
                notebook.late_submission_penalty = scores["late_penalty"]
        gb.db.execute(delete(table).where((table.c.assignment == result.assignment)
                                          & (table.c.student == result.student)))
        gb.db.execute(insert(table).values(
            assignment=result.assignment, student=result.student, submitted_at=result.submitted_at,
            status=result.status, reason=result.reason, duration_s=result.duration_s, gpu=result.gpu,
            host=result.host, graded_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")))
        gb.db.commit()


def _new_folder(target: Path) -> Path:
    """An empty ``.<name>.new~PID@HOST~XXXX`` folder beside ``target``: removed by the next run if
    this process dies before swapping it in (grading/scratch.py)."""
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.new{scratch.owner_tag()}", dir=target.parent))


def _swap_in(target: Path, fresh: Path) -> None:
    """Replace ``target`` by ``fresh`` (beside it) with two renames."""
    old = target.with_name(f".{target.name}.old{scratch.owner_tag()}")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(fresh, target)
    shutil.rmtree(old, ignore_errors=True)


def _replace_folder(target: Path, files: dict[str, bytes]) -> None:
    """Write the files (sent back by a job on another host) into a new folder beside ``target``,
    then swap it in."""
    fresh = _new_folder(target)
    for relative, data in files.items():
        path = (fresh / relative).resolve()
        if not path.is_relative_to(fresh.resolve()):   # a worker's answer is data: no ../ in names
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _swap_in(target, fresh)


def as_target(course: Course | GradingTarget) -> GradingTarget:
    return course if isinstance(course, GradingTarget) else target_of(course)


def find_jobs(course: Course | GradingTarget, assignment: str, snapshot: Path, *, student: str | None = None,
              force: bool = False, sandbox: bool = True, nbgrader_args: tuple = (),
              keys: tuple = (), notebooks: tuple = ()) -> tuple[list[Job], list[str]]:
    """Collected submissions still to grade, and the students skipped as already graded."""
    target = as_target(course)
    submitted = target.runtime_dir / "submitted"
    done = ledger(course, assignment)
    jobs, skipped = [], []
    for folder in sorted(submitted.glob(f"*/{assignment}")) if submitted.is_dir() else []:
        name = folder.parent.name
        if not folder.is_dir() or (student is not None and name != student):
            continue
        stamp_text = safecopy.read_small(folder / "timestamp.txt", limit=200)
        # LMS archives (zip_collect) carry no timestamp: their contents tell a re-upload apart
        stamp = stamp_text.strip() if stamp_text is not None else _content_hash(folder)
        previous = done.get(name)
        if not force and previous and previous["status"] == "graded" and previous["submitted_at"] == stamp:
            skipped.append(name)
            continue
        wall = target.grading.notebook_timeout_s + 120  # nbgrader's own start and the kernel's
        ours = {"course_file": target.course.source_file} if target.ours else {"grading": target.grading}
        jobs.append(Job(assignment, name, stamp, folder, snapshot, wall, sandbox=sandbox,
                        nbgrader_args=tuple(nbgrader_args), keys=keys, notebooks=notebooks,
                        config_file=target.config_file, source_dir=target.source_dir(assignment),
                        output_limit_bytes=int(target.grading.max_submission_output_mb * 2**20),
                        stage_in=target.runtime_dir / "autograded" / name,
                        data_seed=target.course.data_dir if target.ours else None, **ours))
    if student is not None and not jobs and student not in skipped:
        raise CourseError(f"no collected submission of {assignment} from {student!r} under {submitted}")
    return jobs, skipped


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for relative, fd, reason in safecopy.walk(folder):   # what grading reads: links never followed
        digest.update(relative.encode() + b"\0")
        if fd is None:
            digest.update(reason.encode())
            continue
        while chunk := os.read(fd, safecopy.CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:16]}"


def _snapshot(course: Course) -> Path:
    """A consistent SQLite copy of the gradebook (SQLite or PostgreSQL) for the jobs to read."""
    from grading import gradebook

    folder = course.runtime_dir / "grading"
    folder.mkdir(parents=True, exist_ok=True)
    return gradebook.snapshot(gradebook_url(course), folder / f"{scratch.SNAPSHOT_PREFIX}{scratch.owner_tag()}.db")


def visible_gpus() -> list[str]:
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch, a broken driver: grade on the CPU
        return []


def parse_gpus(spec: str) -> list[str]:
    """``all`` (every visible GPU), ``none``, or a list such as ``0,1``."""
    if spec == "all":
        return visible_gpus()
    if spec == "none":
        return []
    ids = [part.strip() for part in spec.split(",") if part.strip()]
    if not ids or not all(part.isdigit() for part in ids):
        raise CourseError(f"--gpus takes all, none or GPU numbers such as 0,1; got {spec!r}")
    return ids


def grade(course: Course | GradingTarget, assignment: str, *, workers: int | None = None, gpus: str = "all",
          scheduler: str | None = None, student: str | None = None, force: bool = False,
          progress: bool = True, sandbox: bool = True, nbgrader_args: tuple = ()) -> dict[str, Result]:
    """Grade every collected submission of ``assignment`` not graded yet; return the new results.

    ``sandbox=False`` runs student code with the grader's own rights; otherwise a missing or
    unusable bubblewrap is an error that says how to install it. ``course``: ours (a Course) or
    any nbgrader course folder (``grading.target.foreign_target``).
    """
    from grading.batch_lock import BatchLock
    from grading.sandbox import SandboxError, check_sandbox

    target = as_target(course)
    if target.ours:
        target.course.week_of(assignment)  # a clear error for an unknown assignment
    if sandbox:
        try:
            check_sandbox()
        except SandboxError as err:
            raise CourseError(f"refusing to run students' code unsandboxed: {err}") from None
    if target.ours:
        ensure_runtime_layout(target.course)
    from grading import gradebook

    if not gradebook.exists(gradebook_url(target)):
        raise CourseError(f"no gradebook at {gradebook.display(gradebook_url(target))}: "
                          f"generate, release and collect {assignment} first")
    with BatchLock(target.runtime_dir, assignment) as lock:
        if lock.took_over:
            print(f"gankit grade: took over the lock of a batch that is no longer running "
                  f"(pid {lock.took_over.get('pid')}, started {lock.took_over.get('started')})", file=sys.stderr)
        removed = scratch.remove_stale(target.runtime_dir)
        if removed:
            print(f"gankit grade: removed {len(removed)} leftover(s) of a batch that was killed", file=sys.stderr)
        return _grade_locked(target, assignment, workers=workers, gpus=gpus, scheduler=scheduler,
                             student=student, force=force, progress=progress, sandbox=sandbox,
                             nbgrader_args=nbgrader_args)


def _grade_locked(target: GradingTarget, assignment: str, *, workers, gpus, scheduler, student, force,
                  progress, sandbox, nbgrader_args) -> dict[str, Result]:
    """The batch itself, run while holding the assignment's lock."""
    from tqdm.auto import tqdm

    from grading.checks import build_keys

    # the instructor's notebook, run once here: its checks' results travel with each job (hidden
    # checks are ours: another course has none)
    built = build_keys(target.course, assignment) if target.ours else {}
    keys = tuple((name, path.read_bytes()) for name, path in built.items())
    snapshot = _snapshot(target)
    results: dict[str, Result] = {}
    try:
        jobs, skipped = find_jobs(target, assignment, snapshot, student=student, force=force, sandbox=sandbox,
                                  nbgrader_args=nbgrader_args, keys=keys,
                                  notebooks=expected_notebooks(target, assignment))
        if skipped:
            print(f"gankit grade: {len(skipped)} submission(s) already graded at the same timestamp "
                  f"(--force regrades): {', '.join(skipped)}", file=sys.stderr)
        if not jobs:
            return results
        bar = tqdm(total=len(jobs), desc=f"grading {assignment}", unit="nb", disable=not progress,
                   dynamic_ncols=True)
        failed = 0
        for result in _run(jobs, workers=workers, gpus=gpus, scheduler=scheduler):
            record(target, result)
            results[result.student] = result
            failed += result.status != "graded"
            bar.set_postfix(done=len(results) - failed, failed=failed, left=len(jobs) - len(results), refresh=False)
            bar.update(1)
            if result.status != "graded":
                bar.write(f"gankit grade: {result.student}: {result.reason}")
        bar.close()
    finally:
        snapshot.unlink(missing_ok=True)
    return results


def _run(jobs: list[Job], *, workers: int | None, gpus: str, scheduler: str | None):
    """Yield results as jobs finish: on a Dask cluster, or in a local pool pinned to GPUs."""
    if scheduler:
        yield from _run_on_dask(jobs, scheduler, gpus)
        return
    gpus = parse_gpus(gpus)
    workers = workers or len(gpus) or os.cpu_count() or 1
    slots: queue.Queue = queue.Queue()
    for i in range(workers):  # round-robin: with more workers than GPUs, GPUs are shared
        slots.put(gpus[i % len(gpus)] if gpus else "")

    # torch starts a thread per core in every kernel: W kernels side by side would each take all
    # the cores and waste a quarter of them switching (measured on 2 cores, 2 workers).
    threads = max(1, (os.cpu_count() or 1) // workers)

    # Each slot keeps a warm nbgrader launcher: a job forks its nbgrader from it instead of paying
    # nbgrader's 3.5 s of imports again (grading/launcher.py).
    launchers: queue.Queue = queue.Queue()
    warm = [WarmNbgrader(_nbgrader_env()) for _ in range(workers)]
    for launcher in warm:
        launchers.put(launcher)

    def on_a_slot(job: Job) -> Result:
        slot, launcher = slots.get(), launchers.get()
        try:
            return grade_submission(Job(**{**job.__dict__, "gpu": slot, "threads": threads}), warm=launcher)
        finally:
            slots.put(slot)
            launchers.put(launcher)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(on_a_slot, job) for job in jobs]):
                yield future.result()
    finally:
        for launcher in warm:
            launcher.close()


def _run_on_dask(jobs: list[Job], scheduler: str, gpus: str):
    """Each job holds one ``GPU`` resource when the workers offer it (``dask worker --resources
    GPU=1``, one worker per GPU with its own CUDA_VISIBLE_DEVICES); it runs on the worker's GPU."""
    from dask.distributed import Client, as_completed as dask_completed

    with Client(scheduler) as client:
        offered = [w.get("resources", {}) for w in client.scheduler_info()["workers"].values()]
        use_gpus = gpus != "none" and any("GPU" in r for r in offered)
        if gpus != "none" and not use_gpus:
            print(f"gankit grade: no worker of {scheduler} offers a GPU resource: grading on their CPUs",
                  file=sys.stderr)
        # another host: the files come back as bytes, within the output budget
        jobs = [Job(**{**job.__dict__, "stage_in": None}) for job in jobs]
        futures = [client.submit(grade_submission, job if use_gpus else Job(**{**job.__dict__, "gpu": ""}),
                                 key=f"grade-{job.assignment}-{job.student}-{time.time_ns()}",
                                 resources={"GPU": 1} if use_gpus else None, pure=False) for job in jobs]
        for future in dask_completed(futures):
            yield future.result()


def clean(course: Course | GradingTarget) -> list[Path]:
    """``gankit grade --clean``: remove what killed batches of this host left (grading/scratch.py)."""
    return scratch.remove_stale(course.runtime_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gankit grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("assignment", nargs="?", help="the assignment id, e.g. week01_gan_foundations")
    parser.add_argument("--workers", type=int, default=None, help="parallel jobs (default: one per GPU, else one per core)")
    parser.add_argument("--gpus", default="all", help="all (default), none, or GPU numbers such as 0,1")
    parser.add_argument("--scheduler", default=None, help="a Dask scheduler address (tcp://host:8786): grade on its workers")
    parser.add_argument("--student", default=None, help="grade only this student")
    parser.add_argument("--force", action="store_true", help="regrade submissions already graded at the same timestamp")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                        help="run student code with your own rights, without bubblewrap (only for code you trust)")
    parser.add_argument("--clean", action="store_true",
                        help="only remove what killed batches left (scratch folders with answer keys, gradebook "
                             "snapshots, half-written autograded folders), then exit")
    parser.add_argument("--course", default=None, metavar="DIR",
                        help="grade another nbgrader course folder (source/, submitted/, its own "
                             "nbgrader_config.py and gradebook) instead of course/course.yml's")


def run_command(args: argparse.Namespace) -> int:
    # nbgrader shells out to `alembic` for the gradebook: the one of this environment, also when
    # the command is run as .venv/bin/gankit without activating the environment.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    try:
        course = foreign_target(args.course) if args.course else target_of(load_course())
        if args.clean:
            removed = clean(course)
            print(f"gankit grade --clean: removed {len(removed)} leftover(s) of killed batches"
                  + "".join(f"\n  {path}" for path in removed))
            return 0
        if not args.assignment:
            raise CourseError("name the assignment to grade, e.g. `gankit grade week01_gan_foundations`")
        results = grade(course, args.assignment, workers=args.workers, gpus=args.gpus, scheduler=args.scheduler,
                        student=args.student, force=args.force, progress=args.progress, sandbox=args.sandbox)
    except CourseError as err:
        print(f"gankit grade: {err}", file=sys.stderr)
        return 2
    failed = sorted(r.student for r in results.values() if r.status != "graded")
    print(f"gankit grade: {len(results) - len(failed)} graded, {len(failed)} failed"
          + (f" ({', '.join(failed)}: see above)" if failed else ""))
    from grading import report

    runs = ledger(course, args.assignment)   # the whole class, this batch and earlier ones
    if runs:
        print(f"gankit grade: per-cell CSV {report.write_cell_csv(course, args.assignment, runs)}\n"
              f"gankit grade: class report {report.write_class_report(course, args.assignment, runs)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
