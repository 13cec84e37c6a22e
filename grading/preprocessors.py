"""nbgrader preprocessors for the autograde pass.

Order matters. nbgrader's autograde runs in two passes: *sanitize* (clear outputs, restore locked
cells and the instructor's tests from the gradebook) and *autograde* (execute, then score). Ours
slot into the second pass only, so papermill never sees a submission before nbgrader has restored
its test cells::

    InjectGradingParameters   papermill's injected-parameters cell after the locked `parameters`
    GradingExecute            run every cell: per-cell timeout, notebook budget, dead-kernel restart
    RelabelStderr             stderr in a test cell is a warning, not a failure
    MarkUnrunTestCells        a test cell that never ran scores 0, with the reason
    ... nbgrader's own: IgnorePattern, ClearMetadata, LimitOutput, SaveAutoGrades, late penalties

Each trap gets an outcome a TA can read in the feedback: the reason is written into the cell's
outputs as an error named ``GradingNote``/``KernelDied``/``NotRun``/``CellTimeoutError``.
"""
from __future__ import annotations

import copy
import math
import time

import papermill.parameterize
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Dict, Integer, Unicode

PARAMETERS_TAG = "parameters"


def _error_output(ename: str, message: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=message,
                        traceback=[f"\x1b[0;31m{ename}\x1b[0m: {message}"])


def _is_test_cell(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and utils.is_grade(cell) and not utils.is_solution(cell)


class InjectGradingParameters(NbGraderPreprocessor):
    """Insert papermill's ``injected-parameters`` cell after the assignment's parameters cell.

    The parameters cell is found by its nbgrader ``grade_id`` (default ``parameters``) as well as
    by papermill's tag, because nbgrader restores a locked cell's source but not its tags: a
    student who deleted the tag must not make papermill inject at the top, where the locked cell
    would overwrite the injected values.
    """

    parameters = Dict(help="Values injected into every graded notebook (course.yml grading.parameters + DATA_DIR)").tag(config=True)
    parameters_cell_id = Unicode(PARAMETERS_TAG, help="nbgrader grade_id of the locked parameters cell").tag(config=True)

    def preprocess(self, nb, resources):
        if not self.parameters:
            return nb, resources
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            tags = cell.metadata.setdefault("tags", [])
            if grade_id == self.parameters_cell_id and PARAMETERS_TAG not in tags:
                tags.append(PARAMETERS_TAG)
        if not any(PARAMETERS_TAG in c.metadata.get("tags", []) for c in nb.cells):
            self.log.warning("no cell tagged %r: papermill injects the parameters at the top", PARAMETERS_TAG)
            # papermill would *replace* a cell a student tagged itself, wherever it stands.
            if "injected-parameters" in tags:
                tags.remove("injected-parameters")
        kernelspec = nb.metadata.get("kernelspec", {})
        nb.metadata.setdefault("papermill", {})
        injected = papermill.parameterize.parameterize_notebook(
            nb, dict(self.parameters), kernel_name=kernelspec.get("name"),
            language=kernelspec.get("language", "python"))
        nb.cells = injected.cells
        nb.metadata["papermill"] = injected.metadata["papermill"]
        return nb, resources


class GradingExecute(Execute):
    """nbgrader's Execute, hardened for a class of GAN notebooks.

    - ``timeout`` (per cell) comes from course.yml; ``notebook_timeout`` bounds the whole notebook:
      once spent, the remaining cells are not run and their test cells score 0 ("NotRun").
    - A dead kernel (segfault, ``os._exit``, out of memory) no longer drops the student's autograded
      copy: the cell that killed it gets a ``KernelDied`` error, a fresh kernel replays the cells
      that ran before (without touching their outputs), and grading goes on. After
      ``max_kernel_restarts`` deaths the remaining cells are marked not run.
    """

    notebook_timeout = Integer(900, help="Seconds for the whole notebook (0: no limit)").tag(config=True)
    max_kernel_restarts = Integer(2, help="Kernel deaths survived per notebook").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        # Same set-up as nbconvert's ExecutePreprocessor.preprocess, with our own cell loop.
        from nbclient import NotebookClient
        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        cell_timeout = self.timeout
        deadline = time.monotonic() + self.notebook_timeout if self.notebook_timeout else None
        replayable: list[int] = []     # cells whose effects a fresh kernel must rebuild
        restarts = 0
        stop_reason = None
        with self.setup_kernel():
            info_msg = self.wait_for_reply(self.kc.kernel_info())
            self.nb.metadata["language_info"] = info_msg["content"]["language_info"]
            for index, cell in enumerate(self.nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                if stop_reason is None and deadline is not None and time.monotonic() >= deadline:
                    stop_reason = (f"the notebook's time budget ({self.notebook_timeout} s, course.yml "
                                   "grading.notebook_timeout_s) ran out before this cell")
                if stop_reason is not None:
                    cell.outputs = [_error_output("NotRun", f"not executed: {stop_reason}")]
                    continue
                remaining = None if deadline is None else max(1, math.ceil(deadline - time.monotonic()))
                budget_bound = remaining is not None and (not cell_timeout or remaining < cell_timeout)
                self.timeout = remaining if budget_bound else cell_timeout
                self.error_on_timeout = {
                    "ename": "CellTimeoutError", "evalue": "",
                    "traceback": [f"\x1b[0;31mCellTimeoutError\x1b[0m: this cell ran longer than "
                                  f"{self.timeout} s and was interrupted (course.yml grading.cell_timeout_s)"],
                }
                try:
                    self.preprocess_cell(cell, resources, index)
                except DeadKernelError:
                    cell.outputs.append(_error_output(
                        "KernelDied", "the kernel died while running this cell (a crash, os._exit or "
                        "running out of memory); the rest of the notebook was graded in a fresh kernel"))
                    if restarts >= self.max_kernel_restarts:
                        stop_reason = f"the kernel died {restarts + 1} times"
                        continue
                    restarts += 1
                    self.log.warning("kernel died in cell %d; restarting (%d/%d) and replaying %d cells",
                                     index, restarts, self.max_kernel_restarts, len(replayable))
                    self._restart_and_replay(replayable)
                    continue
                timed_out = any(o.get("ename") == "CellTimeoutError" for o in cell.outputs
                                if o.output_type == "error")
                if not timed_out:
                    replayable.append(index)
                elif budget_bound:
                    stop_reason = (f"the notebook's time budget ({self.notebook_timeout} s, course.yml "
                                   "grading.notebook_timeout_s) ran out")
            self.timeout = cell_timeout
        self.set_widgets_metadata()
        return self.nb, self.resources

    def _restart_and_replay(self, indices: list[int]) -> None:
        self._cleanup_kernel()
        self.km = self.create_kernel_manager()
        self.start_new_kernel()
        self.start_new_kernel_client()
        for index in indices:
            shadow = copy.deepcopy(self.nb.cells[index])  # outputs of the first run stay as they were
            try:
                self.execute_cell(shadow, index, store_history=False)
            except DeadKernelError:  # pragma: no cover - a cell that ran fine once crashing now
                self.log.error("kernel died again while replaying cell %d", index)
                raise


class RelabelStderr(NbGraderPreprocessor):
    """Keep text a test cell wrote to stderr, but stop it from zeroing the cell.

    nbgrader scores any stderr output in a test cell as a failure, so a harmless torch
    ``UserWarning`` costs a student full points. Errors still fail the cell: Python reports them
    as ``error`` outputs, not as stderr text. The text is kept, marked, on stdout.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if _is_test_cell(cell):
            for output in cell.get("outputs", []):
                if output.output_type == "stream" and output.name == "stderr":
                    output.name = "stdout"
                    output.text = "".join(f"[stderr] {line}" for line in output.text.splitlines(True))
        return cell, resources


class MarkUnrunTestCells(NbGraderPreprocessor):
    """A test cell that was never executed scores 0, not full marks.

    nbgrader gives full marks to a test cell without outputs, so anything that stops execution
    early would reward the student. GradingExecute already marks what it skips; this is the safety
    net for every other path.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if _is_test_cell(cell) and cell.get("execution_count") is None and not any(
                o.output_type == "error" for o in cell.get("outputs", [])):
            cell.outputs = list(cell.get("outputs", [])) + [
                _error_output("NotRun", "this test cell was never executed, so it scores 0")]
        return cell, resources
