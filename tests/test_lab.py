"""`make lab`'s two roles, without starting a server (tests/test_browser.py starts them for real)."""
from __future__ import annotations

import dataclasses
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


@pytest.fixture
def repo_runtime(monkeypatch):
    """A course runtime inside the repository (git-ignored runtime/test-output/), as a clone's is."""
    import shutil

    from grading.course import REPO_ROOT, load_course

    runtime = REPO_ROOT / "runtime" / "test-output" / f"lab-{os.getpid()}"
    shutil.rmtree(runtime, ignore_errors=True)
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(runtime))
    yield load_course()
    shutil.rmtree(runtime, ignore_errors=True)


def test_a_students_lab_shows_the_repository_and_opens_on_their_landing_page(repo_runtime, monkeypatch):
    from grading.course import REPO_ROOT
    from grading.lab import landing_page, prepare_root, student_dir

    course = repo_runtime
    argv, env, root = lab_command(course, "student", student_id="ada")
    own = student_dir(course, "ada")
    assert root == REPO_ROOT and (root / "notebooks" / "week01_gan_foundations.ipynb").is_file()
    page = landing_page(course, "ada")
    assert f"--LabApp.default_url=/lab/tree/{page.relative_to(REPO_ROOT).as_posix()}" in argv
    prepare_root(course, "student", root, "ada")
    assert page.is_file() and "week01_gan_foundations" in page.read_text()
    assert oct(course.exchange_dir.stat().st_mode & 0o7777) == oct(0o1777), "nbgrader's exchange wants 1777"
    monkeypatch.setenv("GANKIT_STUDENT_ID", "ada")
    c = _load("student", "nbgrader_config.py")
    assert c.Exchange.assignment_dir == str(own), "fetched assignments land in the student's folder, under the root"
    server = _load("student", "jupyter_server_config.py")
    overrides = json.loads((SERVER_CONFIG / "student" / "lab-settings" / "overrides.json").read_text())
    assert server.LabApp.app_settings_dir == str(SERVER_CONFIG / "student" / "lab-settings")
    assert overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["markdown"] == "Markdown Preview"


def _assignment_list(course, root, student, home, monkeypatch):
    """nbgrader's Assignment List server extension, as the student's server runs it (no server)."""
    from nbgrader.server_extensions.assignment_list.handlers import AssignmentList

    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(SERVER_CONFIG / "student"))
    monkeypatch.setenv("GANKIT_STUDENT_ID", student)
    monkeypatch.setenv("HOME", str(home))
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(root)   # grading/lab.py starts the server there
    manager = AssignmentList()
    manager.root_dir = str(root)
    return manager.list_assignments(course_id=course.course_id)


def test_before_any_release_the_assignment_list_is_empty_not_three_errors(repo_runtime, tmp_path, monkeypatch):
    from grading.lab import exchange_state, prepare_root

    course = repo_runtime
    _, _, root = lab_command(course, "student", student_id="ada")
    (course.runtime_dir / "students" / "ada").mkdir(parents=True)
    # The cause of the errors: nbgrader's list refuses an exchange root that does not exist yet.
    listed = _assignment_list(course, root, "ada", tmp_path, monkeypatch)
    assert listed["success"] is False and "exchange directory does not exist" in listed["value"]
    prepare_root(course, "student", root, "ada")   # what `make lab` does before the server starts
    assert _assignment_list(course, root, "ada", tmp_path, monkeypatch) == {"success": True, "value": []}
    message = exchange_state(course)
    assert message == f"nothing released yet by your instructor; the exchange is {course.exchange_dir}"


def test_the_lab_never_tells_a_student_to_run_instructor_commands(course_runtime, tmp_path, monkeypatch, capsys):
    from grading import lab

    monkeypatch.setattr(lab.os, "execve", lambda *a: None)   # everything up to starting Jupyter
    monkeypatch.setattr(lab.os, "chdir", lambda path: None)
    assert lab.main(["--student", "ada"]) == 0
    out = capsys.readouterr().out
    assert "nothing released yet by your instructor" in out and "make generate" not in out and "release`" not in out
    assert "ssh -N -L 8888:127.0.0.1:8888" in out
    # A shared exchange that is not there is a missing mount, said without an instructor command.
    unmounted = dataclasses.replace(course_runtime, exchange_dir=tmp_path / "srv" / "exchange")
    message = lab.exchange_state(unmounted)
    assert "does not exist on this server" in message and "not mounted" in message and "make" not in message
    lab.prepare_root(unmounted, "student", tmp_path / "root", "ada")
    assert not unmounted.exchange_dir.exists(), "a shared exchange is never made in place of a missing mount"


def test_the_landing_page_names_this_weeks_assignment_by_the_course_clock(course_runtime, tmp_path):
    import datetime as dt
    import re

    from grading.course import REPO_ROOT
    from grading.syllabus import render_start

    course = dataclasses.replace(course_runtime, timezone="America/New_York")
    own = REPO_ROOT / "runtime" / "students" / "ada"   # not created: links are computed, not followed
    week1, week2 = course.weeks[0], course.weeks[1]
    # Week 1 is due 23:59 course time; at 03:00 UTC the next day it is still 22:00 in New York.
    late_evening = dt.datetime.combine(week1.due.date() + dt.timedelta(days=1), dt.time(3, 0), tzinfo=dt.timezone.utc)
    text = render_start(course, "ada", own, now=late_evening)
    assert f"**Week 1: {week1.title}.** Assignment `{week1.assignment}`" in text
    assert f"due {week1.due:%a %d %b %Y %H:%M} (America/New_York)" in text
    text = render_start(course, "ada", own, now=late_evening + dt.timedelta(hours=3))
    assert f"**Week 2: {week2.title}.**" in text and f"due {week2.due:%a %d %b %Y %H:%M}" in text
    before = dt.datetime.combine(week1.release - dt.timedelta(days=30), dt.time(12), tzinfo=dt.timezone.utc)
    assert "The course has not started: week 1" in render_start(course, "ada", own, now=before)
    after = dt.datetime.combine(course.weeks[-1].due.date() + dt.timedelta(days=2), dt.time(12), tzinfo=dt.timezone.utc)
    assert "Every week's due date has passed" in render_start(course, "ada", own, now=after)
    # Every week is listed; each existing paper notebook is a relative link that reaches it.
    links = re.findall(r"\]\(([^)]+\.ipynb)\)", text)
    assert len(links) == sum(w.notebook_path().exists() for w in course.weeks) > 0
    assert all((own / link).resolve().is_file() for link in links)
    assert all(f"`{w.assignment}`" in text for w in course.weeks)
    assert "ssh -N -L 8888:127.0.0.1:8888" in text and "SMOKE = True" in text and "notebooks/runs/" in text


def test_a_root_elsewhere_starts_without_a_landing_url(course_runtime, tmp_path):
    argv, _, root = lab_command(course_runtime, "student", student_id="ada")
    assert root == course_runtime.runtime_dir / "students" / "ada", "runtime outside the repository: their folder"
    assert "--LabApp.default_url=/lab/tree/START.md" in argv
    argv, _, _ = lab_command(course_runtime, "student", student_id="ada", root=tmp_path / "elsewhere")
    assert not any(a.startswith("--LabApp.default_url") for a in argv)
