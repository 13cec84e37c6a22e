"""Shared fixtures. Tests never touch the network or the repository's own course runtime (they
grade in temporary folders); the browser test only leaves its screenshots in runtime/test-output/."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Kernels started by nbgrader/papermill, and nbgrader's own `alembic` call, must come from the
# interpreter running the tests (the project's .venv), whatever PATH the caller had.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def course_runtime(tmp_path, monkeypatch):
    """A fresh course runtime folder (gradebook, exchange, release, ...) for one test."""
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(runtime))
    from grading.course import load_course
    return load_course()
