"""Answers that delegate to gankit's own reference implementation are found and graded as not done
(grading/reference_check.py), and students hear it before they submit (grading/validate_hooks.py)."""
from __future__ import annotations

import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grading import reference_check, validate_hooks
from grading.reference_check import FlagReferenceAnswers, NoteReferenceAnswers, scan_notebook

GRADED = {"discriminator_loss", "generator_block", "train_step", "Generator"}
TRAIN_STUB = 'def train_step(G, D, opt_g, opt_d, real, z):\n    raise NotImplementedError()\n'
STUB = 'def discriminator_loss(real_logits, fake_logits):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'


def _meta(grade_id, solution=False, locked=False, grade=False, points=0):
    return {"nbgrader": {"grade_id": grade_id, "solution": solution, "locked": locked, "grade": grade,
                         "points": points, "schema_version": 3}}


def _nb(answer: str, setup: str = "import torch\nimport gankit\n", extra: str | None = None):
    cells = [new_code_cell(setup, metadata=_meta("setup", locked=True)),
             new_code_cell(answer, metadata=_meta("losses", solution=True))]
    if extra is not None:
        cells.append(new_code_cell(extra))       # a cell the student added
    cells.append(new_code_cell("assert discriminator_loss(1, 2) == 3", metadata=_meta("test", locked=True, grade=True, points=3)))
    return new_notebook(cells=cells)


def _flagged(answer: str, **kwargs) -> list[str]:
    found = scan_notebook(_nb(answer, **kwargs), GRADED)
    return sorted({f.name for findings in found.values() for f in findings})


@pytest.mark.parametrize("answer", [
    "from gankit.models.dcgan import discriminator_loss",
    "from gankit.models.dcgan import discriminator_loss as mine\ndiscriminator_loss = mine",
    "from gankit.models.dcgan import d_loss as discriminator_loss",
    "from gankit.models import dcgan\ndef discriminator_loss(r, f):\n    return dcgan.discriminator_loss(r, f)",
    "import gankit.models.dcgan as d\nblock = d.generator_block",
    "from gankit.models import dcgan\ndiscriminator_loss = dcgan.discriminator_loss",
    "from gankit.models import dcgan\ndiscriminator_loss = dcgan.some_other_loss",
    "def train_step(*args):\n    return gankit.models.dcgan.train_step(*args)",          # `import gankit` is in the locked setup
    "import gankit.models.dcgan\nx = gankit.models.dcgan.Generator()",
    "import importlib\nm = importlib.import_module('gankit.models.dcgan')\nf = getattr(m, 'discriminator_loss')",
    "from importlib import import_module as im\nf = im('gankit.models.dcgan').train_step",
    "f = getattr(__import__('gankit.models.dcgan', fromlist=['x']), 'discriminator_loss')",
    "from gankit.models import dcgan as a\nb = a\nc = b\ndef train_step(*x):\n    return c.train_step(*x)",
    "from gankit.models.dcgan import *",
    "%matplotlib inline\nfrom gankit.models.dcgan import discriminator_loss",
])
def test_each_form_of_using_the_reference_is_flagged(answer):
    assert _flagged(answer), answer


@pytest.mark.parametrize("answer", [
    "import torch.nn.functional as F\ndef discriminator_loss(r, f):\n    return F.softplus(-r).mean() + F.softplus(f).mean()",
    "from gankit import seed_everything\nseed_everything(0)\ndef discriminator_loss(r, f):\n    return r.mean()",
    "rng = gankit.seed_everything(0)",
    "from gankit.models.dcgan import weights_init\ndef generator_block(i, o):\n    return None",
    "import gankit.models.dcgan as d\nd = torch\nx = d.train_step",           # d rebound: no longer the kit
    "class Generator(torch.nn.Module):\n    pass",
    "def train_step(:\n",                                                     # does not compile: the kernel says so
])
def test_legitimate_answers_are_not_flagged(answer):
    assert _flagged(answer) == [], answer


def test_an_import_in_a_cell_the_student_added_is_flagged_there_and_its_use_in_the_answer_too():
    nb = _nb("def train_step(*a):\n    return d.train_step(*a)", extra="import gankit.models.dcgan as d")
    nb.cells[1], nb.cells[2] = nb.cells[2], nb.cells[1]     # the added cell comes first
    found = scan_notebook(nb, GRADED)
    assert set(found) == {2}     # the import binds no graded name; the answer's use of it is flagged
    added = _nb("def discriminator_loss(r, f):\n    return r", extra="from gankit.models.dcgan import discriminator_loss")
    assert set(scan_notebook(added, GRADED)) == {2}


def test_code_nested_too_deeply_to_check_is_flagged_when_it_names_the_kit_and_ignored_otherwise():
    deep = "x = d" + ".b" * 100_000       # Python itself gives up building this tree (RecursionError)
    assert _flagged("import gankit.models.dcgan as d\n" + deep) == ["?"]
    assert _flagged(deep) == []
    assert _flagged("x = " + "(" * 1000 + "1" + ")" * 1000) == []        # too nested to compile: binds nothing
    assert _flagged("x = 1\0") == []                                     # null byte: does not compile


def test_locked_and_test_cells_are_not_the_students_and_are_not_flagged():
    nb = _nb("x = 1", setup="from gankit.models.dcgan import discriminator_loss")
    assert scan_notebook(nb, GRADED) == {}


def test_a_cell_the_student_marked_locked_is_still_the_students_when_the_gradebook_says_so():
    nb = _nb("x = 1", extra="from gankit.models.dcgan import discriminator_loss")
    nb.cells[2].metadata.update(_meta("sneaky", locked=True))
    assert scan_notebook(nb, GRADED) == {}                                 # metadata alone would trust it
    assert set(scan_notebook(nb, GRADED, instructor_ids={"setup", "test"})) == {2}


def test_graded_names_come_from_top_level_defs_and_classes_of_solution_cells():
    assert reference_check.graded_names([STUB, "class Generator:\n    def inner(self): pass\nX = 1"]) == {
        "discriminator_loss", "Generator"}


def test_a_flagged_solution_runs_as_its_stub_and_keeps_the_students_code_with_the_reason(monkeypatch):
    answer = "from gankit.models.dcgan import discriminator_loss"
    nb = _nb(answer, extra="from gankit.models.dcgan import train_step\nhelper = 1")
    monkeypatch.setattr(FlagReferenceAnswers, "_from_gradebook",
                        lambda self, resources: ({"losses": STUB, "step": TRAIN_STUB}, {"setup", "test"}))
    nb, resources = FlagReferenceAnswers().preprocess(nb, {})
    assert nb.cells[1].source == STUB
    assert "helper" not in nb.cells[2].source and "not run by the grader" in nb.cells[2].source
    assert nb.cells[0].source.startswith("import torch")           # the locked cell is left alone
    nb, resources = NoteReferenceAnswers().preprocess(nb, resources)
    assert nb.cells[1].source == answer
    note = nb.cells[1].outputs[0]
    assert note.ename == "ReferenceImplementation"
    assert "gankit.models.dcgan.discriminator_loss" in note.evalue and "counts as not done" in note.evalue
    assert "graded as the unanswered stub" in note.evalue
    assert "did not run this cell" in nb.cells[2].outputs[0].evalue
    assert reference_check.NOTE_KEY not in nb.cells[1].metadata and reference_check.ORIGINAL_KEY not in nb.cells[1].metadata


def test_validate_hooks_warn_in_the_next_test_cell_and_point_at_the_first_error():
    nb = _nb(STUB.replace("raise NotImplementedError()", "from gankit.models.dcgan import discriminator_loss as f\n"
                          "    return f(real_logits, fake_logits)"))
    nb.cells.insert(1, new_code_cell("assert True", metadata=_meta("test_before", locked=True, grade=True, points=1)))
    validate_hooks.on_notebook_start(notebook=nb)
    before, test = nb.cells[1], nb.cells[3]
    before.outputs, test.outputs = [], []
    validate_hooks.on_cell_start(cell_index=2)                   # the test above the answer has run
    validate_hooks.on_cell_start(cell_index=3)                   # the answer has run
    assert before.outputs == [] and nb.cells[2].get("outputs", []) == []
    validate_hooks.on_cell_start(cell_index=4)                   # the test below the answer has run
    assert test.outputs[0].ename == "ReferenceImplementation" and "score it 0" in test.outputs[0].evalue
    validate_hooks.on_cell_start(cell_index=5)
    assert len(test.outputs) == 1                                 # given once

    nb = _nb("x = 1")
    validate_hooks.on_notebook_start(notebook=nb)
    train, test = nb.cells[1], nb.cells[2]
    validate_hooks.on_cell_error(cell=train, cell_index=1, execute_reply={
        "content": {"ename": "DataError", "evalue": "mnist is not in /data and there is no network"}})
    test.outputs = [nbformat.from_dict({"output_type": "error", "ename": "NameError", "evalue": "history",
                                        "traceback": ["NameError: history"]})]
    validate_hooks.on_cell_error(cell=test, cell_index=2, execute_reply={"content": {"ename": "NameError"}})
    first = test.outputs[0]
    assert first.ename == "FirstError"
    assert "DataError: mnist is not in /data" in first.evalue and "cell 2" in first.evalue and "x = 1" in first.evalue
    assert test.outputs[1].ename == "NameError"


@pytest.mark.slow
def test_week1_an_answer_importing_the_reference_scores_0_and_feedback_says_why_and_waits_for_the_written_grade(
        course_runtime):
    """One week-1 submission, graded as `make demo` grades it (nbgrader autograde with our preprocessors)."""
    import shutil

    from gankit.data import prepare
    from grading import demo, pipeline

    course = course_runtime
    prepare("mnist", course.data_dir, smoke=True, seed=0)
    release = pipeline.generate(course, demo.ASSIGNMENT)
    nb = nbformat.read(release / demo.NOTEBOOK, as_version=4)
    demo.full(nb, demo.solutions(course))
    demo._replace(nb, "losses", "def discriminator_loss(real_logits, fake_logits):",
                  "from gankit.models import dcgan\n\n\ndef discriminator_loss(real_logits, fake_logits):")
    demo._replace(nb, "losses", "return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()",
                  "return dcgan.discriminator_loss(real_logits, fake_logits)")
    dest = course.runtime_dir / "submitted" / "copycat" / demo.ASSIGNMENT
    shutil.copytree(release, dest, ignore=shutil.ignore_patterns(".*"))
    nbformat.write(nb, dest / demo.NOTEBOOK)
    (dest / "timestamp.txt").write_text("2027-01-12 10:00:00.000000 UTC")

    pipeline.autograde(course, demo.ASSIGNMENT)
    scores = {gid: s.score for gid, s in pipeline.cell_scores(course, demo.ASSIGNMENT)["copycat"].items()}
    assert scores["test_discriminator_loss"] == 0
    assert scores["test_blocks"] == demo.AUTOGRADED["test_blocks"]
    assert scores["test_networks"] == demo.AUTOGRADED["test_networks"]
    assert scores[demo.WRITTEN] is None
    graded = nbformat.read(course.runtime_dir / "autograded" / "copycat" / demo.ASSIGNMENT / demo.NOTEBOOK, as_version=4)
    losses = next(c for c in graded.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "losses")
    assert "dcgan.discriminator_loss(real_logits, fake_logits)" in losses.source    # what the student wrote
    assert losses.outputs[0].ename == "ReferenceImplementation"
    assert "gankit.models.dcgan.discriminator_loss" in losses.outputs[0].evalue

    page = course.runtime_dir / "feedback" / "copycat" / demo.ASSIGNMENT / demo.NOTEBOOK.replace(".ipynb", ".html")
    pipeline.feedback(course, demo.ASSIGNMENT)
    html = page.read_text()
    assert "ReferenceImplementation" in html and "gankit.models.dcgan.discriminator_loss" in html
    written = re.compile(r"Written response</a> \(([^)]*)\)")     # its line in the table of contents
    assert written.search(html).group(1) == "waiting for grading, out of 4.0"
    assert "so far; 4.0 points waiting for grading" in html
    assert "Score: 0.0 / 4.0 <a" not in html.split('name="written_saturation"')[1][:400]   # its score box
    pipeline.set_manual_grade(course, demo.ASSIGNMENT, "copycat", demo.WRITTEN, 3.0)
    pipeline.feedback(course, demo.ASSIGNMENT)
    html = page.read_text()
    assert written.search(html).group(1) == "Score: 3.0 / 4.0" and "waiting for grading" not in html
