"""The student copy (grading/student_copy.py): what students clone holds the paper notebooks, gankit
and what a student's server imports, and no solution, hidden test or answer key, in its files or
its git history; regenerating it adds one commit; `make update` in a student's clone keeps every
file the student changed.

A source repository is made per test module from this checkout's files (a git repository with
assignments/ in it, as the real one), so a test can change it without touching this checkout.
No venv is built in the copy: its Python code runs with this checkout's interpreter.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grading import student_copy
from grading.course import REPO_ROOT
from grading.student_copy import (MARKER, STUDENT_PATHS, TEMPLATES, StudentCopyError, build_student_copy,
                                  scan_for_secrets)

# The copy's own modules must be the ones imported: this checkout's editable install would
# otherwise find a module the copy lacks (setuptools' finder maps grading.* to this checkout).
ISOLATE = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
           "getattr(f, '__module__', '')]; ")
STUDENT_MODULES = ("grading", "grading.course", "grading.nbgrader_setup", "grading.lab", "grading.doctor",
                   "grading.student_update", "grading.syllabus", "grading.exchange_doctor",
                   "grading.exchange_http", "grading.validate_hooks", "grading.reference_check")
INSTRUCTOR_ONLY = ("checks.py", "demo.py", "pipeline.py", "batch.py", "sandbox.py", "student_copy.py", "__main__.py",
                   "intake.py", "preprocessors.py", "gradebook.py")


def git(cwd: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                            capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"git {args}: {result.stderr}")
    return result.stdout


def make_source(where: Path) -> Path:
    """A git repository with what the student copy reads, plus assignments/ (solutions) and the
    instructor's grading modules, committed."""
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                             "--", *STUDENT_PATHS, *TEMPLATES.values(), "pyproject.toml", "assignments", "grading"],
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (REPO_ROOT / rel).is_file():
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, where / rel)
    git(where, "init", "-q", "-b", "main")
    git(where, "add", "-A")
    git(where, "commit", "-q", "-m", "source")
    return where


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def built(source, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("copies") / "gan-course-student"
    assert build_student_copy(dest, source, say=lambda *a: None)
    return dest


def run_in_copy(dest: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(dest), "GANKIT_COURSE_RUNTIME": str(dest / "runtime")}
    env.pop("GANKIT_COURSE_FILE", None)
    return subprocess.run([sys.executable, "-c", ISOLATE + code, *args], cwd=dest, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_copy_has_the_notebooks_and_gankit_and_no_solutions(built, source):
    notebooks = sorted(p.name for p in (source / "notebooks").glob("*.ipynb"))
    assert notebooks and sorted(p.name for p in (built / "notebooks").glob("*.ipynb")) == notebooks
    for name in notebooks:
        assert (built / "notebooks" / name).read_bytes() == (source / "notebooks" / name).read_bytes()
    assert (built / "gankit" / "models" / "dcgan.py").is_file() and (built / "gankit" / "checks.py").is_file()
    assert (built / "course" / "server" / "student" / "nbgrader_config.py").is_file()
    assert not (built / "course" / "server" / "instructor").exists()
    assert not (built / "assignments").exists()
    assert (source / "assignments").is_dir(), "the source had the solutions the copy must leave out"
    grading = {p.name for p in (built / "grading").iterdir()}
    assert not grading & set(INSTRUCTOR_ONLY), f"instructor-only modules in the copy: {grading & set(INSTRUCTOR_ONLY)}"
    assert {"lab.py", "course.py", "student_update.py"} <= grading
    assert scan_for_secrets(built) == []
    assert git(built, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(built, "status", "--porcelain") == ""
    assert (built / MARKER).read_text().startswith(student_copy.MARKER_HEAD)


def test_the_generated_files_are_the_students(built):
    readme = (built / "README.md").read_text()
    for needed in ("make setup", "make lab", "ssh -L 8888:127.0.0.1:8888", "tmux", "systemctl --user",
                   "make update", "runtime/students/", "my-notebooks", "clean-venv"):
        assert needed in readme, needed
    assert "{{" not in readme and "gan-course" in readme
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    mine = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    theirs = tomllib.loads((built / "pyproject.toml").read_text())
    assert "gankit.commands" not in theirs["project"]["entry-points"], "no `gankit grade`: grading/batch.py is not there"
    assert theirs["project"]["entry-points"]["gankit.doctor"] == mine["project"]["entry-points"]["gankit.doctor"]
    assert theirs["project"]["dependencies"] == mine["project"]["dependencies"]
    assert git(built, "check-ignore", "runtime/students/ada/x.ipynb", ".venv/bin/python").split() == \
        ["runtime/students/ada/x.ipynb", ".venv/bin/python"]
    help_text = subprocess.run(["make", "-s", "help"], cwd=built, capture_output=True, text=True, check=True).stdout
    for target in ("setup", "lab", "doctor", "data", "update", "help", "clean-venv"):
        assert f"make {target} " in help_text, target


def test_the_copys_grading_modules_import_from_the_copy(built):
    code = ("import importlib, pathlib, sys\n"
            f"for name in {STUDENT_MODULES!r}:\n"
            "    module = importlib.import_module(name)\n"
            "    assert pathlib.Path(module.__file__).is_relative_to(pathlib.Path.cwd()), (name, module.__file__)\n"
            "from grading.lab import lab_command\n"
            "from grading.course import load_course\n"
            "argv, env, root = lab_command(load_course(), 'student', student_id='ada')\n"
            "print(env['JUPYTER_CONFIG_PATH'].split(':')[0], root)\n"
            "from grading.doctor import gather\n"
            "facts = gather()\n"
            "print(facts.course_problem, facts.process_limit, facts.bubblewrap)\n")
    result = run_in_copy(built, code)
    assert result.returncode == 0, result.stderr
    config, root, *doctor = result.stdout.split()
    assert config == str(built / "course" / "server" / "student")
    assert root == str(built), "the student's lab shows the whole copy: paper notebooks, runs, syllabus"
    assert doctor == ["None", "None", "None"], "course.yml loads; no grader checks where there is no grader"
    # a module the copy lacks is not found elsewhere: the check above can fail
    missing = run_in_copy(built, "import grading.batch")
    assert missing.returncode != 0 and "No module named 'grading.batch'" in missing.stderr
    for module in ("grading.lab", "grading.student_update"):
        helped = run_in_copy(built, f"import runpy; runpy.run_module('{module}', run_name='__main__')", "--help")
        assert helped.returncode == 0 and "usage:" in helped.stdout, helped.stderr


def test_the_real_checkout_makes_a_clean_copy(tmp_path):
    """This checkout itself, as `make student-copy` runs it (only what git tracks here)."""
    dest = tmp_path / "student"
    build_student_copy(dest, say=lambda *a: None)
    assert scan_for_secrets(dest) == [] and (dest / "notebooks").is_dir() and not (dest / "assignments").exists()


def test_the_scan_finds_a_planted_solution_in_a_file_and_in_old_history(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy, symlinks=True)
    planted = copy / "gankit" / "extra.py"
    planted.write_text("def loss():\n    ### BEGIN SOLUTION\n    return 0\n    ### END SOLUTION\n")
    found = scan_for_secrets(copy)
    assert any(f.startswith("gankit/extra.py: line 2") and "BEGIN SOLUTION" in f for f in found), found
    git(copy, "add", "gankit/extra.py")
    git(copy, "commit", "-q", "-m", "oops")
    planted.unlink()
    git(copy, "commit", "-q", "-am", "removed again")
    found = scan_for_secrets(copy)
    assert found and all(f.startswith("git blob") for f in found), "the file is gone, its blob is still in history"
    assert any("BEGIN SOLUTION" in f for f in found)


def test_the_scan_finds_answer_keys_sources_and_solution_cells(tmp_path):
    (tmp_path / "grading" / "keys" / "week01").mkdir(parents=True)
    (tmp_path / "grading" / "keys" / "week01" / "gan.json").write_text("{}")
    (tmp_path / "key.json").write_text(json.dumps({"cells": {"t": {"hidden_sha256": "ab", "checks": []}}}))
    (tmp_path / "assignments").mkdir()
    (tmp_path / "assignments" / "x.txt").write_text("x")
    nb = {"cells": [{"cell_type": "code", "source": "def f():\n    return 42\n", "outputs": [],
                     "metadata": {"nbgrader": {"solution": True, "grade_id": "f", "grade": False}}},
                    {"cell_type": "code", "source": "def g():\n    # YOUR CODE HERE\n    raise NotImplementedError()",
                     "outputs": [], "metadata": {"nbgrader": {"solution": True, "grade_id": "g", "grade": False}}}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "week.ipynb").write_text(json.dumps(nb, indent=1))
    found = "\n".join(scan_for_secrets(tmp_path))
    assert "grading/keys/week01/gan.json: answer-key folder" in found
    assert "key.json: looks like an answer key" in found
    assert "assignments/x.txt: nbgrader source folder" in found
    assert "week.ipynb: cell 0 (f) is an nbgrader solution cell" in found
    assert "cell 1" not in found, "a student version's stub is no solution"


def add_erratum(notebook: Path) -> None:
    """The instructor's change between two weeks: one markdown cell more in a paper notebook."""
    nb = json.loads(notebook.read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "Erratum for week 1."})
    notebook.write_text(json.dumps(nb, indent=1))


def test_regenerating_adds_one_commit_with_the_change(source, tmp_path):
    dest = tmp_path / "student"
    first = build_student_copy(dest, source, say=lambda *a: None)
    (dest / "my-test-venv").mkdir()
    (dest / "my-test-venv" / "note.txt").write_text("untracked, not ours")
    notebook = source / "notebooks" / "week01_gan_foundations.ipynb"
    original = notebook.read_text()
    try:
        add_erratum(notebook)
        (source / "notebooks" / "scratch_answers.ipynb").write_text("### BEGIN SOLUTION untracked scratch")
        gone = source / "gankit" / "plotting.py"
        gone.rename(source / "plotting.py.away")
        git(source, "commit", "-q", "-am", "week 1 erratum, plotting moved")
        second = build_student_copy(dest, source, say=lambda *a: None)
        assert second and second != first
        assert git(dest, "rev-list", "--count", "HEAD").strip() == "2"
        assert "Erratum for week 1." in (dest / "notebooks" / "week01_gan_foundations.ipynb").read_text()
        assert not (dest / "gankit" / "plotting.py").exists(), "a file removed at the source leaves the copy"
        assert not (dest / "notebooks" / "scratch_answers.ipynb").exists(), "only what git tracks is copied"
        assert (dest / "my-test-venv" / "note.txt").is_file() and "my-test-venv" not in git(dest, "ls-files")
        assert scan_for_secrets(dest) == []
        assert build_student_copy(dest, source, say=lambda *a: None) is None, "unchanged: no empty commit"
        assert git(dest, "rev-list", "--count", "HEAD").strip() == "2"
    finally:
        (source / "notebooks" / "scratch_answers.ipynb").unlink(missing_ok=True)
        (source / "plotting.py.away").rename(source / "gankit" / "plotting.py")
        notebook.write_text(original)
        git(source, "add", "-A")
        git(source, "commit", "-q", "-m", "back")


def test_a_solution_at_the_source_writes_nothing(source, tmp_path):
    dest = tmp_path / "student"
    build_student_copy(dest, source, say=lambda *a: None)
    objects = git(dest, "count-objects", "-v")
    leak = source / "gankit" / "leak.py"
    try:
        leak.write_text("# answer\n### BEGIN HIDDEN TESTS\nassert x == 42\n")
        git(source, "add", "gankit/leak.py")
        with pytest.raises(StudentCopyError, match=r"gankit/leak.py: line 2 holds 'HIDDEN TESTS'"):
            build_student_copy(dest, source, say=lambda *a: None)
    finally:
        git(source, "rm", "-q", "--cached", "gankit/leak.py")
        leak.unlink()
    assert not (dest / "gankit" / "leak.py").exists() and git(dest, "count-objects", "-v") == objects
    assert git(dest, "rev-list", "--count", "HEAD").strip() == "1"


def test_refused_destinations(source, tmp_path):
    with pytest.raises(StudentCopyError, match="inside this repository"):
        build_student_copy(source / "student", source, say=lambda *a: None)
    someone = tmp_path / "someones"
    someone.mkdir()
    (someone / "thesis.tex").write_text("mine")
    with pytest.raises(StudentCopyError, match="non-empty folder that `make student-copy` did not make"):
        build_student_copy(someone, source, say=lambda *a: None)
    assert [p.name for p in someone.iterdir()] == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StudentCopyError, match="is a file"):
        build_student_copy(tmp_path / "file", source, say=lambda *a: None)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_student_copy(empty, source, say=lambda *a: None), "an empty folder is fine"


def test_the_command_refuses_in_one_line(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    result = subprocess.run([sys.executable, "-m", "grading", "student_copy", str(tmp_path)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "did not make" in result.stderr


def test_make_update_keeps_the_students_notebook_and_brings_the_new_one(source, tmp_path):
    dest = tmp_path / "student-copy"
    build_student_copy(dest, source, say=lambda *a: None)
    upstream = tmp_path / "upstream.git"
    git(tmp_path, "clone", "-q", "--bare", str(dest), str(upstream))
    git(dest, "remote", "add", "origin", str(upstream))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    # the student runs and saves week 1 in place, edits gankit, and has a file where week 2 will be
    mine = clone / "notebooks" / "week01_gan_foundations.ipynb"
    theirs = json.loads(mine.read_text())
    theirs["cells"][0]["source"] = "my answers and outputs"
    mine.write_text(json.dumps(theirs))
    (clone / "gankit" / "seeding.py").write_text("# my experiment\n")
    (clone / "notebooks" / "week02_wasserstein.ipynb").write_text("my own draft")
    work = clone / "runtime" / "students" / "ada" / "week01_gan_foundations" / "gan_foundations.ipynb"
    work.parent.mkdir(parents=True)
    work.write_text("fetched and worked on")
    # the instructor regenerates with a change to week 1 and a new week 2, and pushes
    notebook = source / "notebooks" / "week01_gan_foundations.ipynb"
    original = notebook.read_text()
    try:
        add_erratum(notebook)
        (source / "notebooks" / "week02_wasserstein.ipynb").write_text(original)
        git(source, "add", "-A")
        git(source, "commit", "-q", "-m", "week 2")
        build_student_copy(dest, source, say=lambda *a: None)
    finally:
        notebook.write_text(original)
        (source / "notebooks" / "week02_wasserstein.ipynb").unlink()
        git(source, "add", "-A")
        git(source, "commit", "-q", "-m", "back")
    git(dest, "push", "-q", "origin", "main")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANKIT_", "MAKE"))}
    result = subprocess.run(["make", "update", f"PYTHON={sys.executable}", "STUDENT=ada"], cwd=clone, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    kept = clone / "runtime" / "students" / "ada" / "my-notebooks"
    copies = {p.relative_to(kept).as_posix(): p for p in kept.rglob("*") if p.is_file()}
    assert len(copies) == 3, copies
    week1 = next(p for name, p in copies.items() if name.startswith("week01_gan_foundations-"))
    assert json.loads(week1.read_text())["cells"][0]["source"] == "my answers and outputs"
    assert next(p for name, p in copies.items() if name.startswith("week02_wasserstein-")).read_text() == "my own draft"
    assert next(p for name, p in copies.items() if name.startswith("gankit/seeding-")).read_text() == "# my experiment\n"
    assert "Erratum for week 1." in mine.read_text(), "the new upstream version is in place"
    assert (clone / "notebooks" / "week02_wasserstein.ipynb").read_text() == original
    assert work.read_text() == "fetched and worked on", "the student's folder is never touched"
    assert f"kept your notebooks/week01_gan_foundations.ipynb as {week1}" in result.stdout
    assert git(clone, "rev-parse", "HEAD") == git(dest, "rev-parse", "HEAD")
    assert git(clone, "status", "--porcelain") == ""


def test_update_keeps_the_students_commits_and_changes_nothing_when_offline(source, tmp_path):
    from grading.student_update import UpdateError, update

    dest = tmp_path / "student-copy"
    build_student_copy(dest, source, say=lambda *a: None)
    upstream = tmp_path / "upstream.git"
    git(tmp_path, "clone", "-q", "--bare", str(dest), str(upstream))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    readme = clone / "README.md"
    readme.write_text("my notes\n")
    git(clone, "commit", "-q", "-am", "my notes")
    (clone / "notes.txt").write_text("untracked, in nobody's way")
    (clone / "course" / "SYLLABUS.md").write_text("staged edit")
    git(clone, "add", "course/SYLLABUS.md")
    (clone / "course" / "SYLLABUS.md").write_text("then edited again")
    runtime = tmp_path / "elsewhere"
    os.environ["GANKIT_COURSE_RUNTIME"] = str(runtime)
    try:
        said = []
        moved = upstream.rename(tmp_path / "gone.git")
        with pytest.raises(UpdateError, match="cannot reach the course repository"):
            update(clone, "ada", say=said.append)
        assert (clone / "course" / "SYLLABUS.md").read_text() == "then edited again" and not runtime.exists()
        moved.rename(upstream)
        kept = dict(update(clone, "ada", say=said.append))
    finally:
        del os.environ["GANKIT_COURSE_RUNTIME"]
    assert kept["course/SYLLABUS.md"].read_text() == "then edited again"
    assert kept["course/SYLLABUS.md (staged)"].read_text() == "staged edit"
    assert kept["course/SYLLABUS.md"].is_relative_to(runtime / "students" / "ada" / "my-notebooks" / "course")
    assert (clone / "notes.txt").read_text() == "untracked, in nobody's way"
    branch = next(line.split("on the branch ")[1].split()[0] for line in said if "your own commits" in line)
    assert git(clone, "show", f"{branch}:README.md") == "my notes\n"
    assert git(clone, "rev-parse", "HEAD") == git(dest, "rev-parse", "HEAD")
    assert readme.read_text() == (dest / "README.md").read_text()
