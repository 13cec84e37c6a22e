"""The whole week end to end: `make demo`'s class, every assignment's answer key, and nbgrader's
own example course graded exactly as plain nbgrader grades it."""
from __future__ import annotations

import html as htmllib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from grading import pipeline
from grading.course import REPO_ROOT, load_course

pytestmark = pytest.mark.slow
PEER = REPO_ROOT.parent / "shared" / "peer" / "nbgrader-example"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run `python -m grading demo` once (what `make demo` runs) in a temporary runtime."""
    runtime = tmp_path_factory.mktemp("demo") / "runtime"
    result = subprocess.run([sys.executable, "-m", "grading", "demo", "--runtime", str(runtime)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    os.environ["GANKIT_COURSE_RUNTIME"] = str(runtime)
    try:
        course = load_course()
    finally:
        del os.environ["GANKIT_COURSE_RUNTIME"]
    return result, course


@pytest.mark.needs_bwrap   # without it the demo leaves the hostile students out
def test_the_demo_class_gets_exactly_the_scores_it_deserves(demo):
    from grading.demo import ASSIGNMENT, AUTOGRADED, CLASS, HOSTILE, WRITTEN

    result, course = demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "no sandbox" not in result.stdout, "bubblewrap works here (needs_bwrap): the hostile students must be graded"
    CLASS = CLASS + HOSTILE   # noqa: N806 - the whole class the demo graded in the sandbox
    assert f"all {len(CLASS)} students got exactly the scores they deserve" in result.stdout
    # Checked again here, straight from the gradebook, not through the demo's own report.
    scores = pipeline.cell_scores(course, ASSIGNMENT)
    assert set(scores) == {s.student_id for s in CLASS}
    for student in CLASS:
        want = student.expected(course.late_policy.penalty_per_day)
        got = {gid: scores[student.student_id][gid].score for gid in AUTOGRADED}
        assert got == want["auto"], student.student_id
        assert (scores[student.student_id][WRITTEN].score or 0) == want["written"]
    rows = {r["student_id"]: float(r["score"]) for r in pipeline.read_grades_csv(
        course.runtime_dir / "reports" / "grades.csv")}
    assert rows == {s.student_id: s.expected(course.late_policy.penalty_per_day)["total"] for s in CLASS}


def test_grading_injected_the_parameters_after_the_locked_cell(demo):
    _, course = demo
    nb = nbformat.read(course.runtime_dir / "autograded" / "ada" / "week01_gan_foundations" /
                       "gan_foundations.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    at = next(i for i, t in enumerate(tags) if "parameters" in t)
    injected = nb.cells[at + 1]
    assert "injected-parameters" in injected.metadata.get("tags", [])
    assert 'DEVICE = "cpu"' in injected.source and "SMOKE = True" in injected.source
    # gankit grade gives each job its own data folder (built there, writable only by that kernel)
    data_dir = re.search(r'DATA_DIR = "(.+)"', injected.source).group(1)
    scratch_name = Path(data_dir).parent.name   # gankit-grade~PID@HOST~ada-XXXX: its owner, for the cleanup
    assert Path(data_dir).name == "data" and scratch_name.startswith("gankit-grade~") and "~ada-" in scratch_name


@pytest.mark.needs_bwrap
def test_feedback_tells_each_student_what_happened(demo):
    _, course = demo
    feedback = course.runtime_dir / "feedback"
    html = {s: (feedback / s / "week01_gan_foundations" / "gan_foundations.html").read_text()
            for s in ("seg", "loop", "noisy", "tam", "forge", "copy")}
    assert "KernelDied" in html["seg"]
    assert "CellTimeoutError" in html["loop"]
    assert "[stderr]" in html["noisy"]
    assert "was missing from the submission" in html["tam"]
    assert "ReferenceImplementation" in html["copy"] and "gankit.models.dcgan.discriminator_loss" in html["copy"]
    assert "HiddenCheckFailed" in html["forge"] and "hidden check 'extreme logits': failed" in html["forge"]
    # nbgrader's own feedback shows the hidden tests (jupyter/nbgrader#917); ours shows none of their lines
    source = nbformat.read(course.week_of("week01_gan_foundations").assignment_dir() / "gan_foundations.ipynb",
                           as_version=4)
    hidden, public = [], set()
    for cell in source.cells:
        for block in HIDDEN_BLOCK.findall(cell.source):
            hidden += [ln.strip() for ln in block.splitlines() if len(ln.strip()) > 12]
        public |= {ln.strip() for ln in HIDDEN_BLOCK.sub("", cell.source).splitlines()}
    hidden = [ln for ln in hidden if ln not in public]
    assert len(hidden) > 20
    for page in feedback.rglob("*.html"):
        text = htmllib.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert "BEGIN HIDDEN TESTS" not in text, page
        leaked = [ln for ln in hidden if ln in text]
        assert not leaked, f"{page} shows hidden test lines: {leaked[:3]}"
    released = course.exchange_dir / course.course_id / "feedback"
    from grading.demo import CLASS, HOSTILE
    assert len(list(released.rglob("*.html"))) == len(CLASS + HOSTILE), "feedback is released to every student"


BLOCK = re.compile(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END[^\n]*", re.S)
HIDDEN_BLOCK = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def _solution_lines(source_nb) -> list[str]:
    """Substantive lines found only between the solution / hidden-test markers of the source."""
    secret, public = [], set()
    for cell in source_nb.cells:
        for block in BLOCK.findall(cell.source):
            secret += [ln.strip() for ln in block.splitlines() if len(ln.strip()) > 12]
        public |= {ln.strip() for ln in BLOCK.sub("", cell.source).splitlines()}
    return [ln for ln in secret if ln not in public]


@pytest.mark.parametrize("week", load_course().available_assignments(), ids=lambda w: w.assignment)
def test_assignment_answer_key_scores_full_and_release_scores_zero(week, course_runtime):
    course = course_runtime
    release = pipeline.generate(course, week.assignment)
    notebooks = sorted(week.assignment_dir().glob("*.ipynb"))
    for source_path in notebooks:
        student_text = (release / source_path.name).read_text()
        assert "BEGIN SOLUTION" not in student_text and "BEGIN HIDDEN TESTS" not in student_text
        student_code = {ln.strip() for cell in nbformat.read(release / source_path.name, as_version=4).cells
                        if cell.cell_type == "code" for ln in cell.source.splitlines()}
        leaked = [ln for ln in _solution_lines(nbformat.read(source_path, as_version=4)) if ln in student_code]
        assert not leaked, f"solution or hidden-test lines in the student version: {leaked[:3]}"
    for student, folder in (("answer-key", week.assignment_dir()), ("untouched", release)):
        dest = course.runtime_dir / "submitted" / student / week.assignment
        shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".*"))
        (dest / "timestamp.txt").write_text("2027-01-12 10:00:00.000000 UTC")
    pipeline.autograde(course, week.assignment)
    scores = pipeline.cell_scores(course, week.assignment)
    autograded = [g for g in scores["answer-key"].values() if not g.needs_manual_grade]
    assert autograded, "the assignment has autograded parts"
    for grade in autograded:
        assert grade.score == grade.max_score, f"answer key loses points on {grade.grade_id}"
        assert scores["untouched"][grade.grade_id].score == 0, f"untouched release scores on {grade.grade_id}"


def _peer_course(root: Path, ours: bool) -> Path:
    shutil.copytree(PEER / "source", root / "source")
    shutil.copytree(PEER / "submitted", root / "submitted")
    lines = ["c = get_config()", f"c.CourseDirectory.root = {str(root)!r}",
             "c.CourseDirectory.course_id = 'example_course'",
             "c.IncludeHeaderFooter.header = 'source/header.ipynb'"]
    if ours:
        lines += ["import sys", f"sys.path.insert(0, {str(REPO_ROOT)!r})",
                  "from grading.course import load_course",
                  "from grading.nbgrader_setup import configure_autograde, grading_parameters",
                  "course = load_course()",
                  "configure_autograde(c, course.grading, grading_parameters(course))"]
    (root / "nbgrader_config.py").write_text("\n".join(lines) + "\n")
    return root


def _grade_peer(root: Path) -> dict:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    for args in (["generate_assignment", "ps1", "--force"], ["autograde", "ps1", "--force"]):
        done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {(s.student.id, nb.name, g.name): (g.auto_score, g.needs_manual_grade)
                for s in gb.find_assignment("ps1").submissions for nb in s.notebooks for g in nb.grades}


@pytest.mark.skipif(not PEER.is_dir(), reason="nbgrader's example course lives in ../shared/peer")
def test_nbgraders_own_example_is_graded_exactly_as_nbgrader_grades_it(tmp_path):
    plain = _grade_peer(_peer_course(tmp_path / "plain", ours=False))
    ours = _grade_peer(_peer_course(tmp_path / "ours", ours=True))
    assert len(plain) > 10 and {k[0] for k in plain} == {"bitdiddle", "hacker"}
    assert ours == plain
    assert any(score == 0 for score, _ in plain.values()) and any(score for score, _ in plain.values())
