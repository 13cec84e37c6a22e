"""The student's Validate names the first cell that raised, not only the test cells that failed after
it (grading/validate_hooks.py, set up by grading/nbgrader_setup.configure_student)."""
from __future__ import annotations

import shutil

import nbformat
import pytest
from traitlets.config import Config

from grading import demo, pipeline
from grading.nbgrader_setup import configure_student


@pytest.mark.slow
def test_validate_offline_names_the_data_error_and_its_cell_and_warns_of_a_reference_answer(
        course_runtime, tmp_path, monkeypatch):
    from nbgrader.validator import Validator

    course = course_runtime
    release = pipeline.generate(course, demo.ASSIGNMENT)
    home = tmp_path / "student"
    shutil.copytree(release, home, ignore=shutil.ignore_patterns(".*"))
    path = home / demo.NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    demo.full(nb, demo.solutions(course))         # correct answers; the parameters as released (SMOKE = False)
    # ... except that one answer hands over to the kit's reference: Validate warns before submission
    demo._replace(nb, "dcgan", "def generator_block(in_channels, out_channels):",
                  "from gankit.models import dcgan as kit\n\n\ndef generator_block(in_channels, out_channels):\n"
                  "    return kit.generator_block(in_channels, out_channels)\n\n\ndef unused(in_channels, out_channels):")
    nbformat.write(nb, path)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    monkeypatch.setenv("GANKIT_DATA", str(empty))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):   # no network: refused at once
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")

    c = Config()
    configure_student(c, course)
    results = Validator(config=c).validate(str(path))

    failed = [entry["raw_error"] for entry in results.get("failed", [])]
    assert len(failed) == 2, results
    warning, first = failed
    assert warning.index("ReferenceImplementation") < 80 and "gankit.models.dcgan.generator_block" in warning
    assert "score it 0" in warning
    train = next(i for i, cell in enumerate(nb.cells) if cell.metadata.get("nbgrader", {}).get("grade_id") == "train")
    assert "FirstError" in first and "DataError" in first, first
    assert f"cell {train + 1}" in first and 'prepare("mnist", DATA_DIR' in first
    assert first.index("DataError") < first.index("NameError"), "the cause comes before its consequence"
    assert "SMOKE = True" in first
