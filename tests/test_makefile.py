"""No make target deletes runtime/ (the gradebook, submissions, students' work) unless asked by
name: in the main Makefile and in the student copy's (course/student/Makefile), every clean target
is read with `make -n`, and clean-runtime is run for real in a scratch folder."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from grading.course import REPO_ROOT

MAKEFILES = {"main": REPO_ROOT / "Makefile", "student": REPO_ROOT / "course" / "student" / "Makefile"}
# Test output is not work: `make clean` may remove it.
DISPOSABLE = ("runtime/test-output",)


def clean_targets(makefile: Path) -> list[str]:
    return sorted(set(re.findall(r"^(clean[a-z-]*):", makefile.read_text(), re.M)))


def dry_run(makefile: Path, target: str, *variables: str) -> str:
    result = subprocess.run(["make", "-n", "-f", str(makefile), target, *variables], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    return result.stdout


def runtime_removals(commands: str) -> list[str]:
    """Every command line of ``commands`` that would delete runtime/ or something in it."""
    bad = []
    for line in commands.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        for i, word in enumerate(words):
            if word != "rm":
                continue
            for arg in words[i + 1:]:
                if arg in (";", "&&", "||", "+") or arg.startswith(";"):
                    break
                path = arg.removeprefix("./").rstrip("/")
                if (path == "runtime" or path.startswith("runtime/")) and path not in DISPOSABLE:
                    bad.append(line)
        if "find" in words and "rm" in line and not re.search(r"-path \./runtime .*-prune", line):
            bad.append(line)   # a find that deletes must not descend into runtime/
    return bad


@pytest.mark.parametrize("which", sorted(MAKEFILES))
def test_no_clean_target_removes_runtime_without_the_variable(which):
    makefile = MAKEFILES[which]
    targets = clean_targets(makefile)
    assert "clean-venv" in targets
    for target in targets:
        commands = dry_run(makefile, target)
        assert commands.strip(), f"make -n {target} printed nothing"
        assert runtime_removals(commands) == [], f"{which} Makefile: make {target} deletes runtime/:\n{commands}"
    assert re.search(r"^rm -rf \.venv$", dry_run(makefile, "clean-venv"), re.M)


def test_the_check_sees_a_removal_of_runtime():
    assert runtime_removals("rm -rf runtime\n") and runtime_removals("rm -rf ./runtime/students")
    assert runtime_removals("find . -name x -exec rm -rf {} +")
    assert not runtime_removals("rm -rf .pytest_cache runtime/test-output")


def test_clean_runtime_needs_confirm_yes():
    makefile = MAKEFILES["main"]
    assert runtime_removals(dry_run(makefile, "clean-runtime", "CONFIRM=yes")), "with CONFIRM=yes it does delete"
    assert not runtime_removals(dry_run(makefile, "clean-runtime", "CONFIRM=no"))


def test_clean_runtime_refuses_for_real_and_deletes_with_confirm(tmp_path):
    shutil.copy(MAKEFILES["main"], tmp_path / "Makefile")
    work = tmp_path / "runtime" / "students" / "ada" / "week01.ipynb"
    work.parent.mkdir(parents=True)
    work.write_text("my work")
    (tmp_path / ".venv").mkdir()
    (tmp_path / "runtime" / "test-output").mkdir()

    def make(*args):
        return subprocess.run(["make", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    for target in ("clean", "clean-venv", "clean-all"):
        assert make(target).returncode == 0
        assert work.read_text() == "my work", f"make {target} touched runtime/students/"
    assert not (tmp_path / ".venv").exists() and not (tmp_path / "runtime" / "test-output").exists()
    refused = make("clean-runtime")
    assert refused.returncode != 0 and "CONFIRM=yes" in refused.stdout + refused.stderr
    assert work.read_text() == "my work"
    done = make("clean-runtime", "CONFIRM=yes")
    assert done.returncode == 0 and "removed runtime/" in done.stdout
    assert not (tmp_path / "runtime").exists()


def test_the_student_makefile_lists_every_target():
    makefile = MAKEFILES["student"]
    targets = set(re.findall(r"^([a-zA-Z][a-zA-Z_-]*):", makefile.read_text(), re.M))
    out = subprocess.run(["make", "-s", "-f", str(makefile), "help"], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    listed = set(re.findall(r"make (\S+)", out))
    assert targets == listed and {"setup", "lab", "doctor", "data", "update", "help", "clean-venv"} <= listed
