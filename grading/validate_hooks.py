"""What the student's **Validate** says: the first real error, and answers that use the kit's reference.

nbgrader's Validator lists the *test cells* that fail. When the data is missing offline, the locked
training cell raises ``DataError`` and the next test cell fails with ``NameError: name 'history'
is not defined``: the student sees the consequence, never the cause. nbgrader's Validator takes no
extra preprocessors, but the cells run in nbgrader's ``Execute`` preprocessor, an nbclient
``NotebookClient`` whose hooks (``on_notebook_start``, ``on_cell_executed``, ``on_cell_error``)
are ordinary config. ``configure_student`` (grading/nbgrader_setup.py) sets them to the functions
below, which write into the failing test cell's outputs, first, where the Validator reads them:

- ``FirstError``: a test cell that fails after an earlier cell raised gets a note naming that
  earlier cell (its number and first line), the exception and its message, and saying that this
  failure may follow from it;
- ``ReferenceImplementation``: a student cell that uses gankit's own implementation of a graded
  function (grading/reference_check.py) makes the first test cell below it fail in Validate with
  the reason, since the grader will score that answer 0 (a flagged cell below the last test cell
  is not shown by Validate; the grader still catches it). The graded names come from the solution
  cells of the student's own notebook (there is no gradebook on the student's side).

State lives in this module for the one notebook being validated: Validator runs one notebook at a
time, and ``on_notebook_start`` resets it.
"""
from __future__ import annotations

from nbformat.notebooknode import NotebookNode
from nbgrader import utils

from grading import reference_check

SMOKE_HINT = ("Offline, or without the full data? Add a cell below the parameters cell with `SMOKE = True` "
              "(small embedded data, what the grader runs) and validate again. ")
_state: dict = {"first_error": None, "reference": [], "notebook": None}


def _note(ename: str, message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=message,
                        traceback=[f"\x1b[0;31m{ename}\x1b[0m: {message}"])


def _is_test(cell) -> bool:
    return cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)


def on_notebook_start(notebook=None, **_):
    """Reset; find the student cells that use the kit's reference of a graded function, and the
    test cell below each one, where Validate will read the warning."""
    _state["first_error"] = None
    _state["reference"] = []
    _state["notebook"] = notebook
    if notebook is None:
        return
    graded = reference_check.graded_names(
        [c.source for c in notebook.cells if c.cell_type == "code" and utils.is_solution(c)])
    for index, findings in reference_check.scan_notebook(notebook, graded).items():
        target = next((i for i in range(index + 1, len(notebook.cells)) if _is_test(notebook.cells[i])), None)
        if target is None:
            continue    # no test below it: Validate cannot show it (the grader still catches it)
        for finding in findings:
            _state["reference"].append((target, f"cell {index + 1}: {finding.message()}; the grader will score it 0"))


def on_cell_start(cell_index=None, **_):
    """Before each cell: the test cells above it have their final outputs; warnings due there land first.

    nbgrader's Execute keeps ``on_cell_executed`` for itself (a method, not the configurable hook),
    and nbclient empties a cell's outputs when it runs, so a warning is added once its test cell has run.
    """
    notebook = _state.get("notebook")
    if notebook is None or cell_index is None:
        return
    due = [(target, text) for target, text in _state["reference"] if target < cell_index]
    for target, text in due:
        cell = notebook.cells[target]
        cell.outputs = [_note(reference_check.ENAME, text)] + list(cell.get("outputs", []))
    _state["reference"] = [item for item in _state["reference"] if item not in due]


def on_cell_error(cell=None, cell_index=None, execute_reply=None, **_):
    """Remember the first cell that raised; point a later failing test cell at it."""
    content = (execute_reply or {}).get("content", {})
    first = _state["first_error"]
    if first is None:
        line = next((ln for ln in cell.source.splitlines() if ln.strip()), "") if cell is not None else ""
        _state["first_error"] = {"index": cell_index, "ename": content.get("ename", "Error"),
                                 "evalue": content.get("evalue", ""), "line": line[:80]}
        return
    if cell is None or not _is_test(cell) or first["index"] == cell_index:
        return
    hint = SMOKE_HINT if first["ename"] == "DataError" else ""
    cell.outputs = [_note("FirstError", (
        f"the first error in this notebook was in cell {first['index'] + 1} (`{first['line']}`), "
        f"{first['ename']}: {first['evalue'].rstrip()}\n{hint}Fix that one first: this failure may follow from it "
        f"(this test cell's own error is below)."))] + list(cell.outputs)
