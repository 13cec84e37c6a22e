"""Hidden checks (gankit/checks.py in the kernel, grading/checks.py in the grader), piece by piece.

The end-to-end cases (a student who monkeypatches the checks, feedback without hidden tests) run
in the demo's class: tests/test_grading_pipeline.py.
"""
from __future__ import annotations

import base64
import json

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook, new_output

from gankit.checks import MIME, CheckError, encode, hidden_check
from grading.checks import (AnswerKeyError, CompareHiddenChecks, HideHiddenTests, Malformed, compare, decode,
                            grade_cell)


def roundtrip(value):
    return decode(json.loads(json.dumps(encode(value))))


def test_reports_survive_json_exactly():
    tensor = torch.tensor([[1.5, float("nan")], [float("inf"), -0.0]])
    back = roundtrip({"t": tensor, "ints": torch.arange(5, dtype=torch.int64), "mask": torch.tensor([True, False]),
                      "half": torch.tensor([0.1], dtype=torch.bfloat16), "np": np.float32(2.5),
                      "nested": [1, 2.0, "three", None, (4, float("-inf"))], "size": torch.Size([2, 3])})
    np.testing.assert_array_equal(back["t"], tensor.numpy())           # nan and inf included, bit for bit
    assert back["ints"].dtype == np.int64 and back["ints"].tolist() == [0, 1, 2, 3, 4]
    assert back["mask"].dtype == np.bool_ and back["half"].dtype == np.float32
    assert back["np"].shape == () and float(back["np"]) == 2.5
    assert back["nested"][:4] == [1, 2.0, "three", None] and back["nested"][4][1] == float("-inf")
    assert back["size"] == [2, 3]


def test_only_plain_data_can_be_reported():
    with pytest.raises(CheckError, match=r"layer is a torch.nn.modules.linear.Linear.*type\(m\).__name__"):
        encode(torch.nn.Linear(2, 2), "layer")
    with pytest.raises(CheckError, match="string keys"):
        encode({1: 2})
    with pytest.raises(CheckError, match="complex"):
        encode(torch.tensor([1j]))
    with pytest.raises(CheckError, match="MiB"):
        hidden_check("huge", x=torch.zeros(600_000, dtype=torch.float64))
    with pytest.raises(CheckError, match="reports nothing"):
        hidden_check("empty")


@pytest.mark.parametrize("payload, why", [
    ({"__array__": {"dtype": "object", "shape": [1], "data": ""}}, "header"),
    ({"__array__": {"dtype": "float32", "shape": [2], "data": base64.b64encode(b"\0" * 4).decode()}}, "shape"),
    ({"__array__": {"dtype": "float32", "shape": [-1], "data": ""}}, "shape"),
    ({"__array__": {"dtype": "uint8", "shape": [1 << 30], "data": ""}}, "too large"),
    ({"__pickle__": "gASV"}, "unknown tag"),
    ({"__float__": "1e999999"}, "bad float"),
    ({"a": 1, "b": 2}, "unexpected"),
])
def test_what_a_kernel_sends_is_decoded_defensively(payload, why):
    with pytest.raises(Malformed, match=why):
        decode(payload)
    deep = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(Malformed, match="deeply"):
        decode(deep)


def test_compare_follows_the_keys_tolerance_and_never_quotes_the_key():
    key = decode(encode({"loss": torch.tensor(0.693147), "count": 1234, "names": ["Conv2d", "ReLU"]}))
    ok = decode(encode({"loss": torch.tensor(0.6931475), "count": 1234, "names": ["Conv2d", "ReLU"]}))
    assert compare(ok, key, rtol=1e-5, atol=0, where="out") is None
    cases = {
        "out['loss'] has the right shape but different values": {"loss": torch.tensor(0.70)},
        "out['loss'] has shape (1,), expected ()": {"loss": torch.tensor([0.693147])},
        "out['loss'] should be a tensor, got a float": {"loss": 0.693147},
        "out['count'] has a different value": {"count": 1235},
        "out['count'] should be a int, got a bool": {"count": True},
        "out['names'] has 1 items, expected 2": {"names": ["Conv2d"]},
        "out['names'][1] has a different value": {"names": ["Conv2d", "LeakyReLU"]},
    }
    for message, change in cases.items():
        got = decode(encode({"loss": torch.tensor(0.693147), "count": 1234, "names": ["Conv2d", "ReLU"], **change}))
        reason = compare(got, key, rtol=1e-5, atol=0, where="out")
        assert reason == message
        assert "0.693" not in reason and "1234" not in reason and "'ReLU'" not in reason
    assert compare({"a": 1}, {"b": 1}, rtol=0, atol=0, where="out") == "out has keys ['a'], expected ['b']"
    assert compare(decode(encode(torch.tensor([1, 2]))), decode(encode(torch.tensor([1.0, 2.0]))),
                   rtol=1, atol=1, where="x") == "x has dtype int64, expected a float dtype"
    # a wide tolerance from the key is honoured; the float key accepts an int
    assert compare(3, 3.2, rtol=0, atol=0.5, where="x") is None


def _report(name, **outputs):
    payload = {"name": name, "rtol": 1e9, "atol": 1e9, "outputs": {k: encode(v) for k, v in outputs.items()}}
    return new_output("display_data", data={MIME: payload, "text/plain": "hidden check"})


def _key_entry(name, rtol=1e-5, atol=1e-8, **outputs):
    return {"name": name, "rtol": rtol, "atol": atol, "outputs": {k: encode(v) for k, v in outputs.items()}}


def test_grade_cell_uses_the_keys_tolerance_not_the_students():
    cell = new_code_cell("...", outputs=[new_output("stream", name="stdout", text="hi\n"),
                                          _report("a", x=torch.tensor([1.0, 2.0])), _report("b", y=5.0),
                                          _report("extra", z=1)])
    failures = grade_cell(cell, [_key_entry("a", x=torch.tensor([1.0, 2.0])), _key_entry("b", y=4.0),
                                 _key_entry("c", w=1)])
    # b reports rtol=atol=1e9 itself: ignored. c never reported.
    assert failures == ["hidden check 'b': y has a different value", "hidden check 'c' did not report a result"]
    assert [o.get("text") for o in cell.outputs] == [
        "hi\n", "hidden check 'a': passed\n", "hidden check 'b': failed\n",
        "hidden check 'extra': not part of the answer key, ignored\n"]
    assert all(MIME not in o.get("data", {}) for o in cell.outputs)


def test_grade_cell_refuses_duplicates_and_malformed_reports():
    twice = new_code_cell("...", outputs=[_report("a", x=1), _report("a", x=1)])
    assert grade_cell(twice, [_key_entry("a", x=1)]) == ["hidden check 'a' reported 2 times"]
    forged = new_output("display_data", data={MIME: {"name": "a", "outputs": {"x": {"__pickle__": "..."}}}})
    reasons = grade_cell(new_code_cell("...", outputs=[forged]), [_key_entry("a", x=1)])
    assert reasons == ["hidden check 'a' reported malformed data (unknown tag '__pickle__')"]


def _graded_notebook(source, outputs):
    cell = new_code_cell(source, outputs=outputs, execution_count=1)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "test_x", "points": 2, "solution": False, "locked": True}
    return new_notebook(cells=[cell])


def test_the_preprocessor_fails_a_cell_only_through_the_key(tmp_path):
    from grading.checks import _hidden_region_sha256

    source = "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nhidden_check('f', y=f(3))\n### END HIDDEN TESTS"
    key = {"cells": {"test_x": {"hidden_sha256": _hidden_region_sha256(source), "checks": [_key_entry("f", y=6)]}}}
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "nb.json").write_text(json.dumps(key))
    resources = {"nbgrader": {"assignment": "hw", "notebook": "nb"}}
    compare_checks = CompareHiddenChecks(keys_dir=str(tmp_path))

    right, _ = compare_checks.preprocess(_graded_notebook(source, [_report("f", y=6)]), resources)
    assert not any(o.output_type == "error" for o in right.cells[0].outputs)
    wrong, _ = compare_checks.preprocess(_graded_notebook(source, [_report("f", y=7)]), resources)
    error = wrong.cells[0].outputs[-1]
    assert error.ename == "HiddenCheckFailed" and "'f': y has a different value" in error.evalue
    silent, _ = compare_checks.preprocess(_graded_notebook(source, []), resources)
    assert "did not report" in silent.cells[0].outputs[-1].evalue
    # a test cell nbgrader restored after the student deleted it carries a note in front
    restored, _ = compare_checks.preprocess(_graded_notebook("# This cell was missing\n" + source,
                                                             [_report("f", y=6)]), resources)
    assert not any(o.output_type == "error" for o in restored.cells[0].outputs)

    stale = _graded_notebook(source.replace("f(3)", "f(4)"), [_report("f", y=8)])
    with pytest.raises(AnswerKeyError, match="differs from the one the answer key"):
        compare_checks.preprocess(stale, resources)
    with pytest.raises(AnswerKeyError, match="no answer key.*gankit grade hw"):
        CompareHiddenChecks(keys_dir=str(tmp_path / "none")).preprocess(_graded_notebook(source, []), resources)
    # notebooks without hidden checks (nbgrader's own example course) need no key
    plain, _ = CompareHiddenChecks(keys_dir="").preprocess(_graded_notebook("assert True", []), resources)
    assert plain.cells[0].outputs == []


def test_feedback_hides_the_hidden_region_and_its_traceback():
    source = ("assert f(1) == 2\n### BEGIN HIDDEN TESTS\nsecret_input = 12345\nhidden_check('f', y=f(secret_input))\n"
              "### END HIDDEN TESTS\n")
    error = new_output("error", ename="ValueError", evalue="bad input",
                       traceback=["----> 3 hidden_check('f', y=f(secret_input))", "ValueError: bad input"])
    nb = _graded_notebook(source, [_report("f", y=1), error])
    nb, _ = HideHiddenTests().preprocess(nb, {})
    cell = nb.cells[0]
    assert "secret_input" not in cell.source and "BEGIN HIDDEN" not in cell.source
    assert cell.source.startswith("assert f(1) == 2\n") and "hidden checks: run by the grader" in cell.source
    assert cell.outputs[-1].traceback == ["ValueError: bad input"]
    assert all(MIME not in o.get("data", {}) for o in cell.outputs)
    assert "12345" not in nbformat.writes(nb)
