"""The hostile suite: every broken or hostile submission the grading issue lists, in one sandboxed
batch of `gankit grade`, each graded as it deserves or flagged with a reason a TA can act on, and
the batch finishes. (The demo's class, tests/test_grading_pipeline.py, covers the rest: an infinite
loop, a memory bomb, sys.exit, a segfault, 10^6 lines of output, reading the gradebook, the answer
keys and other submissions, edited and deleted test cells, and monkeypatched checks.)"""
from __future__ import annotations

import os
import shutil
import time

import nbformat
import pytest

from grading import batch, pipeline, report
from grading.course import REPO_ROOT
from grading.demo import ASSIGNMENT, AUTOGRADED, NOTEBOOK, Student, _cells, full, in_train_step, solutions, untouched

pytestmark = [pytest.mark.slow, pytest.mark.needs_bwrap]
FILE_LIMIT_MB = 64   # the 1 GB write stops here (course default: 512 MB)


def network(nb, sol, course=None):
    # Correct work plus attempts to reach the internet and the grader's own machine; any success raises.
    full(nb, sol)
    probe = ("import socket\nfor host, port in [('1.1.1.1', 53), ('127.0.0.1', 22), ('127.0.0.1', 8888)]:\n"
             "    try:\n        socket.create_connection((host, port), timeout=3).close()\n"
             "    except OSError:\n        continue\n    raise AssertionError(f'network reachable: {host}:{port}')\n")
    _cells(nb)["losses"].source = probe + _cells(nb)["losses"].source


LOSES_TRAINING = {"test_train_step": 4, "test_training_ran": 2}
GRADED = [
    Student("exit", "os._exit(3) in train_step", in_train_step("import os; os._exit(3)"),
            lost=LOSES_TRAINING),
    Student("killer", "SIGKILLs its own kernel", in_train_step("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
            lost=LOSES_TRAINING),
    Student("forkbomb", "while True: os.fork() in train_step", in_train_step(
        "import os\n    while True:\n        os.fork()"), lost=LOSES_TRAINING),
    Student("oom", "asks its device for 4 TiB (GPU out of memory; on a CPU grader, CPU)",
            in_train_step("hog = torch.empty(2**42, dtype=torch.uint8, device=real.device)"), lost=LOSES_TRAINING),
    Student("bigfile", "writes a 1 GB file", in_train_step(
        "with open('checkpoint.bin', 'wb') as f:\n        for _ in range(1024):\n            f.write(bytes(2**20))"),
        lost=LOSES_TRAINING),
    Student("net", "tries the internet and the grader's ports", network),
    Student("twice", "submits the blank version, then the finished one", full),
]
FLAGGED = {  # student: (what they did to the files, the reason the TA reads)
    "garbled": (lambda folder: (folder / NOTEBOOK).write_text('{"cells": [{"cell_type": "code", "sou'),
                f"{NOTEBOOK} is not a readable notebook"),
    "renamed": (lambda folder: os.replace(folder / NOTEBOOK, folder / "gan_foundations (1).ipynb"),
                f"{NOTEBOOK} is missing; the submission has gan_foundations (1).ipynb instead (renamed?)"),
    "nothing": (lambda folder: (folder / NOTEBOOK).unlink(), f"{NOTEBOOK} is missing from the submission"),
    "wrongweek": (lambda folder: shutil.copy(REPO_ROOT / "assignments" / "week05_cyclegan" / "cyclegan.ipynb",
                                             folder / NOTEBOOK),
                  "of this assignment's 10 graded cells: it looks like the notebook of another assignment"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    runtime = tmp_path_factory.mktemp("hostile") / "runtime"
    os.environ["GANKIT_COURSE_RUNTIME"] = str(runtime)
    try:
        from grading.course import load_course
        course = load_course()
        from gankit.data import prepare
        prepare("mnist", course.data_dir, smoke=True, seed=0)
        pipeline.generate(course, ASSIGNMENT)
        pipeline.release(course, ASSIGNMENT)
        sol = solutions(course)

        def submit(student_id, edit, files=None):
            home = course.runtime_dir / "students" / student_id
            folder = pipeline.fetch(course, ASSIGNMENT, home) if not (home / ASSIGNMENT).exists() else home / ASSIGNMENT
            nb = nbformat.read(folder / NOTEBOOK, as_version=4) if (folder / NOTEBOOK).exists() else None
            if nb is not None:
                edit(nb, sol, course)
                nbformat.write(nb, folder / NOTEBOOK)
            if files:
                files(folder)
            pipeline.submit(course, ASSIGNMENT, student_id, home)

        submit("twice", untouched)
        time.sleep(1.1)   # a later submission, as a student who resubmits an hour later
        for student in GRADED:
            submit(student.student_id, student.edit)
        for student_id, (files, _) in FLAGGED.items():
            submit(student_id, full, files)
        pipeline.collect(course, ASSIGNMENT)
        started = time.monotonic()
        results = batch.grade(course, ASSIGNMENT, gpus="none", workers=2, progress=False,
                              nbgrader_args=("--GradingExecute.timeout=30",
                                             f"--SandboxedKernelManager.file_mb={FILE_LIMIT_MB}",
                                             # a smaller fork bomb: the same containment, fewer spinning processes
                                             "--SandboxedKernelManager.max_procs=64"))
        elapsed = time.monotonic() - started
        yield course, results, elapsed
    finally:
        del os.environ["GANKIT_COURSE_RUNTIME"]


def test_every_hostile_submission_is_graded_as_it_deserves(graded):
    course, results, _ = graded
    assert set(results) == {s.student_id for s in GRADED} | set(FLAGGED), "the batch finished every job"
    scores = pipeline.cell_scores(course, ASSIGNMENT)
    for student in GRADED:
        assert results[student.student_id].status == "graded", (student.student_id, results[student.student_id].reason)
        want = student.expected(0.0)["auto"]
        got = {gid: scores[student.student_id][gid].score for gid in AUTOGRADED}
        assert got == want, student.student_id


def test_broken_submissions_are_flagged_with_a_reason_a_ta_can_act_on(graded):
    course, results, _ = graded
    ledger = batch.ledger(course, ASSIGNMENT)
    for student_id, (_, reason) in FLAGGED.items():
        assert results[student_id].status == "failed"
        assert reason in results[student_id].reason, results[student_id].reason
        assert f"--student {student_id}" in results[student_id].reason or "missing from" in results[student_id].reason
        assert ledger[student_id]["status"] == "failed" and reason in ledger[student_id]["reason"]
    # ... and the TA sees them in the class report and the per-cell CSV, next to the graded ones
    runs = batch.ledger(course, ASSIGNMENT)
    html = report.write_class_report(course, ASSIGNMENT, runs).read_text()
    assert "renamed?" in html and "not a readable notebook" in html
    rows = report.write_cell_csv(course, ASSIGNMENT, runs).read_text()
    assert "garbled" in rows and "exit" in rows


def test_the_reasons_reach_the_students_feedback(graded):
    course, _, _ = graded
    pipeline.feedback(course, ASSIGNMENT)
    feedback = course.runtime_dir / "feedback"
    page = lambda s: (feedback / s / ASSIGNMENT / "gan_foundations.html").read_text()
    assert "KernelDied" in page("exit") and "KernelDied" in page("killer")
    assert "ProcessLimit" in page("forkbomb")
    assert "allocate" in page("oom") or "memory" in page("oom").lower()
    assert "File too large" in page("bigfile")
    autograded = course.runtime_dir / "autograded" / "bigfile" / ASSIGNMENT / "checkpoint.bin"
    assert autograded.stat().st_size <= FILE_LIMIT_MB * 2**20
    assert not (feedback / "garbled").exists(), "a flagged submission has no grade and no feedback yet"
