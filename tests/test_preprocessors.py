"""The autograde preprocessors, on small notebooks built here (no nbgrader run needed)."""
from __future__ import annotations

import json
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from traitlets.config import Config

from grading.course import REPO_ROOT, CourseError, load_course
from grading.nbgrader_setup import configure_autograde

from grading.preprocessors import (GradingExecute, InjectGradingParameters, MarkUnrunTestCells,
                                   RelabelStderr)
from nbgrader import utils


def _test_cell(source, grade_id, points=1):
    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id,
                                 "points": points, "schema_version": 3, "task": False}
    return cell


def _notebook(*cells):
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    return nb


def _execute(nb, tmp_path, **traits):
    executor = GradingExecute(**{"timeout": 10, "notebook_timeout": 60, "max_kernel_restarts": 1, **traits})
    nb, _ = executor.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    return nb


def _score(cell):
    return utils.determine_grade(cell)[0]


def test_stderr_in_a_passing_test_cell_no_longer_zeroes_it():
    cell = _test_cell("import sys; sys.stderr.write('UserWarning: harmless')", "t")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: harmless\n")]
    assert _score(cell) == 0, "nbgrader's own rule (the trap) scores stderr as a failure"
    RelabelStderr().preprocess_cell(cell, {}, 0)
    assert _score(cell) == 1
    assert cell.outputs[0].name == "stdout" and "[stderr] UserWarning: harmless" in cell.outputs[0].text


def test_an_error_still_fails_after_relabelling():
    cell = _test_cell("assert False", "t")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="warning\n"),
                    nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=[])]
    RelabelStderr().preprocess_cell(cell, {}, 0)
    assert _score(cell) == 0


def test_a_test_cell_that_never_ran_scores_zero():
    cell = _test_cell("assert True", "t")
    assert _score(cell) == 1, "nbgrader's own rule (the trap): no output means full marks"
    MarkUnrunTestCells().preprocess_cell(cell, {}, 0)
    assert _score(cell) == 0 and cell.outputs[-1].ename == "NotRun"


def test_parameters_are_injected_after_the_locked_cell_even_without_its_tag():
    params = new_code_cell("DEVICE = 'auto'\nSMOKE = False")
    params.metadata["nbgrader"] = {"grade_id": "parameters", "locked": True}   # tag deleted by a student
    nb = _notebook(new_code_cell("x = 1"), params, new_code_cell("print(DEVICE)"))
    pre = InjectGradingParameters(parameters={"DEVICE": "cpu", "SMOKE": True})
    nb, _ = pre.preprocess(nb, {})
    injected = nb.cells[2]
    assert "injected-parameters" in injected.metadata.tags
    assert "DEVICE = \"cpu\"" in injected.source and "SMOKE = True" in injected.source
    assert nb.metadata.papermill.parameters == {"DEVICE": "cpu", "SMOKE": True}


def test_a_timed_out_cell_scores_zero_and_the_rest_still_runs(tmp_path):
    nb = _notebook(new_code_cell("x = 41"),
                   _test_cell("while True:\n    pass", "loops"),
                   _test_cell("assert x + 1 == 42", "after"))
    nb = _execute(nb, tmp_path, timeout=3)
    assert [o.ename for o in nb.cells[1].outputs if o.output_type == "error"][-1] == "CellTimeoutError"
    assert _score(nb.cells[1]) == 0
    assert _score(nb.cells[2]) == 1 and nb.cells[2].execution_count is not None


def test_the_notebook_budget_stops_the_rest_with_a_reason(tmp_path):
    nb = _notebook(new_code_cell("import time; time.sleep(4)"),
                   _test_cell("assert True", "late"))
    nb = _execute(nb, tmp_path, timeout=20, notebook_timeout=2)
    late = nb.cells[1]
    MarkUnrunTestCells().preprocess_cell(late, {}, 1)
    assert _score(late) == 0
    assert any(o.output_type == "error" and o.ename in ("NotRun", "CellTimeoutError") for o in late.outputs)


def test_a_dead_kernel_is_restarted_and_earlier_cells_replayed(tmp_path):
    marker = tmp_path / "replays.txt"
    nb = _notebook(new_code_cell(f"open({str(marker)!r}, 'a').write('x')\ny = 2"),
                   _test_cell("import os; os._exit(1)", "crashes"),
                   _test_cell("assert y == 2", "after_crash"))
    nb = _execute(nb, tmp_path)
    assert nb.cells[1].outputs[-1].ename == "KernelDied" and _score(nb.cells[1]) == 0
    assert _score(nb.cells[2]) == 1, "the replayed state makes the next test pass"
    assert marker.read_text() == "xx", "the cell before the crash ran once more in the new kernel"
    assert nb.cells[0].outputs == [], "replaying does not add outputs to the original cell"


def test_after_too_many_deaths_the_rest_is_marked_not_run(tmp_path):
    nb = _notebook(_test_cell("import os; os._exit(1)", "a"),
                   _test_cell("import os; os._exit(1)", "b"),
                   _test_cell("assert True", "c"))
    nb = _execute(nb, tmp_path, max_kernel_restarts=1)
    assert nb.cells[0].outputs[-1].ename == "KernelDied"
    assert nb.cells[1].outputs[-1].ename == "KernelDied"
    assert nb.cells[2].outputs[-1].ename == "NotRun" and _score(nb.cells[2]) == 0


def test_endless_output_is_stopped_at_the_output_limit_and_the_rest_still_runs(tmp_path):
    nb = _notebook(new_code_cell("x = 41"),
                   _test_cell("while True:\n    print('spam ' * 20)", "floods"),
                   _test_cell("assert x + 1 == 42", "after"))
    begin = time.monotonic()
    nb = _execute(nb, tmp_path, timeout=60, max_output_bytes=int(0.1 * 2**20))
    assert time.monotonic() - begin < 30, "stopped by the output limit, not by the 60 s cell timeout"
    flood = nb.cells[1]
    note = flood.outputs[-1]
    assert note.ename == "OutputLimit" and "more than 0.1 MB" in note.evalue and "grading.max_output_mb" in note.evalue
    assert len(json.dumps(flood.outputs)) < 0.2 * 2**20, "what the grader kept stays near the limit"
    assert _score(flood) == 0
    assert _score(nb.cells[2]) == 1 and nb.cells[2].execution_count is not None


def test_output_cleared_as_it_goes_does_not_count_against_the_limit(tmp_path):
    """A progress display that clears and redraws keeps little output, however long it runs."""
    redraws = ("from IPython.display import clear_output\n"
               "for step in range(300):\n    clear_output(wait=True)\n    print(f'step {step}', 'x' * 1000)")
    nb = _execute(_notebook(_test_cell(redraws, "progress")), tmp_path, max_output_bytes=50_000)
    assert not [o for o in nb.cells[0].outputs if o.output_type == "error"]
    assert "step 299" in nb.cells[0].outputs[-1].text


def test_a_kernel_that_ignores_the_interrupt_is_replaced(tmp_path):
    stubborn = ("import time\nwhile True:\n    try:\n        time.sleep(0.1)\n"
                "    except KeyboardInterrupt:\n        pass")
    nb = _notebook(new_code_cell("x = 41"),
                   _test_cell(stubborn, "stubborn"),
                   _test_cell("assert x + 1 == 42", "after"))
    nb = _execute(nb, tmp_path, timeout=2, iopub_timeout=1)
    errors = [o.ename for o in nb.cells[1].outputs if o.output_type == "error"]
    assert errors[-2:] == ["CellTimeoutError", "KernelStuck"]
    assert _score(nb.cells[1]) == 0
    assert _score(nb.cells[2]) == 1, "a fresh kernel replayed x = 41"


def test_course_yml_sets_the_output_and_process_limits(tmp_path):
    grading = load_course().grading
    c = Config()
    configure_autograde(c, grading, {})
    assert c.GradingExecute.max_output_bytes == int(grading.max_output_mb * 2**20) > 0
    assert c.SandboxedKernelManager.max_procs == grading.max_processes >= 16
    broken = tmp_path / "course.yml"
    text = (REPO_ROOT / "course" / "course.yml").read_text()
    broken.write_text(text.replace("  max_output_mb: 16 ", "  max_output_mb: lots "))
    with pytest.raises(CourseError, match="grading.max_output_mb must be a positive number"):
        load_course(broken)
    broken.write_text(text.replace("  max_processes: 512 ", "  max_processes: 4 "))
    with pytest.raises(CourseError, match="grading.max_processes must be a whole number of at least 16"):
        load_course(broken)


def test_a_notebook_without_a_parameters_cell_gets_nothing_injected():
    # papermill alone would add a first cell with the grader's scratch paths, shown in the feedback
    nb = _notebook(new_code_cell("x = 1"), _test_cell("assert x == 1", "t"))
    pre = InjectGradingParameters(parameters={"DATA_DIR": "/tmp/gankit-grade-ada-123/data"})
    nb, _ = pre.preprocess(nb, {})
    assert [c.source for c in nb.cells] == ["x = 1", "assert x == 1"]
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_a_student_cell_tagged_injected_parameters_is_kept_and_the_values_follow_the_parameters_cell():
    params = new_code_cell("DEVICE = 'auto'")
    params.metadata["tags"] = ["parameters"]
    mine = new_code_cell("my_work = 42")
    mine.metadata["tags"] = ["injected-parameters"]   # papermill would replace this cell
    nb = _notebook(mine, params, new_code_cell("print(DEVICE)"))
    nb, _ = InjectGradingParameters(parameters={"DEVICE": "cpu"}).preprocess(nb, {})
    assert nb.cells[0].source == "my_work = 42"
    assert "injected-parameters" in nb.cells[2].metadata.tags and 'DEVICE = "cpu"' in nb.cells[2].source
    assert len(nb.cells) == 4
