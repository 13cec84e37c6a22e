"""The TA's report of a graded assignment: the status and reason of each cell on hand-made cells
(fast), then the CSV and the HTML page of week 1 graded for real by nbgrader (slow)."""
from __future__ import annotations

import base64
import csv
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output

from grading import demo, pipeline, report
from grading.checks import build_keys
from grading.course import load_course
from grading.preprocessors import MarkUnrunTestCells, _error_output

ASSIGNMENT, NOTEBOOK, WRITTEN = demo.ASSIGNMENT, "gan_foundations", demo.WRITTEN
CELL_TIMEOUT_S = 15     # the infinite loop costs this once; honest cells here take up to ~10 s
BAD = '<script>alert(1)</script> & logits'   # a student's error message, to be escaped in the HTML
# As the batch grader reports each submission: gpu is the CUDA device it ran on ("" for the CPU).
RUNS = {
    "ada": {"gpu": "1", "duration_s": 31.5, "status": "graded", "reason": ""},
    "mallory": {"gpu": "0", "duration_s": 24.0, "status": "graded", "reason": ""},
    "ghost": {"gpu": None, "duration_s": 2.0, "status": "failed",
              "reason": "nbgrader autograde exited 1: <kernel> would not start"},
}


def _test_cell(source="assert True", grade_id="t", points=3.0, outputs=()):
    cell = new_code_cell(source, execution_count=7, outputs=list(outputs))
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id,
                                 "points": points, "schema_version": 3}
    return cell


def _error(ename, evalue="", traceback=None):
    return new_output("error", ename=ename, evalue=evalue, traceback=traceback or [f"{ename}: {evalue}"])


# What GradingExecute writes into a cell it interrupted: nbclient's KeyboardInterrupt, then our note.
TIMED_OUT = [_error("KeyboardInterrupt"), _error("CellTimeoutError", "", [
    "\x1b[0;31mCellTimeoutError\x1b[0m: this cell ran longer than 20 s and was interrupted "
    "(course.yml grading.cell_timeout_s)"])]
# IPython's traceback of a bare `assert`: the failing line is the one with the arrow.
BARE_ASSERT = _error("AssertionError", "", [
    "\x1b[31mAssertionError\x1b[39m                            Traceback (most recent call last)",
    "\x1b[36mCell\x1b[39m In[13], line 2\n\x1b[32m      1\x1b[39m x = 1\n\x1b[32m----> \x1b[39m\x1b[32m2\x1b[39m "
    "\x1b[38;5;28;01massert\x1b[39;00m len(history) == steps\n", "\x1b[31mAssertionError\x1b[39m: "])


@pytest.mark.parametrize("outputs, points, manual, status, reason", [
    ([], 3.0, False, "passed", ""),
    ([new_output("execute_result", data={"text/plain": "1.5"})], 1.5, False, "partial", "1.5 of 3 points"),
    ([_error("AssertionError", "return the keys d_loss and g_loss")], 0.0, False, "failed",
     "AssertionError: return the keys d_loss and g_loss"),
    ([BARE_ASSERT], 0.0, False, "failed", "AssertionError at `assert len(history) == steps`"),
    (TIMED_OUT, 0.0, False, "timeout",
     "this cell ran longer than 20 s and was interrupted (course.yml grading.cell_timeout_s)"),
    ([_error_output("NotRun", "not executed: the notebook's time budget (900 s, course.yml "
                    "grading.notebook_timeout_s) ran out before this cell")], 0.0, False, "not run",
     "not executed: the notebook's time budget (900 s, course.yml grading.notebook_timeout_s) ran out before this cell"),
    ([_error_output("KernelDied", "the kernel died while running this cell (a crash, os._exit or running "
                    "out of memory); the rest of the notebook was graded in a fresh kernel")], 0.0, False, "error",
     "the kernel died while running this cell (a crash, os._exit or running out of memory); "
     "the rest of the notebook was graded in a fresh kernel"),
    (TIMED_OUT, 3.0, False, "passed", ""),                       # a TA gave the points back by hand
    ([], None, True, "needs manual grade", "waiting for a grade in formgrader"),
    ([], None, False, "error", "no score in the gradebook"),
    ([], 0.0, False, "failed", "0 of 3 points"),
], ids=["passed", "partial", "assert", "bare-assert", "timeout", "budget", "kernel", "override", "manual",
        "no-score", "zero"])
def test_each_outcome_gets_its_status_and_a_reason_a_ta_can_read(outputs, points, manual, status, reason):
    assert report.cell_status(_test_cell(outputs=outputs), points, 3.0, manual) == (status, reason)
    assert status in report.STATUSES


def test_a_test_cell_that_never_ran_reads_not_run():
    """The text MarkUnrunTestCells itself writes maps to 'not run'."""
    cell = _test_cell()
    cell.execution_count = None
    MarkUnrunTestCells().preprocess_cell(cell, {}, 0)
    assert report.cell_status(cell, 0.0, 3.0) == ("not run", "this test cell was never executed, so it scores 0")


def test_an_answer_left_as_released_reads_no_answer():
    from nbgrader.utils import compute_checksum

    cell = new_markdown_cell("YOUR ANSWER HERE")
    cell.metadata["nbgrader"] = {"grade": True, "solution": True, "locked": False, "grade_id": "w", "points": 4.0}
    cell.metadata["nbgrader"]["checksum"] = compute_checksum(cell)
    assert report.cell_status(cell, 0.0, 4.0) == ("failed", "no answer: the cell is as it was released")
    cell.source = "D wins, so G gets no gradient."
    assert report.cell_status(cell, 0.0, 4.0) == ("failed", "0 of 4 points")


def test_a_reason_is_one_bounded_line_and_an_earlier_trap_is_named():
    cell = _test_cell(outputs=[_error("ValueError", "first line\n\x1b[31msecond\x1b[39m line " + "x" * 500)])
    status, reason = report.cell_status(cell, 0.0, 3.0, after="; earlier, cell train timed out")
    assert status == "failed" and reason.startswith("ValueError: first line second line xxx")
    assert "\n" not in reason and "\x1b" not in reason
    assert reason.endswith("; earlier, cell train timed out")
    assert len(reason) <= report.REASON_CHARS + len("; earlier, cell train timed out")


@pytest.mark.parametrize("start, end, seconds", [
    ("2027-01-12T10:00:00.000000Z", "2027-01-12T10:00:02.500000Z", 2.5),
    ("2027-01-12T10:00:00.1Z", "2027-01-12T10:00:01.123456789Z", 1.023),     # odd fraction lengths (3.10)
    ("2027-01-12T10:00:59+00:00", "2027-01-12T10:01:00.25+00:00", 1.25),
])
def test_duration_comes_from_nbclients_timestamps(start, end, seconds):
    cell = _test_cell()
    cell.metadata["execution"] = {"iopub.execute_input": start, "iopub.status.busy": start,
                                  "shell.execute_reply": end}
    assert report.cell_duration(cell) == pytest.approx(seconds, abs=1e-3)


def test_no_duration_without_a_reply():
    cell = _test_cell()
    assert report.cell_duration(cell) is None
    cell.metadata["execution"] = {"iopub.execute_input": "2027-01-12T10:00:00.000000Z"}  # the kernel died
    assert report.cell_duration(cell) is None


def test_a_failure_after_a_trap_names_the_trap_and_runtime_sums_every_cell(course_runtime):
    def ran(cell, seconds):
        cell.metadata["execution"] = {"iopub.execute_input": "2027-01-12T10:00:00.000000Z",
                                      "shell.execute_reply": f"2027-01-12T10:00:{seconds:09.6f}Z"}
        return cell

    train = ran(new_code_cell("history = train()", execution_count=3, outputs=TIMED_OUT), 20)
    crash = ran(new_code_cell("import ctypes; ctypes.string_at(0)", execution_count=5, outputs=[
        _error_output("KernelDied", "the kernel died while running this cell")]), 1.5)
    cells = [ran(new_code_cell("import torch", execution_count=1), 4.25), train,
             ran(_test_cell("assert len(history) == 5", "test_a", outputs=[
                 _error("NameError", "name 'history' is not defined")]), 0.5),
             crash, _test_cell("assert True", "test_b", outputs=[_error("NameError", "name 'G' is not defined")])]
    path = course_runtime.runtime_dir / "autograded" / "s" / ASSIGNMENT / "nb.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    found, runtime = report._read_autograded(course_runtime, ASSIGNMENT, "s", "nb")
    assert runtime == pytest.approx(4.25 + 20 + 0.5 + 1.5)
    cell, after = found["test_a"]
    assert report.cell_status(cell, 0.0, 3.0, after=after) == (
        "failed", "NameError: name 'history' is not defined; earlier, cell In[3] timed out")
    cell, after = found["test_b"]
    assert report.cell_status(cell, 0.0, 3.0, after=after) == (
        "failed", "NameError: name 'G' is not defined; earlier, cell In[5] killed the kernel")
    assert report._read_autograded(course_runtime, ASSIGNMENT, "nobody", "nb") is None


def test_no_gradebook_is_an_error_and_does_not_create_one(course_runtime):
    with pytest.raises(report.ReportError, match="generate and autograde"):
        report.cell_rows(course_runtime, ASSIGNMENT)
    assert not (course_runtime.runtime_dir / "gradebook.db").exists()


# ---- end to end: week 1 graded by nbgrader with our preprocessors ------------------------------

def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _edit(nb, grade_id, old, new):
    cell = _cell(nb, grade_id)
    assert old in cell.source, f"{old!r} is not in cell {grade_id}"
    cell.source = cell.source.replace(old, new, 1)


def answer_key(nb, sol):
    for grade_id in ("losses", "dcgan", "train_step", WRITTEN):
        _cell(nb, grade_id).source = sol[grade_id]


def mallory(nb, sol):
    # Half done: the DCGAN part is left as released, one loss raises (with markup in its message)
    # and train_step never returns.
    for grade_id in ("losses", "train_step"):
        _cell(nb, grade_id).source = sol[grade_id]
    _edit(nb, "losses", "return -F.softplus(fake_logits).mean()", f"raise ValueError({BAD!r})")
    _edit(nb, "train_step", "    fake = G(z)",
          "    while True:  # waits for a signal that never comes\n        time.sleep(0.05)\n    fake = G(z)")
    _edit(nb, "train_step", "def train_step", "import time\n\n\ndef train_step")
    _cell(nb, WRITTEN).source = "<i>D</i> wins & G stalls"


STUDENTS = {"ada": answer_key, "mallory": mallory}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Week 1 generated, two submissions autograded, ada's written answer graded 2 of 4 by hand."""
    runtime = tmp_path_factory.mktemp("report") / "runtime"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GANKIT_COURSE_RUNTIME", str(runtime))
        course = load_course()
    release = pipeline.generate(course, ASSIGNMENT)
    sol = demo.solutions(course)
    for student, edit in STUDENTS.items():
        # What `collect` leaves: the submitted notebook and the exchange's timestamp.
        nb = nbformat.read(release / f"{NOTEBOOK}.ipynb", as_version=4)
        edit(nb, sol)
        folder = course.runtime_dir / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{NOTEBOOK}.ipynb")
        (folder / "timestamp.txt").write_text("2027-01-12 10:00:00.000000 UTC")
    build_keys(course, ASSIGNMENT)   # what pipeline.autograde and gankit grade do before nbgrader runs
    pipeline.nbgrader(course, "autograde", ASSIGNMENT, "--force", f"--GradingExecute.timeout={CELL_TIMEOUT_S}")
    pipeline.set_manual_grade(course, ASSIGNMENT, "ada", WRITTEN, 2.0)
    return course


TESTS = list(demo.AUTOGRADED)          # the autograded cells, in notebook order
TIMEOUT_REASON = (f"this cell ran longer than {CELL_TIMEOUT_S} s and was interrupted "
                  "(course.yml grading.cell_timeout_s)")
NOT_IMPLEMENTED = "NotImplementedError at `raise NotImplementedError()`"


@pytest.mark.slow
def test_the_cell_csv_says_what_happened_to_every_cell(graded):
    course = graded
    path = report.write_cell_csv(course, ASSIGNMENT, RUNS)
    assert path == course.runtime_dir / "reports" / f"{ASSIGNMENT}_cells.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == report.COLUMNS
        rows = {(r["student"], r["cell"]): r for r in reader}
    assert not list(path.parent.glob(".*.tmp")), "written atomically: no temporary file left"

    # Points and max points are the gradebook's, cell for cell.
    scores = pipeline.cell_scores(course, ASSIGNMENT)
    assert set(scores) == set(STUDENTS)
    for student, cells in scores.items():
        for grade_id, score in cells.items():
            row = rows[(student, grade_id)]
            assert row["points"] == ("" if score.score is None else f"{score.score:g}"), (student, grade_id)
            assert float(row["max"]) == score.max_score and row["notebook"] == NOTEBOOK

    status = {key: (r["status"], r["reason"]) for key, r in rows.items()}
    assert [status[("ada", g)] for g in TESTS] == [("passed", "")] * len(TESTS)
    assert status[("ada", WRITTEN)] == ("partial", "2 of 4 points")
    assert [status[("mallory", g)] for g in TESTS] == [
        ("passed", ""),
        ("failed", f"ValueError: {BAD}"),
        ("failed", NOT_IMPLEMENTED),
        ("failed", NOT_IMPLEMENTED),
        ("timeout", TIMEOUT_REASON),
        ("failed", "NameError: name 'history' is not defined; earlier, cell train raised NotImplementedError"),
    ]
    assert status[("mallory", WRITTEN)] == ("needs manual grade", "waiting for a grade in formgrader")
    assert rows[("mallory", WRITTEN)]["points"] == ""
    ghost = [r for (student, _), r in rows.items() if student == "ghost"]
    assert len(ghost) == len(TESTS) + 1, "a submission that left nothing in the gradebook still has its rows"
    assert all((r["status"], r["reason"], r["points"]) == ("error", RUNS["ghost"]["reason"], "") for r in ghost)

    for student in STUDENTS:   # every test cell ran; the written answer is markdown and never runs
        assert all(float(rows[(student, g)]["duration_s"]) > 0 for g in TESTS), student
        assert rows[(student, WRITTEN)]["duration_s"] == ""
    assert float(rows[("mallory", "test_train_step")]["duration_s"]) >= CELL_TIMEOUT_S - 0.5
    assert {rows[("ada", g)]["gpu"] for g in [*TESTS, WRITTEN]} == {"1"}
    assert {rows[("mallory", g)]["gpu"] for g in [*TESTS, WRITTEN]} == {"0"}
    assert {r["gpu"] for r in ghost} == {""}

    # A regrade that failed as a whole: the gradebook keeps the last scores, but with no autograded
    # notebook to explain them every cell reads as the batch grader's error.
    folder = course.runtime_dir / "autograded" / "mallory"
    folder.rename(folder.with_name("mallory.away"))
    try:
        failed = {**RUNS, "mallory": {**RUNS["mallory"], "status": "failed", "reason": "out of memory"}}
        again = [r for r in report.cell_rows(course, ASSIGNMENT, failed) if r["student"] == "mallory"]
    finally:
        folder.with_name("mallory.away").rename(folder)
    assert {(r["status"], r["reason"]) for r in again} == {("error", "out of memory")}
    assert [r["points"] for r in again] == [scores["mallory"][r["cell"]].score for r in again]


@pytest.mark.slow
def test_the_class_report_shows_scores_runtimes_and_every_failure(graded):
    course = graded
    path = report.write_class_report(course, ASSIGNMENT, RUNS)
    assert path == course.runtime_dir / "reports" / f"{ASSIGNMENT}_report.html"
    page = path.read_text(encoding="utf-8")

    histograms = re.findall(r"<img class='score-hist' alt='scores of ([^']+)' src='data:image/png;base64,([^']+)'>", page)
    assert [name for name, _ in histograms] == [*TESTS, WRITTEN], "one histogram per question"
    runtimes = re.findall(r"<img class='runtime' alt='([^']+)' src='data:image/png;base64,([^']+)'>", page)
    assert len(runtimes) == 2, "per notebook from the cells' timestamps, and the batch grader's wall time"
    for _, image in histograms + runtimes:
        assert base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r"(src|href)=['\"](?!data:)", page), "self-contained: nothing fetched from elsewhere"

    assert "2 students graded; max points 24" in page
    assert "total: mean 12.50, median 12.5" in page      # ada 20 + 2 by hand, mallory 3
    failures = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", page)
    assert ("mallory", "test_train_step", "timeout", TIMEOUT_REASON) in failures
    assert ("mallory", "test_generator_losses", "failed",
            "ValueError: &lt;script&gt;alert(1)&lt;/script&gt; &amp; logits") in failures
    assert ("mallory", "test_blocks", "failed", NOT_IMPLEMENTED) in failures
    assert ("ghost", "test_blocks", "error", "nbgrader autograde exited 1: &lt;kernel&gt; would not start") in failures
    assert len(failures) == 5 + len(TESTS) + 1, "mallory's five failed cells and all of ghost's"
    assert not any(student == "ada" for student, *_ in failures), "a partial score is not a failure"
    assert "<script>" not in page and "<kernel>" not in page
