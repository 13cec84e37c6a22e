"""`gankit grade`: parallel, resumable grading whose gradebook only the coordinator writes.

One class of three (the answer key, an untouched notebook, one half-solved) is graded four ways
and must get the same scores each time: nbgrader's own serial autograde, `gankit grade` killed
mid-batch and run again, a forced regrade on a Dask LocalCluster, and one student alone.
"""
from __future__ import annotations

import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from grading import batch, pipeline, scratch
from grading.course import CourseError, load_course
from grading.demo import ASSIGNMENT, NOTEBOOK, solutions

pytestmark = pytest.mark.slow
AUTOGRADED_FIRST_HALF = ("discriminator_loss", "generator_losses", "blocks")


def _submit(course, student: str, solve: tuple[str, ...], home: Path) -> None:
    folder = pipeline.fetch(course, ASSIGNMENT, home / student)
    nb = nbformat.read(folder / NOTEBOOK, as_version=4)
    key = solutions(course)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in solve:
            cell.source = key[grade_id]
    nbformat.write(nb, folder / NOTEBOOK)
    pipeline.submit(course, ASSIGNMENT, student, home / student)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A runtime with three collected submissions, nobody graded yet (copied per test)."""
    root = tmp_path_factory.mktemp("class")
    os.environ["GANKIT_COURSE_RUNTIME"] = str(root / "runtime")
    try:
        course = load_course()
        pipeline.generate(course, ASSIGNMENT)
        pipeline.release(course, ASSIGNMENT)
        everything = tuple(solutions(course))
        _submit(course, "ada", everything, root / "homes")
        _submit(course, "bob", (), root / "homes")
        _submit(course, "cy", tuple(g for g in everything if g in AUTOGRADED_FIRST_HALF), root / "homes")
        pipeline.collect(course, ASSIGNMENT)
    finally:
        del os.environ["GANKIT_COURSE_RUNTIME"]
    return root / "runtime"


@pytest.fixture
def runtime(collected, tmp_path, monkeypatch):
    target = tmp_path / "runtime"
    shutil.copytree(collected, target, symlinks=True)
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(target))
    return load_course()


def scores(course) -> dict[str, dict[str, float | None]]:
    return {student: {g: s.score for g, s in cells.items()}
            for student, cells in pipeline.cell_scores(course, ASSIGNMENT).items()}


def gankit_grade(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gankit", "grade", ASSIGNMENT, "--gpus", "none", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
                            start_new_session=True)


@pytest.fixture(scope="module")
def reference(collected, tmp_path_factory):
    """nbgrader's own serial autograde of the same class."""
    target = tmp_path_factory.mktemp("serial") / "runtime"
    shutil.copytree(collected, target, symlinks=True)
    os.environ["GANKIT_COURSE_RUNTIME"] = str(target)
    try:
        course = load_course()
        pipeline.autograde(course, ASSIGNMENT)
        return scores(course)
    finally:
        del os.environ["GANKIT_COURSE_RUNTIME"]


@pytest.mark.needs_bwrap
def test_killed_mid_batch_then_rerun_loses_nothing_and_grades_nothing_twice(runtime, reference):
    course = runtime
    db = course.runtime_dir / "gradebook.db"
    first = gankit_grade("--workers", "1", "--no-progress")
    deadline = time.monotonic() + 300
    graded = []
    while not graded:   # kill the coordinator as soon as one student is recorded
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "nothing recorded in 300 s"
        time.sleep(0.2)
        with sqlite3.connect(db) as con:
            if con.execute("select name from sqlite_master where name = ?", (batch.LEDGER,)).fetchone():
                graded = con.execute(f"select student, graded_at from {batch.LEDGER}").fetchall()
    os.killpg(first.pid, signal.SIGKILL)   # the coordinator and its jobs, as a crash would
    first.wait()
    killed = f"~{first.pid}@{scratch.host()}~"   # what it leaves: its snapshot, its job's scratch with keys
    assert list((course.runtime_dir / "grading").glob(f"{scratch.SNAPSHOT_PREFIX}{killed}*"))
    assert len(graded) == 1
    (done_student, done_at), = graded

    rerun = gankit_grade("--workers", "2", "--no-progress")
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output
    assert f"already graded at the same timestamp (--force regrades): {done_student}" in output
    assert "2 graded, 0 failed" in output
    cells_csv = course.runtime_dir / "reports" / f"{ASSIGNMENT}_cells.csv"
    assert f"per-cell CSV {cells_csv}" in output and f"{ASSIGNMENT}_report.html" in output
    with open(cells_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["student"] for row in rows} == {"ada", "bob", "cy"}, "the whole class, both batches"
    assert {row["status"] for row in rows if row["student"] == "ada" and row["cell"].startswith("test_")} == {"passed"}
    ledger = batch.ledger(course, ASSIGNMENT)
    assert sorted(ledger) == ["ada", "bob", "cy"] and ledger[done_student]["graded_at"] == done_at
    assert all(row["status"] == "graded" and row["gpu"] == "" for row in ledger.values())
    assert scores(course) == reference
    assert reference["ada"]["test_training_ran"] == 2 and reference["bob"]["test_discriminator_loss"] == 0
    autograded = course.runtime_dir / "autograded"
    assert sorted(p.name for p in autograded.iterdir()) == ["ada", "bob", "cy"]
    assert not list(autograded.rglob(".*.new~*")) and not list(autograded.rglob(".*.old~*"))
    assert not list((course.runtime_dir / "grading").glob(f"{scratch.SNAPSHOT_PREFIX}*")), "the rerun removed them"
    assert not list(Path(tempfile.gettempdir()).glob(f"{scratch.SCRATCH_PREFIX}{killed}*"))
    # feedback works from what the coordinator wrote
    pipeline.feedback(course, ASSIGNMENT)
    assert (course.runtime_dir / "feedback" / "ada" / ASSIGNMENT / "gan_foundations.html").is_file()


@pytest.mark.needs_bwrap
def test_a_dask_cluster_gives_the_same_grades(runtime, reference):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, resources={"GPU": 1}) as cluster:
        results = batch.grade(runtime, ASSIGNMENT, scheduler=cluster.scheduler_address, progress=False)
    assert sorted(results) == ["ada", "bob", "cy"] and all(r.status == "graded" for r in results.values())
    assert scores(runtime) == reference


@pytest.mark.needs_bwrap
def test_one_student_and_force(runtime, reference):
    first = batch.grade(runtime, ASSIGNMENT, student="cy", gpus="none", progress=False)
    assert list(first) == ["cy"] and scores(runtime)["cy"] == reference["cy"]
    assert batch.grade(runtime, ASSIGNMENT, student="cy", gpus="none", progress=False) == {}, "already graded"
    jobs, skipped = batch.find_jobs(runtime, ASSIGNMENT, Path("snapshot.db"), force=True)
    assert [job.student for job in jobs] == ["ada", "bob", "cy"] and skipped == [], "--force regrades"
    jobs, skipped = batch.find_jobs(runtime, ASSIGNMENT, Path("snapshot.db"))
    assert [job.student for job in jobs] == ["ada", "bob"] and skipped == ["cy"]
    with pytest.raises(CourseError, match="no collected submission of week01_gan_foundations from 'zed'"):
        batch.grade(runtime, ASSIGNMENT, student="zed", gpus="none", progress=False)


def test_gpu_specs():
    assert batch.parse_gpus("none") == []
    assert batch.parse_gpus("0,1") == ["0", "1"]
    with pytest.raises(CourseError, match="--gpus takes all, none or GPU numbers"):
        batch.parse_gpus("first")
