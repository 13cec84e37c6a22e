"""The trusted side of hidden checks (``gankit.checks.hidden_check``): answer keys and comparison.

* :func:`build_keys` runs the instructor's source notebook (solutions and hidden checks) outside
  any sandbox, with the same papermill parameters as a graded submission, and keeps what each
  hidden check reported: ``<runtime>/grading/keys/<assignment>/<notebook>.json``. The key is
  rebuilt when the source notebook or the grading parameters change, and never enters a kernel.
* :class:`CompareHiddenChecks` (an autograde preprocessor, after execution) reads what the
  student's test cells reported, compares it with the key outside the kernel, and gives a cell
  that differs, or whose checks never reported, an error output, which scores it 0. Redefining
  ``assert``, ``torch.allclose`` or ``__eq__`` in the notebook cannot change that comparison.
* :class:`HideHiddenTests` (a feedback preprocessor) takes the hidden-test regions, and the
  tracebacks that would quote them, out of the feedback HTML (nbgrader's own feedback shows them:
  jupyter/nbgrader#917).

What a student's kernel sends is untrusted data: it is decoded without pickle, with a whitelist of
dtypes and a size check, and anything malformed fails the check.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from traitlets import Unicode

from gankit.checks import DTYPES, MAX_PAYLOAD_BYTES, MIME
from grading.course import CourseError
from grading.preprocessors import _is_test_cell

KEY_FORMAT = 2
MAX_ELEMENTS = 1 << 24


class AnswerKeyError(CourseError):
    """An answer key is missing, stale, or the instructor's own notebook fails its checks."""


class Malformed(ValueError):
    """What a kernel reported is not data that hidden_check could have produced."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hidden_region_sha256(source: str) -> str:
    """The hash of a test cell's hidden region, what its key depends on. Only the region: nbgrader
    prefixes a note to a test cell it restores after a student deleted it."""
    start, end = source.find("### BEGIN HIDDEN TESTS"), source.rfind("### END HIDDEN TESTS")
    return _sha256(source[start:end] if 0 <= start < end else source)


# --- reading what a kernel reported --------------------------------------------------------------
def decode(value, depth: int = 0):
    """Encoded check data (gankit.checks.encode) back to Python and numpy values; raise Malformed."""
    import numpy as np

    if depth > 32:
        raise Malformed("nested too deeply")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list):
        return [decode(item, depth + 1) for item in value]
    if not isinstance(value, dict) or len(value) != 1:
        raise Malformed(f"unexpected {type(value).__name__}")
    (tag, inner), = value.items()
    if tag == "__float__":
        if inner not in ("nan", "inf", "-inf"):
            raise Malformed(f"bad float {inner!r}")
        return float(inner)
    if tag == "__dict__" and isinstance(inner, dict):
        return {str(key): decode(item, depth + 1) for key, item in inner.items()}
    if tag == "__array__" and isinstance(inner, dict):
        dtype, shape, data = inner.get("dtype"), inner.get("shape"), inner.get("data")
        if dtype not in DTYPES or not isinstance(shape, list) or not isinstance(data, str):
            raise Malformed("bad array header")
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape):
            raise Malformed("bad array shape")
        count = math.prod(shape)
        if count > MAX_ELEMENTS or len(data) > 2 * MAX_PAYLOAD_BYTES:
            raise Malformed("array too large")
        raw = base64.b64decode(data.encode("ascii"), validate=True)
        itemsize = np.dtype(dtype).itemsize
        if len(raw) != count * itemsize:
            raise Malformed("array data does not match its shape")
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    raise Malformed(f"unknown tag {tag!r}")


def reported_checks(cell) -> list[dict]:
    """The raw payloads of hidden checks among a cell's outputs, in order."""
    return [output["data"][MIME] for output in cell.get("outputs", [])
            if output.get("output_type") in ("display_data", "execute_result") and MIME in output.get("data", {})]


# --- comparing -----------------------------------------------------------------------------------
def _kind(value) -> str:
    import numpy as np

    if isinstance(value, np.ndarray):
        return {"b": "bool", "i": "int", "u": "int", "f": "float"}[value.dtype.kind]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if value is None:
        return "None"
    return type(value).__name__   # str, list, dict


def _describe(value) -> str:
    import numpy as np

    return "a tensor" if isinstance(value, np.ndarray) else f"a {_kind(value)}"


def compare(got, want, *, rtol: float, atol: float, where: str) -> str | None:
    """None when ``got`` matches the key's ``want``; otherwise why not, never quoting ``want``."""
    import numpy as np

    if isinstance(want, np.ndarray):
        if not isinstance(got, np.ndarray):
            return f"{where} should be a tensor, got {_describe(got)}"
        if got.shape != want.shape:
            return f"{where} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if (_kind(want) == "float") != (_kind(got) == "float") or (_kind(want) == "bool") != (_kind(got) == "bool"):
            return f"{where} has dtype {got.dtype}, expected a {_kind(want)} dtype"
        if _kind(want) == "float":
            same = np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
        else:
            same = np.array_equal(got, want)
        return None if same else f"{where} has the right shape but different values"
    if isinstance(want, float):
        if _kind(got) not in ("float", "int") or isinstance(got, np.ndarray):
            return f"{where} should be a number, got {_describe(got)}"
        both_nan = math.isnan(want) and math.isnan(got)
        return None if both_nan or math.isclose(got, want, rel_tol=rtol, abs_tol=atol) else f"{where} has a different value"
    if isinstance(want, list):
        if not isinstance(got, list):
            return f"{where} should be a list, got {_describe(got)}"
        if len(got) != len(want):
            return f"{where} has {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            reason = compare(g, w, rtol=rtol, atol=atol, where=f"{where}[{i}]")
            if reason:
                return reason
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{where} should be a dict, got {_describe(got)}"
        if set(got) != set(want):
            return f"{where} has keys {sorted(got)}, expected {sorted(want)}"
        for key in want:
            reason = compare(got[key], want[key], rtol=rtol, atol=atol, where=f"{where}[{key!r}]")
            if reason:
                return reason
        return None
    if _kind(got) != _kind(want):
        return f"{where} should be {_describe(want)}, got {_describe(got)}"
    return None if got == want else f"{where} has a different value"


def grade_cell(cell, expected: list[dict]) -> list[str]:
    """Compare one test cell's reported checks with the key; return the failures (empty: passed).

    The cell's raw check outputs are replaced by one readable line each.
    """
    reported: dict[str, list] = {}
    for payload in reported_checks(cell):
        name = payload.get("name") if isinstance(payload, dict) else None
        reported.setdefault(str(name), []).append(payload)
    failures = []
    verdicts = {}
    for check in expected:
        name = check["name"]
        got = reported.get(name, [])
        if not got:
            failures.append(f"hidden check {name!r} did not report a result")
            continue
        if len(got) > 1:
            verdicts[name] = reason = f"hidden check {name!r} reported {len(got)} times"
            failures.append(reason)
            continue
        want = {key: decode(value) for key, value in check["outputs"].items()}
        try:
            outputs = got[0].get("outputs")
            if not isinstance(outputs, dict):
                raise Malformed("no outputs")
            outputs = {str(key): decode(value) for key, value in outputs.items()}
        except (Malformed, ValueError, TypeError) as err:
            reason = f"hidden check {name!r} reported malformed data ({err})"
        else:
            if set(outputs) != set(want):
                reason = f"hidden check {name!r} reported {sorted(outputs)}, expected {sorted(want)}"
            else:
                reason = next((f"hidden check {name!r}: {why}" for why in (
                    compare(outputs[key], want[key], rtol=check["rtol"], atol=check["atol"], where=key)
                    for key in want) if why), None)
        verdicts[name] = reason
        if reason:
            failures.append(reason)
    known = {check["name"] for check in expected}
    outputs = []
    for output in cell.get("outputs", []):
        payload = output.get("data", {}).get(MIME) if output.get("output_type") in ("display_data", "execute_result") else None
        if payload is None:
            outputs.append(output)
            continue
        name = str(payload.get("name")) if isinstance(payload, dict) else "?"
        verdict = "not part of the answer key, ignored" if name not in known else (
            "failed" if verdicts.get(name) else "passed")
        outputs.append(NotebookNode(output_type="stream", name="stdout", text=f"hidden check {name!r}: {verdict}\n"))
    cell.outputs = outputs
    return failures


class CompareHiddenChecks(NbGraderPreprocessor):
    """Score hidden checks against the answer key, outside the kernel (see the module docstring)."""

    keys_dir = Unicode("", help="Folder with <assignment>/<notebook>.json answer keys (grading/checks.py)").tag(config=True)

    def preprocess(self, nb, resources):
        assignment = resources["nbgrader"]["assignment"]
        notebook = resources["nbgrader"]["notebook"]
        path = Path(self.keys_dir) / assignment / f"{notebook}.json" if self.keys_dir else None
        uses_checks = any(_is_test_cell(c) and "hidden_check" in c.source for c in nb.cells)
        if path is None or not path.is_file():
            if uses_checks:
                raise AnswerKeyError(
                    f"{assignment}/{notebook}.ipynb has hidden checks but no answer key at {path}: grade with "
                    f"`gankit grade {assignment}` (it builds the key) or run `python -m grading keys {assignment}`")
            return nb, resources
        key = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb.cells:
            if not _is_test_cell(cell):
                continue
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            entry = key["cells"].get(grade_id)
            if entry is None:
                if "hidden_check" in cell.source:
                    raise AnswerKeyError(f"the answer key {path} has no cell {grade_id!r}: rebuild it "
                                         f"(`python -m grading keys {assignment} --force`)")
                continue
            if entry["hidden_sha256"] != _hidden_region_sha256(cell.source):
                raise AnswerKeyError(
                    f"test cell {grade_id!r} of {assignment}/{notebook}.ipynb in the gradebook differs from the one "
                    f"the answer key {path} was built from: regenerate the assignment (`make generate`), then "
                    f"rebuild the key (`python -m grading keys {assignment} --force`)")
            already_failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
            failures = grade_cell(cell, entry["checks"])
            if failures and not already_failed:
                message = "; ".join(failures)
                cell.outputs.append(NotebookNode(
                    output_type="error", ename="HiddenCheckFailed", evalue=message,
                    traceback=[f"\x1b[0;31mHiddenCheckFailed\x1b[0m: {message}"]))
        return nb, resources


class HideHiddenTests(ClearHiddenTests):
    """Feedback without the hidden tests: their region becomes one comment line, and a failing
    test cell's traceback (which quotes the line that raised) shrinks to its error line."""

    def _remove_hidden_test_region(self, cell):
        removed = super()._remove_hidden_test_region(cell)
        if removed:
            kept = cell.source.rstrip("\n")
            cell.source = (kept + "\n" if kept else "") + "# (hidden checks: run by the grader, not shown)"
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return removed

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.cell_type == "code":  # raw reports, in a notebook CompareHiddenChecks did not see
            cell.outputs = [o for o in cell.outputs if MIME not in o.get("data", {})]
        return cell, resources


# --- building answer keys ------------------------------------------------------------------------
def keys_dir(course) -> Path:
    return course.runtime_dir / "grading" / "keys"


def _fingerprint(source: Path, parameters: dict) -> str:
    from gankit import checks

    stable = {k: v for k, v in parameters.items() if k != "DATA_DIR"}
    text = source.read_text(encoding="utf-8") + json.dumps(stable, sort_keys=True) + str(KEY_FORMAT)
    return _sha256(text + Path(checks.__file__).read_text(encoding="utf-8"))


def build_keys(course, assignment: str, *, force: bool = False) -> dict[str, Path]:
    """Run each source notebook with hidden checks and keep what they reported; {notebook: key path}.

    A key whose source notebook and grading parameters are unchanged is reused.
    """
    import nbformat

    from grading.nbgrader_setup import grading_parameters

    folder = course.week_of(assignment).assignment_dir()
    parameters = grading_parameters(course)
    keys = {}
    for source in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(source, as_version=4)
        if not any(_is_test_cell(c) and "hidden_check" in c.source for c in nb.cells):
            continue
        target = keys_dir(course) / assignment / f"{source.stem}.json"
        fingerprint = _fingerprint(source, parameters)
        if not force and target.is_file():
            try:
                if json.loads(target.read_text(encoding="utf-8")).get("fingerprint") == fingerprint:
                    keys[source.stem] = target
                    continue
            except ValueError:
                pass   # a damaged key is rebuilt
        key = _run_source(source, parameters, course)
        key.update(format=KEY_FORMAT, assignment=assignment, notebook=source.stem, fingerprint=fingerprint)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps(key, indent=1), encoding="utf-8")
        os.replace(partial, target)
        keys[source.stem] = target
    return keys


def _run_source(source: Path, parameters: dict, course) -> dict:
    """Execute the instructor's notebook (trusted: no sandbox) and collect each test cell's checks."""
    import nbformat
    import papermill

    from grading import scratch

    work = scratch.scratch_dir(scratch.KEY_PREFIX)   # the instructor's answers: removed by the next run if killed
    try:
        shutil.copytree(source.parent, work / "assignment", ignore=shutil.ignore_patterns(".*"))
        executed = work / "executed.ipynb"
        try:
            papermill.execute_notebook(str(work / "assignment" / source.name), str(executed), parameters=parameters,
                                       cwd=str(work / "assignment"), progress_bar=False, log_output=False,
                                       execution_timeout=course.grading.cell_timeout_s, kernel_name="python3")
        except papermill.PapermillExecutionError as err:
            raise AnswerKeyError(f"the instructor's notebook {source} fails when run for its answer key "
                                 f"(cell {err.exec_count}): {err.ename}: {err.evalue}") from None
        nb = nbformat.read(executed, as_version=4)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cells = {}
    for cell in nb.cells:
        if not _is_test_cell(cell) or "hidden_check" not in cell.source:
            continue
        grade_id = cell.metadata["nbgrader"]["grade_id"]
        checks = []
        for payload in reported_checks(cell):
            if any(c["name"] == payload["name"] for c in checks):
                raise AnswerKeyError(f"{source}: cell {grade_id!r} reports the hidden check {payload['name']!r} twice: "
                                     "give each check its own name")
            checks.append({"name": payload["name"], "rtol": payload["rtol"], "atol": payload["atol"],
                           "outputs": payload["outputs"]})
        if not checks:
            raise AnswerKeyError(f"{source}: test cell {grade_id!r} calls hidden_check but reported nothing")
        cells[grade_id] = {"hidden_sha256": _hidden_region_sha256(cell.source), "checks": checks}
    return {"cells": cells}
