"""A submission that smuggles in links, a hard link and a pipe, through the exchange and straight into
submitted/, and one that fills its folder: one small sandboxed batch of `gankit grade`. No byte of
the grader's files reaches an autograded folder or a feedback page, the left-out files are named in
the ledger, the class report and the student's feedback, and leftovers of a killed batch go."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import nbformat
import pytest

from grading import batch, checks, pipeline, report, scratch
from grading.course import REPO_ROOT
from grading.demo import ASSIGNMENT, NOTEBOOK, _cells, full, solutions

pytestmark = [pytest.mark.slow, pytest.mark.needs_bwrap]   # conftest skips (or, under CI, fails) without it
SECRET = "grader-only 7c1e9a"
PLANTED = ("gb.db", "keys.json", "source.ipynb", "theirs.ipynb", "passwd", "hard.txt", "pipe", "late_link")


def reads_everything(nb, sol, course=None):
    # Correct work whose first cell prints what it can read of each planted name.
    full(nb, sol)
    probe = (f"for name in {PLANTED!r}:\n    try:\n        print(name, open(name, 'rb').read()[:50000])\n"
             "    except OSError as err:\n        print(name, type(err).__name__)\n")
    _cells(nb)["losses"].source = probe + _cells(nb)["losses"].source


def hoards(nb, sol, course=None):
    full(nb, sol)
    _cells(nb)["losses"].source = ("with open('hoard.bin', 'wb') as f:\n    f.write(bytes(3 * 2**20))\n"
                                   + _cells(nb)["losses"].source)


def _dead_tag() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"~{child.pid}@{scratch.host()}~"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("intake")
    os.environ["GANKIT_COURSE_RUNTIME"] = str(root / "runtime")
    try:
        from grading.course import load_course
        course = load_course()
        from gankit.data import prepare
        prepare("mnist", course.data_dir, smoke=True, seed=0)
        pipeline.generate(course, ASSIGNMENT)
        pipeline.release(course, ASSIGNMENT)
        keys = checks.build_keys(course, ASSIGNMENT)
        sol = solutions(course)
        secret = course.runtime_dir / "grading" / "secret.txt"
        secret.write_text(SECRET)
        for student_id, edit in (("sly", reads_everything), ("hoarder", hoards)):
            home = root / "homes" / student_id
            folder = pipeline.fetch(course, ASSIGNMENT, home)
            nb = nbformat.read(folder / NOTEBOOK, as_version=4)
            edit(nb, sol)
            nbformat.write(nb, folder / NOTEBOOK)
            pipeline.submit(course, ASSIGNMENT, student_id, home)
        inbound = course.exchange_dir / course.course_id / "inbound"
        sly, = inbound.glob(f"sly+{ASSIGNMENT}+*")
        hoarder, = inbound.glob(f"hoarder+{ASSIGNMENT}+*")
        (sly / "gb.db").symlink_to(os.path.relpath(course.runtime_dir / "gradebook.db", sly))
        (sly / "keys.json").symlink_to(keys["gan_foundations"])
        (sly / "source.ipynb").symlink_to(REPO_ROOT / "assignments" / ASSIGNMENT / NOTEBOOK)
        (sly / "theirs.ipynb").symlink_to(hoarder / NOTEBOOK)
        (sly / "passwd").symlink_to("/etc/passwd")
        os.link(secret, sly / "hard.txt")
        os.mkfifo(sly / "pipe")
        pipeline.collect(course, ASSIGNMENT)   # nbgrader's own collect would hang on the pipe
        # ... and one put straight into submitted/ (a TA's copy, an archive): grading refuses it too
        (course.runtime_dir / "submitted" / "sly" / ASSIGNMENT / "late_link").symlink_to(secret)
        # what a killed batch leaves: a snapshot, a half-written folder, a job's scratch with keys
        dead = _dead_tag()
        leftovers = [course.runtime_dir / "grading" / f"{scratch.SNAPSHOT_PREFIX}{dead}.db",
                     course.runtime_dir / "autograded" / "sly" / f".{ASSIGNMENT}.new{dead}abc",
                     scratch.scratch_dir(scratch.SCRATCH_PREFIX, "sly")]
        leftovers[1].mkdir(parents=True)
        leftovers[2] = leftovers[2].rename(str(leftovers[2]).replace(scratch.owner_tag(), dead))
        leftovers[0].write_text("every source cell")
        (leftovers[2] / "keys").mkdir()
        small = dataclasses.replace(course, grading=dataclasses.replace(course.grading, max_submission_output_mb=2))
        results = batch.grade(small, ASSIGNMENT, gpus="none", workers=2, progress=False,
                              nbgrader_args=("--GradingExecute.timeout=60",))
        yield course, results, leftovers
    finally:
        del os.environ["GANKIT_COURSE_RUNTIME"]


def _foreign(data: bytes) -> list[str]:
    marks = {"secret": SECRET.encode(), "gradebook": b"SQLite format 3", "answer key": b'"fingerprint"',
             "passwd": b"root:x:0:0", "instructor source": b"BEGIN SOLUTION"}
    return [name for name, mark in marks.items() if mark in data]


def test_planted_links_pipes_and_hard_links_are_left_out_and_said_so(graded):
    course, results, _ = graded
    assert results["sly"].status == "graded", results["sly"].reason
    ledger = batch.ledger(course, ASSIGNMENT)
    for name in PLANTED:
        assert f"{name}: " in ledger["sly"]["reason"], name
    assert "/etc/passwd" in ledger["sly"]["reason"] and "named pipe" in ledger["sly"]["reason"]
    assert "hard link" in ledger["sly"]["reason"]
    scores = pipeline.cell_scores(course, ASSIGNMENT)["sly"]
    assert scores["test_training_ran"].score == 2, "the rest of the work is graded as usual"
    autograded = course.runtime_dir / "autograded" / "sly" / ASSIGNMENT
    assert NOTEBOOK in {p.name for p in autograded.iterdir()}
    assert not {p.name for p in autograded.iterdir()} & set(PLANTED)
    for path in (course.runtime_dir / "autograded").rglob("*"):
        assert not path.is_symlink(), path
        if path.is_file():
            assert _foreign(path.read_bytes()) == [], path
    page = report.write_class_report(course, ASSIGNMENT, ledger).read_text()
    assert "sly: not graded: gb.db: a symbolic link" in page


def test_the_feedback_says_which_files_were_left_out_and_shows_none_of_them(graded):
    course, _, _ = graded
    pipeline.feedback(course, ASSIGNMENT)
    page = (course.runtime_dir / "feedback" / "sly" / ASSIGNMENT / "gan_foundations.html").read_text()
    assert "Note from the grader" in page and "theirs.ipynb" in page
    assert "gb.db FileNotFoundError" in page, "the kernel could not open what was left out"
    assert _foreign(page.encode()) == []


def test_a_submission_over_its_output_budget_is_flagged(graded):
    course, results, _ = graded
    assert results["hoarder"].status == "failed"
    assert "over grading.max_submission_output_mb = 2 MB" in results["hoarder"].reason
    assert batch.ledger(course, ASSIGNMENT)["hoarder"]["status"] == "failed"
    assert not (course.runtime_dir / "autograded" / "hoarder" / ASSIGNMENT).exists()
    assert not list((course.runtime_dir / "autograded").rglob(".*.new~*")), "no half-written folder stays"


def test_the_next_batch_removes_what_a_killed_one_left(graded):
    course, _, leftovers = graded
    assert [path for path in leftovers if path.exists()] == []
    assert not list((course.runtime_dir / "grading").glob(f"{scratch.SNAPSHOT_PREFIX}*")), "nor its own"
    assert not (course.runtime_dir / "grading" / f"grade-{ASSIGNMENT}.lock").exists()
