"""`make lab`'s two roles, without starting a server (tests/test_browser.py starts them for real)."""
from __future__ import annotations

import json
import os

import pytest
from traitlets.config import Config, PyFileConfigLoader

from grading.course import CourseError
from grading.lab import SERVER_CONFIG, lab_command

NBGRADER_SERVER = "nbgrader.server_extensions."
INSTRUCTOR_ONLY = {"formgrader", "create-assignment", "course-list"}


def _load(role: str, name: str) -> Config:
    """Read course/server/ROLE/NAME as Jupyter and nbgrader do (course_runtime set the runtime)."""
    return PyFileConfigLoader(name, path=str(SERVER_CONFIG / role)).load_config()


def test_a_student_gets_fetch_submit_validate_and_no_instructor_tools(course_runtime, monkeypatch):
    server = _load("student", "jupyter_server_config.py")
    enabled = {k[len(NBGRADER_SERVER):]: v for k, v in server.ServerApp.jpserver_extensions.items()}
    assert enabled == {"assignment_list": True, "validate_assignment": True, "formgrader": False,
                       "course_list": False}
    page = json.loads((SERVER_CONFIG / "student" / "labconfig" / "page_config.json").read_text())
    off = {k.split(":")[1] for k, v in page["disabledExtensions"].items() if v and k.startswith("@jupyter/nbgrader:")}
    assert off == INSTRUCTOR_ONLY

    monkeypatch.setenv("GANKIT_STUDENT_ID", "ada")   # what lab_command passes on
    c = _load("student", "nbgrader_config.py")
    assert c.Exchange.root == str(course_runtime.exchange_dir)
    assert c.CourseDirectory.course_id == course_runtime.course_id
    assert c.CourseDirectory.student_id == "ada"
    assert c.Execute.timeout == course_runtime.grading.cell_timeout_s
    assert "root" not in c.CourseDirectory and "db_url" not in c.CourseDirectory, "no gradebook for students"


def test_the_instructor_gets_everything_on_the_course_root(course_runtime):
    server = _load("instructor", "jupyter_server_config.py")
    assert all(server.ServerApp.jpserver_extensions.values())
    page = json.loads((SERVER_CONFIG / "instructor" / "labconfig" / "page_config.json").read_text())
    assert not any(v for k, v in page["disabledExtensions"].items() if k.startswith("@jupyter/nbgrader:"))
    c = _load("instructor", "nbgrader_config.py")
    assert c.CourseDirectory.root == str(course_runtime.runtime_dir)
    assert c.CourseDirectory.db_url.endswith(str(course_runtime.runtime_dir / "gradebook.db"))
    argv, env, root = lab_command(course_runtime, "instructor", student_id="x")
    assert root == course_runtime.runtime_dir, "the formgrader needs the course root inside the notebook folder"


def test_lab_command_binds_loopback_and_uses_the_roles_config(course_runtime, monkeypatch):
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", "/elsewhere")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    argv, env, root = lab_command(course_runtime, "student", student_id="ada", port=9999, token="t")
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [str(SERVER_CONFIG / "student"), "/elsewhere"]
    assert env["GANKIT_STUDENT_ID"] == "ada" and env["GANKIT_COURSE_RUNTIME"] == str(course_runtime.runtime_dir)
    assert "MPLBACKEND" not in env, "Agg would hide the notebooks' plots"
    assert root == course_runtime.runtime_dir / "students" / "ada"
    assert "--ServerApp.ip=127.0.0.1" in argv and "--ServerApp.port=9999" in argv
    assert ("--allow-root" in argv) == (os.geteuid() == 0)
    with pytest.raises(CourseError, match="unknown role"):
        lab_command(course_runtime, "ta")


def test_the_default_student_id_is_nbgraders_own(course_runtime):
    from nbgrader.utils import get_username

    _, env, root = lab_command(course_runtime, "student")
    assert env["GANKIT_STUDENT_ID"] == get_username() and root.name == get_username()
