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
outputs as an error named ``GradingNote``/``KernelDied``/``KernelStuck``/``NotRun``/
``CellTimeoutError``/``OutputLimit``/``ProcessLimit``.

Two limits protect the grader itself, not only the grade. nbclient keeps every output message of
a cell in memory, so a cell that prints without end would exhaust the grader's memory long before
nbgrader's LimitOutput trims the stored notebook: GradingExecute stops keeping a cell's outputs
past ``max_output_bytes`` (course.yml ``grading.max_output_mb``) and interrupts the cell. A fork
bomb is held by the sandbox's per-kernel process limit (grading/sandbox.py, course.yml
``grading.max_processes``); GradingExecute notes it in the cell and replaces the kernel, whose
leftover processes die with it.
"""
from __future__ import annotations

import asyncio
import copy
import json
import math
import queue
import time

import papermill.parameterize
from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Dict, Integer, Unicode

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
    would overwrite the injected values. A notebook with no parameters cell at all (an assignment
    that takes none, another course's) gets nothing: papermill would add a new first cell holding
    the grader's own paths, which the student then reads in the feedback.
    """

    parameters = Dict(
        help="Values injected into every graded notebook (course.yml grading.parameters + DATA_DIR)").tag(config=True)
    parameters_cell_id = Unicode(PARAMETERS_TAG, help="nbgrader grade_id of the locked parameters cell").tag(config=True)

    def preprocess(self, nb, resources):
        if not self.parameters:
            return nb, resources
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            tags = cell.metadata.setdefault("tags", [])   # papermill reads every cell's tags
            if grade_id == self.parameters_cell_id and PARAMETERS_TAG not in tags:
                tags.append(PARAMETERS_TAG)
        if not any(PARAMETERS_TAG in c.metadata.get("tags", []) for c in nb.cells):
            self.log.info("no cell tagged %r or with grade_id %r: no parameters injected",
                          PARAMETERS_TAG, self.parameters_cell_id)
            return nb, resources
        # papermill *replaces* the first cell tagged injected-parameters, wherever it stands: a
        # student's cell so tagged would vanish, and the values land before the locked cell.
        for cell in nb.cells:
            if "injected-parameters" in cell.metadata.get("tags", []):
                cell.metadata.tags.remove("injected-parameters")
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
    - A cell whose outputs pass ``max_output_bytes`` is interrupted; what it sends afterwards is
      dropped, not kept in the grader's memory, and an ``OutputLimit`` error says why it stopped.
    - A cell that hits the sandbox's process limit (a fork bomb) gets a ``ProcessLimit`` error and,
      like a dead kernel, a fresh kernel: the bomb's processes hold every free slot until then.
    - A kernel that does not answer after one of its cells was interrupted (the cell ignored the
      interrupt) is replaced the same way, with a ``KernelStuck`` note, instead of every later
      cell running into its timeout. Kernel replacements of all kinds count against
      ``max_kernel_restarts``.
    """

    notebook_timeout = Integer(900, help="Seconds for the whole notebook (0: no limit)").tag(config=True)
    max_kernel_restarts = Integer(2, help="Kernel deaths survived per notebook").tag(config=True)
    max_output_bytes = Integer(16 * 2**20, help="Output one cell may produce before it is interrupted "
                               "(0: no limit; course.yml grading.max_output_mb)").tag(config=True)
    # nbclient would raise when a cell's output does not end within iopub_timeout after its reply
    # (a kernel that ignored the interrupt), ending the whole notebook and leaving its output
    # task polling the next kernel's messages. Without raising, that task is cancelled, and a
    # kernel that does not answer afterwards is replaced (KernelStuck).
    raise_on_iopub_timeout = Bool(False, help="Raise when a cell's output does not end in time").tag(config=True)
    # Every output is in hand once the last cell replied: a polite shutdown request only waits for
    # the student's kernel to tear torch down (1.5 s of a 7 s job on 2 cores), and then the
    # sandbox's cgroup kills whatever it left running anyway.
    shutdown_kernel = Unicode("immediate", help="How the kernel ends after the last cell "
                              "(nbclient: 'graceful' or 'immediate')").tag(config=True)
    # Per-cell state of the output limit, reset by async_execute_cell.
    _output_bytes = 0
    _output_stopped = False
    _output_interrupt = None

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
                new_kernel_reason = None   # why the rest of the notebook needs a fresh kernel
                died = False
                try:
                    self.preprocess_cell(cell, resources, index)
                except DeadKernelError:
                    died = True
                if self._process_limit_reached(cell):
                    # First, even when the kernel died of it: the limit is the cause to report.
                    cell.outputs.append(_error_output(
                        "ProcessLimit", f"this cell hit the kernel's limit of {self.km.max_procs} processes "
                        "and threads at once (a fork bomb, or too many workers) and was stopped (course.yml "
                        "grading.max_processes); the rest of the notebook was graded in a fresh kernel"))
                    new_kernel_reason = "hit the process limit"
                elif died:
                    cell.outputs.append(_error_output(
                        "KernelDied", "the kernel died while running this cell (a crash, os._exit or "
                        "running out of memory); the rest of the notebook was graded in a fresh kernel"))
                    new_kernel_reason = "died"
                elif self._was_interrupted(cell) and not self._kernel_responds():
                    cell.outputs.append(_error_output(
                        "KernelStuck", "the kernel did not respond after this cell was interrupted (it "
                        "ignored the interrupt); the rest of the notebook was graded in a fresh kernel"))
                    new_kernel_reason = "did not respond after an interrupt"
                if new_kernel_reason is not None:
                    if restarts >= self.max_kernel_restarts:
                        stop_reason = f"the kernel died or was replaced {restarts + 1} times"
                        continue
                    restarts += 1
                    self.log.warning("kernel %s in cell %d; restarting (%d/%d) and replaying %d cells",
                                     new_kernel_reason, index, restarts, self.max_kernel_restarts, len(replayable))
                    self._restart_and_replay(replayable)
                    continue
                errors = {o.get("ename") for o in cell.outputs if o.output_type == "error"}
                if "CellTimeoutError" in errors and budget_bound:
                    stop_reason = (f"the notebook's time budget ({self.notebook_timeout} s, course.yml "
                                   "grading.notebook_timeout_s) ran out")
                elif not self._was_interrupted(cell):
                    replayable.append(index)    # a cell that was stopped half-way is not replayed
            self.timeout = cell_timeout
        self.set_widgets_metadata()
        return self.nb, self.resources

    def _process_limit_reached(self, cell: NotebookNode) -> bool:
        """Did this cell hit the sandbox's process limit? Only a sandboxed kernel has one."""
        reached = getattr(self.km, "process_limit_reached", None)
        if reached is None:
            return False
        answer = reached()
        if answer is None:
            # RLIMIT_NPROC keeps no count of refusals: a refused fork shows as EAGAIN in the cell.
            return any(o.output_type == "error" and o.ename == "BlockingIOError" for o in cell.outputs)
        return answer

    @staticmethod
    def _was_interrupted(cell: NotebookNode) -> bool:
        """Did the grader interrupt this cell (over its time or output limit)?"""
        return any(o.output_type == "error" and o.ename in ("CellTimeoutError", "OutputLimit") for o in cell.outputs)

    def _kernel_responds(self, timeout_s: float = 5.0) -> bool:
        """Does the kernel answer a kernel_info request? It cannot while a cell still runs."""
        msg_id = self.kc.kernel_info()
        get_reply = run_sync(self.kc.shell_channel.get_msg)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                reply = get_reply(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if reply["parent_header"].get("msg_id") == msg_id:
                return True     # (the interrupted cell's late execute_reply is skipped)
        return False

    def _restart_and_replay(self, indices: list[int]) -> None:
        # No polite shutdown request: the kernel is dead, stuck, or full of a fork bomb's processes.
        configured = self.shutdown_kernel
        self.shutdown_kernel = "immediate"
        try:
            self._cleanup_kernel()
        finally:
            self.shutdown_kernel = configured
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

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        """nbclient's, plus the output limit: counters per cell, and the ``OutputLimit`` note."""
        self._output_bytes = 0          # what this cell's stored outputs take, as JSON
        self._output_stopped = False    # past the limit: interrupted, the rest is dropped
        self._output_interrupt = None   # the interrupt request, awaited below
        try:
            cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            if self._output_interrupt is not None:
                try:
                    await self._output_interrupt
                except Exception as err:   # a kernel that died meanwhile: nothing left to stop
                    self.log.warning("could not interrupt cell %d after its output limit: %s", cell_index, err)
        if self._output_stopped:
            megabytes = round(self.max_output_bytes / 2**20, 2)
            cell.outputs.append(_error_output(
                "OutputLimit", f"this cell printed more than {megabytes:g} MB of output and was stopped "
                "(course.yml grading.max_output_mb); later output of the cell was dropped"))
        return cell

    # nbclient binds its synchronous wrapper to its own coroutine; ours must wrap the override.
    execute_cell = run_sync(async_execute_cell)

    def output(self, outs, msg, display_id, cell_index):
        """Store one output message, unless the cell has used up ``max_output_bytes``."""
        if self._output_stopped:
            return None
        if self.clear_before_next_output:
            self._output_bytes = 0      # clear_output(wait=True): nbclient empties outs before this one
        size = len(json.dumps(msg["content"], default=str))
        room = self.max_output_bytes - self._output_bytes
        if not self.max_output_bytes or size <= room:
            self._output_bytes += size
            return super().output(outs, msg, display_id, cell_index)
        self.log.warning("cell %d printed more than %d bytes: interrupting it", cell_index, self.max_output_bytes)
        self._output_stopped = True
        # Called from nbclient's output-polling task, so the event loop runs: the interrupt goes
        # out now (by message in the sandbox), while nbclient keeps waiting for the cell's reply.
        self._output_interrupt = asyncio.ensure_future(ensure_async(self.km.interrupt_kernel()))
        if msg["msg_type"] == "stream" and room > 0:
            # Keep what fits of the last chunk, so the feedback shows where the flood was cut.
            text = msg["content"]["text"].encode()[:room].decode(errors="ignore")
            kept = {**msg, "content": {**msg["content"], "text": text}}
            return super().output(outs, kept, display_id, cell_index)
        return None

    def clear_output(self, outs, msg, cell_index):
        """nbclient's; an immediate clear also frees the cell's output budget."""
        super().clear_output(outs, msg, cell_index)
        if not msg["content"].get("wait"):
            self._output_bytes = 0


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
