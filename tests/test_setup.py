"""The set-up files agree with each other: pyproject, environment.yml, constraints, Makefile, CI."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib import metadata

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import yaml
from packaging.requirements import Requirement

from grading.course import REPO_ROOT


def _pyproject():
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    project = _pyproject()["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in reqs}


def _inactive() -> set[str]:
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    return {r.name.lower() for r in reqs if r.marker is not None and not r.marker.evaluate()}


def test_environment_yml_declares_the_same_set_as_pyproject():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in pip_section}
    assert conda == _declared()
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert _pyproject()["project"]["requires-python"] in python.replace("python", "")


def test_constraints_pin_every_declared_dependency_within_its_range():
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    for name, spec in _declared().items():
        if name in _inactive():
            continue
        assert name in pins, f"{name} is declared but has no tested version in constraints.txt"
        assert Requirement(f"{name}{spec}").specifier.contains(pins[name]), f"{name}=={pins[name]} outside {spec}"
    assert not any(n.startswith("nvidia-") for n in pins), "CUDA runtime pins would block a CUDA-12 torch"
    assert "+cpu" not in pins["torch"], "the CPU-only torch wheel breaks torchvision"


def test_make_help_lists_every_target_with_one_line():
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z][a-zA-Z_-]*):", makefile, re.M)) - {"help"}
    phony = set(re.search(r"^\.PHONY:(.*?)(?<!\\)$", makefile, re.M | re.S).group(1).replace("\\", " ").split())
    out = subprocess.run(["make", "-s", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"make (\S+)", out))
    assert targets <= listed | {"help"}, f"targets without a '## ' line: {targets - listed}"
    assert {"demo", "test", "setup"} <= listed and phony <= listed | {"help"}
    assert subprocess.run(["make", "-s"], cwd=REPO_ROOT, capture_output=True, text=True).stdout == out, \
        "help is the default target"


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert re.search(r"^make test$", ci, re.M)
    assert "make demo" in readme and "make test" in readme
    assert readme.index("make demo") < readme.index("## "), "the two commands come first"


def test_setup_uses_the_constraints_and_the_standard_torch_build():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "-c $(CONSTRAINTS)" in makefile and "TORCH_INDEX" in makefile
    assert "cpu" not in re.sub(r"#.*", "", makefile).lower().replace("cpus", "")


def test_runtime_folder_is_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "runtime/gradebook.db", ".venv/bin/python"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["runtime/gradebook.db", ".venv/bin/python"]


def _imports(folder: str) -> dict[str, str]:
    """{top-level module: the first file importing it} for every absolute import under FOLDER."""
    found = {}
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], str(path.relative_to(REPO_ROOT)))
    return found


def test_every_imported_package_is_declared():
    """What the code imports comes from a distribution pyproject.toml names, not from a transitive one."""
    project = _pyproject()["project"]
    runtime = {_normalized(Requirement(r).name) for r in project["dependencies"]}
    dev = runtime | {_normalized(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    distributions = metadata.packages_distributions()
    checked = 0
    for folder, declared in (("gankit", runtime), ("grading", runtime), ("tests", dev), ("benchmarks", dev)):
        local = {"gankit", "grading"} | {p.stem for p in (REPO_ROOT / folder).glob("*.py")}
        for module, where in _imports(folder).items():
            if module in sys.stdlib_module_names or module in local:
                continue
            # a module not installed here (tomli on Python >= 3.11) must be declared by its own name
            providers = {_normalized(d) for d in distributions.get(module, [module])}
            where_to = "dependencies" if declared is runtime else "dependencies or the dev extra"
            assert providers & declared, \
                f"{where} imports {module} (from {', '.join(sorted(providers))}): declare it in pyproject.toml's {where_to}"
            checked += 1
    assert checked > 20


def test_the_license_is_an_spdx_expression():
    pyproject = _pyproject()
    assert pyproject["project"]["license"] == "BSD-3-Clause", "a table is deprecated by setuptools"
    assert "setuptools>=77" in pyproject["build-system"]["requires"], "77 is the first to read SPDX licenses"


def test_make_test_lints_first():
    out = subprocess.run(["make", "-n", "test"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert "ruff check" in out and out.index("ruff check") < out.index("-m pytest")
    assert out.index(".ci/system-packages") < out.index("ruff check"), "setup installs what the tests need first"


def _fake_machine(tmp_path, installed: set[str]) -> dict[str, str]:
    """PATH for .ci/system-packages on a Debian machine where only INSTALLED are installed, not root."""
    fake = tmp_path / "bin"
    fake.mkdir(parents=True)
    status = " ".join(sorted(installed))
    (fake / "dpkg-query").write_text(f'#!/bin/sh\nfor arg; do package=$arg; done\n'   # the last argument
                                     f'for p in {status}; do [ "$p" = "$package" ] && '
                                     f'printf "install ok installed" && exit 0; done\nexit 1\n')
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "apt-get").write_text("#!/bin/sh\necho 'apt-get must not run here' >&2\nexit 99\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{fake}:/usr/bin:/bin"
    return env


def test_system_packages_names_what_is_missing_and_fails_only_under_ci(tmp_path):
    script = str(REPO_ROOT / ".ci" / "system-packages")
    env = _fake_machine(tmp_path, {"bubblewrap", "chromium-driver", "postgresql"})
    missing = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 0, missing.stderr
    assert "missing chromium;" in missing.stdout
    assert "sudo apt-get install --no-install-recommends chromium\n" in missing.stdout
    under_ci = subprocess.run([script], env={**env, "CI": "true"}, capture_output=True, text=True, timeout=60)
    assert under_ci.returncode == 1 and "CI is set" in under_ci.stdout
    everything = _fake_machine(tmp_path / "all", {"bubblewrap", "chromium", "chromium-driver", "postgresql"})
    quiet = subprocess.run([script], env={**everything, "CI": "true"}, capture_output=True, text=True, timeout=60)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_a_test_whose_program_is_missing_skips_with_one_line_and_fails_under_ci(tmp_path):
    """No bwrap on PATH: the sandbox test skips and the session names what it did not test."""
    test = "tests/test_sandbox.py::test_limits_stop_memory_and_file_bombs"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)    # conftest adds the venv's bin; bwrap is not there
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", test]
    skipped = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout[-3000:]
    summary = [line for line in skipped.stdout.splitlines() if "NOT TESTED" in line]
    assert summary == ["NOT TESTED here: sandboxed grading (1 test, bubblewrap). Install with: sudo apt-get install "
                       "--no-install-recommends bubblewrap (or `make system-packages` as root)"], skipped.stdout[-3000:]
    failed = subprocess.run(command, cwd=REPO_ROOT, env={**env, "CI": "true"}, capture_output=True, text=True,
                            timeout=300)
    assert failed.returncode == 1 and "1 error" in failed.stdout, failed.stdout[-3000:]
    assert "bubblewrap (bwrap) is not installed" in failed.stdout and "CI is set" in failed.stdout
    assert "NOT TESTED" not in failed.stdout
