"""gankit/ is the library, grading/ the course application: the library never imports the
application, which plugs into the `gankit` command through entry points instead."""
from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from gankit import cli
from grading.course import REPO_ROOT

APPLICATION = "grading"


def imports_of_the_application(source: str) -> list[str]:
    """Every way ``source`` imports the application: import statements, and import_module or
    __import__ with a literal name (a lazy import inside a function counts too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == APPLICATION]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == APPLICATION:
                found.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            target = node.args[0].value
            if name in ("import_module", "__import__") and isinstance(target, str):
                if target.split(".")[0] == APPLICATION:
                    found.append(target)
    return found


def test_the_scan_finds_every_kind_of_import():
    source = ("import os\nimport grading\nimport grading.batch as b\nfrom grading.course import load_course\n"
              "def f():\n    from grading import sandbox\n    importlib.import_module('grading.doctor')\n"
              "from . import grading_like\nimport gradingtools\n")
    assert imports_of_the_application(source) == ["grading", "grading.batch", "grading.course", "grading",
                                                  "grading.doctor"]


def test_the_library_never_imports_the_application():
    offenders = {}
    for path in sorted((REPO_ROOT / "gankit").rglob("*.py")):
        found = imports_of_the_application(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(REPO_ROOT))] = found
    assert not offenders, f"gankit/ imports grading/ (register an entry point instead): {offenders}"


def _pyproject_entry_points() -> dict[str, dict[str, str]]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {group: dict(entries) for group, entries in project.get("entry-points", {}).items()
            if group.startswith("gankit.")}


def test_the_installed_entry_points_are_the_ones_pyproject_declares():
    declared = _pyproject_entry_points()
    assert declared["gankit.commands"] == {"grade": "grading.gankit_hooks:add_grade_command"}
    assert declared["gankit.doctor"] == {"grading": "grading.doctor:findings"}
    for group, entries in declared.items():
        installed = {e.name: e.value for e in importlib.metadata.entry_points(group=group)}
        assert installed == entries, f"the installed kit predates pyproject.toml's {group}: run `make setup`"
        for entry in importlib.metadata.entry_points(group=group):
            assert callable(entry.load())


def test_gankit_help_lists_grade():
    result = subprocess.run([sys.executable, "-m", "gankit", "--help"], capture_output=True, text=True,
                            timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "grade" in result.stdout.split("{", 1)[1].split("}", 1)[0].split(","), result.stdout
    assert "TA: grade every collected submission" in result.stdout


def test_grade_takes_the_options_readme_documents():
    from grading.batch import run_command

    argv = ["grade", "week01_gan_foundations", "--workers", "3", "--gpus", "0,1", "--scheduler", "tcp://h:8786",
            "--student", "s01", "--force", "--no-sandbox"]
    args = cli.build_parser(argv).parse_args(argv)
    assert args.func is run_command
    assert (args.assignment, args.workers, args.gpus, args.scheduler, args.student) == \
        ("week01_gan_foundations", 3, "0,1", "tcp://h:8786", "s01")
    assert args.force and not args.sandbox and args.progress


def test_other_commands_do_not_load_the_grader():
    code = ("import sys, gankit.cli\n"
            "for argv in (['runs'], ['doctor'], ['--help']):\n"
            "    gankit.cli.build_parser(argv)\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('nbgrader', 'torch', 'jupyter_client')\n"
            "               or m in ('grading.batch', 'grading.course'))\n"
            "assert not heavy, heavy\n"
            "assert 'grading.gankit_hooks' in sys.modules, '--help lists grade through its hook'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _broken_entry():
    def load():
        raise ImportError("No module named 'nbgrader'")
    return SimpleNamespace(name="grade", value="grading.gankit_hooks:add_grade_command", load=load)


def test_a_broken_command_plugin_fails_in_one_line_only_when_it_is_run(monkeypatch, capsys):
    monkeypatch.setattr(cli, "registered_commands", lambda: [_broken_entry()])
    assert cli.build_parser(["runs"]).parse_args(["runs"]).command == "runs", "other commands still work"
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0 and "grade" not in capsys.readouterr().out.split("{", 1)[1].split("}", 1)[0]
    with pytest.raises(SystemExit) as info:
        cli.main(["grade", "week01_gan_foundations"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gankit grade:" in err and "No module named 'nbgrader'" in err
    assert "make setup" in err


def test_a_course_command_is_found_without_the_course_on_sys_path(tmp_path):
    """The hook is found through the installed metadata, not because the repository is the
    working directory: run from elsewhere, `gankit grade --help` still answers."""
    gankit = Path(sys.executable).parent / "gankit"
    result = subprocess.run([str(gankit), "grade", "--help"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--no-sandbox" in result.stdout and "--scheduler" in result.stdout
