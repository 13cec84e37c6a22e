"""The autograde preprocessors, on small notebooks built here (no nbgrader run needed)."""
from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

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
