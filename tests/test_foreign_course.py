"""`gankit grade ASSIGNMENT --course DIR`: any plain nbgrader course, graded as nbgrader grades it.

The reference is nbgrader's own example course (../shared/peer/nbgrader-example beside the
repository; GANKIT_PEER_COURSE names another place): one copy is autograded by plain nbgrader, a
second by `gankit grade --course` in the sandbox, and every cell must score the same. A student's
changed data file is graded as the instructor's, and feedback of submissions that did not come
through the exchange is written for the instructor to return.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from grading import batch
from grading.course import REPO_ROOT, CourseError
from grading.nbgrader_setup import configure
from grading.target import foreign_target

PEER = Path(os.environ.get("GANKIT_PEER_COURSE") or REPO_ROOT.parent / "shared" / "peer" / "nbgrader-example")
needs_peer = pytest.mark.skipif(not PEER.is_dir(), reason=f"nbgrader's example course lives in {PEER}")
ALTERED = b"not the instructor's picture"


def _env() -> dict:
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}


def _peer_course(root: Path) -> Path:
    """A copy of the example course, its own nbgrader_config.py, its assignment generated, and
    hacker's data file changed (nbgrader restores it from source). Hacker's first notebook also
    writes a file beside the course, which it cannot do in the sandbox (no graded cell reads it)."""
    shutil.copytree(PEER / "source", root / "source")
    shutil.copytree(PEER / "submitted", root / "submitted")
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'example_course'\n"
        "c.IncludeHeaderFooter.header = 'source/header.ipynb'\n")
    (root / "submitted" / "hacker" / "ps1" / "jupyter.png").write_bytes(ALTERED)
    notebook = root / "submitted" / "hacker" / "ps1" / "problem1.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell(f"open({str(root.parent / 'escaped.txt')!r}, 'w').write('out')"))
    nbformat.write(nb, notebook)
    _nbgrader(root, "generate_assignment", "ps1", "--force")
    return root


def _nbgrader(root: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _cells(root: Path) -> dict:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "example_course") as gb:
        return {(s.student.id, nb.name, g.name): (g.auto_score, g.needs_manual_grade)
                for s in gb.find_assignment("ps1").submissions for nb in s.notebooks for g in nb.grades}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The example graded twice: by plain `nbgrader autograde`, and by `gankit grade --course`."""
    if not PEER.is_dir():
        pytest.skip(f"nbgrader's example course lives in {PEER}")
    plain = _peer_course(tmp_path_factory.mktemp("plain") / "course")
    _nbgrader(plain, "autograde", "ps1", "--force")
    ours = _peer_course(tmp_path_factory.mktemp("ours") / "course")
    done = subprocess.run([sys.executable, "-m", "gankit", "grade", "ps1", "--course", str(ours), "--gpus", "none",
                           "--workers", "2", "--no-progress"], cwd=REPO_ROOT, env=_env(), capture_output=True,
                          text=True, timeout=900)
    return plain, ours, done


@pytest.mark.slow
@pytest.mark.needs_bwrap   # gankit grade --course runs the kernels in the sandbox
@needs_peer
def test_nbgraders_example_graded_with_course_scores_every_cell_as_nbgrader(graded):
    plain, ours, done = graded
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no sandbox" not in done.stdout + done.stderr
    reference = _cells(plain)
    assert len(reference) > 10 and {key[0] for key in reference} == {"bitdiddle", "hacker"}
    assert any(score == 0 for score, _ in reference.values()) and any(score for score, _ in reference.values())
    assert _cells(ours) == reference
    assert (plain.parent / "escaped.txt").is_file(), "plain nbgrader runs student code with the grader's rights"
    assert not (ours.parent / "escaped.txt").exists(), "gankit grade --course runs it in the sandbox"
    # the batch's ledger lives in the course's own gradebook
    assert {row["status"] for row in batch.ledger(foreign_target(ours), "ps1").values()} == {"graded"}
    # a notebook without a parameters cell runs as submitted: nothing injected at the top
    nb = nbformat.read(ours / "autograded" / "bitdiddle" / "ps1" / "problem1.ipynb", as_version=4)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert "gankit-grade" not in "".join(c.source for c in nb.cells)


@pytest.mark.slow
@pytest.mark.needs_bwrap   # gankit grade --course runs the kernels in the sandbox
@needs_peer
def test_a_students_changed_data_file_is_graded_as_the_instructors(graded):
    plain, ours, _ = graded
    instructor = (PEER / "source" / "ps1" / "jupyter.png").read_bytes()
    assert (ours / "submitted" / "hacker" / "ps1" / "jupyter.png").read_bytes() == ALTERED, "the submission is kept"
    for course in (plain, ours):   # what nbgrader does, gankit does
        assert (course / "autograded" / "hacker" / "ps1" / "jupyter.png").read_bytes() == instructor


@pytest.mark.slow
@pytest.mark.needs_bwrap   # gankit grade --course runs the kernels in the sandbox
@needs_peer
def test_feedback_of_lms_submissions_is_written_for_the_instructor_to_return(graded):
    _, ours, _ = graded
    done = subprocess.run([sys.executable, "-m", "grading", "feedback", "ps1", "--course", str(ours)],
                          cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "came from an LMS" in done.stdout and "bitdiddle, hacker" in done.stdout
    for student in ("bitdiddle", "hacker"):
        for notebook in ("problem1", "problem2"):
            page = ours / "feedback" / student / "ps1" / f"{notebook}.html"
            assert page.is_file() and "Score" in page.read_text(), page


def test_a_source_link_to_elsewhere_is_refused_not_repointed(course_runtime, tmp_path):
    from traitlets.config import Config

    elsewhere = tmp_path / "other-checkout" / "assignments"
    elsewhere.mkdir(parents=True)
    course_runtime.runtime_dir.mkdir(parents=True)
    link = course_runtime.runtime_dir / "source"
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(CourseError, match="rm .*source"):
        configure(Config(), course_runtime)
    assert link.resolve() == elsewhere.resolve(), "the link was left as it was"
    link.unlink()
    configure(Config(), course_runtime)
    assert link.resolve() == (REPO_ROOT / "assignments").resolve()


def test_the_scratch_course_gets_the_data_files_but_no_notebook_and_no_link_out(tmp_path):
    source = tmp_path / "source" / "hw1"
    (source / "data").mkdir(parents=True)
    (source / "hw1.ipynb").write_text("{}")                     # hidden tests: stays out
    (source / "data" / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "secret.txt").write_text("the instructor's")
    (source / "outside.txt").symlink_to(tmp_path / "secret.txt")   # a link out of the source
    (source / "inside.txt").symlink_to(source / "data" / "table.csv")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    job = batch.Job("hw1", "ada", "", tmp_path, tmp_path / "gb.db", 60, source_dir=source,
                    config_file=tmp_path / "nbgrader_config.py", grading=batch.Grading())
    batch._prepare_scratch_course(job, scratch)
    copied = sorted(str(p.relative_to(scratch / "source" / "hw1")) for p in (scratch / "source").rglob("*")
                    if p.is_file())
    assert copied == ["data/table.csv", "inside.txt"]
    config = (scratch / "nbgrader_config.py").read_text()
    assert f"load_subconfig({str(tmp_path / 'nbgrader_config.py')!r})" in config and "configure_autograde" in config


def test_a_course_folder_without_its_own_configuration_is_refused_with_the_fix(tmp_path):
    with pytest.raises(CourseError, match="nbgrader_config.py"):
        foreign_target(tmp_path)
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.root = '/srv/elsewhere'\n")
    with pytest.raises(CourseError, match="--course /srv/elsewhere"):
        foreign_target(tmp_path)
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.course_id = 'cs101'\n")
    target = foreign_target(tmp_path)
    assert (target.course_id, target.gradebook_url) == ("cs101", f"sqlite:///{tmp_path.resolve() / 'gradebook.db'}")
    assert not target.ours


def test_our_feedback_is_released_to_exchange_submissions_and_lms_ones_are_named(course_runtime, monkeypatch):
    from grading import pipeline

    feedback = course_runtime.runtime_dir / "feedback"
    calls = []

    def fake_nbgrader(course, *args, **kwargs):
        calls.append(args)
        if args[0] == "generate_feedback":   # what nbgrader copies from autograded/: the exchange's secret
            for student, secret in (("ada", True), ("lms-bob", False)):
                folder = feedback / student / "week01_gan_foundations"
                folder.mkdir(parents=True)
                (folder / "gan_foundations.html").write_text("<html></html>")
                if secret:
                    (folder / "submission_secret.txt").write_text("s3cret")

    monkeypatch.setattr(pipeline, "nbgrader", fake_nbgrader)
    done = pipeline.feedback(course_runtime, "week01_gan_foundations")
    assert (done.released, done.to_return) == (("ada",), ("lms-bob",))
    assert calls[-1] == ("release_feedback", "week01_gan_foundations", "--CourseDirectory.student_id_exclude=lms-bob")
