"""The warm nbgrader launcher (grading/launcher.py): every job still gets a process of its own, in
its own folder and environment, a job over its time is killed without taking the launcher with
it, and a launcher that is gone is replaced or bypassed. nbgrader itself reads a probe
nbgrader_config.py in the job's folder, which records what the job's process saw."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from grading import batch
from grading.course import REPO_ROOT
from grading.launcher import LauncherGone, WarmNbgrader

PROBE = """\
import json, os, pathlib, sys, time
pathlib.Path("probe.json").write_text(json.dumps({
    "pid": os.getpid(), "cwd": os.getcwd(), "job": os.environ.get("GANKIT_JOB_PROBE"),
    "launcher_only": os.environ.get("GANKIT_LAUNCHER_ONLY"),
    "slow_import": repr(sys.modules.get("rfc3987_syntax", "absent"))}))
time.sleep(float(os.environ.get("GANKIT_JOB_SLEEP", "0")))
c = get_config()
"""


def _env(**extra) -> dict:
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO_ROOT), **extra}


def _job_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "nbgrader_config.py").write_text(PROBE)
    return folder


@pytest.fixture
def warm():
    launcher = WarmNbgrader(_env(GANKIT_LAUNCHER_ONLY="launcher"))
    yield launcher
    launcher.close()


def test_each_job_runs_in_a_process_of_its_own_with_its_folder_and_environment(tmp_path, warm):
    probes = []
    for name in ("ada", "bob"):
        folder = _job_folder(tmp_path, name)
        status = warm.run(["db", "student", "list"], cwd=folder, env=_env(GANKIT_JOB_PROBE=name),
                          log=folder / "nbgrader.log", timeout=120)
        assert status == 0, (folder / "nbgrader.log").read_text()
        assert (folder / "gradebook.db").is_file(), "nbgrader ran in the job's folder"
        probes.append(json.loads((folder / "probe.json").read_text()))
    ada, bob = probes
    assert ada["cwd"] == str(tmp_path / "ada") and bob["cwd"] == str(tmp_path / "bob")
    assert (ada["job"], bob["job"]) == ("ada", "bob")
    assert ada["launcher_only"] is None, "the job's environment replaces the launcher's"
    assert ada["pid"] != bob["pid"] and warm._process.pid not in (ada["pid"], bob["pid"])
    assert ada["slow_import"] == "None", "the import nbgrader never uses is kept out"


def test_a_failing_job_reports_its_status_and_its_output(tmp_path, warm):
    folder = _job_folder(tmp_path, "cy")
    status = warm.run(["autograde", "no-such-assignment", "--student=cy"], cwd=folder, env=_env(),
                      log=folder / "nbgrader.log", timeout=120)
    assert status not in (0, None)
    assert "no-such-assignment" in (folder / "nbgrader.log").read_text()


def test_a_job_over_its_time_is_killed_and_the_launcher_goes_on(tmp_path, warm):
    slow = _job_folder(tmp_path, "slow")
    started = time.monotonic()
    status = warm.run(["db", "student", "list"], cwd=slow, env=_env(GANKIT_JOB_SLEEP="120"),
                      log=slow / "nbgrader.log", timeout=3)
    assert status is None and time.monotonic() - started < 60
    pid = json.loads((slow / "probe.json").read_text())["pid"]
    assert not Path("/proc", str(pid)).exists(), "the job's process was killed"
    quick = _job_folder(tmp_path, "quick")
    assert warm.run(["db", "student", "list"], cwd=quick, env=_env(), log=quick / "nbgrader.log", timeout=120) == 0


def test_a_launcher_that_died_is_started_again(tmp_path, warm):
    first = _job_folder(tmp_path, "first")
    assert warm.run(["db", "student", "list"], cwd=first, env=_env(), log=first / "nbgrader.log", timeout=120) == 0
    old = warm._process
    os.kill(old.pid, signal.SIGKILL)
    old.wait()
    second = _job_folder(tmp_path, "second")
    assert warm.run(["db", "student", "list"], cwd=second, env=_env(), log=second / "nbgrader.log", timeout=120) == 0
    assert warm._process.pid != old.pid


def test_without_a_launcher_nbgrader_starts_cold_and_the_same_way(tmp_path):
    class Gone:
        def run(self, *args, **kwargs):
            raise LauncherGone("gone")

    for name, launcher in (("dask", None), ("gone", Gone())):
        folder = _job_folder(tmp_path, name)
        status = batch._run_nbgrader(["db", "student", "list"], cwd=folder, env=_env(GANKIT_JOB_PROBE=name),
                                     log=folder / "nbgrader.log", timeout=120, warm=launcher)
        assert status == 0, (folder / "nbgrader.log").read_text()
        probe = json.loads((folder / "probe.json").read_text())
        assert probe["job"] == name and probe["slow_import"] == "None"
    slow = _job_folder(tmp_path, "slow")
    assert batch._run_nbgrader(["db", "student", "list"], cwd=slow, env=_env(GANKIT_JOB_SLEEP="120"),
                               log=slow / "nbgrader.log", timeout=3, warm=None) is None


def test_a_job_gets_a_copy_of_the_class_data_that_its_student_cannot_change(tmp_path, monkeypatch):
    """The embedded data the answer-key run built is copied into each job (not rebuilt, not shared)."""
    seed = tmp_path / "runtime" / "data"
    (seed / "synthetic" / "mnist").mkdir(parents=True)
    (seed / "synthetic" / "mnist" / "train.bin").write_bytes(b"digits")
    (seed / "synthetic" / "elsewhere").symlink_to("/etc")
    submission = tmp_path / "submitted" / "ada" / "a1"
    submission.mkdir(parents=True)
    snapshot = tmp_path / "snapshot.db"
    snapshot.write_bytes(b"")
    seen = {}

    def hostile_nbgrader(argv, *, cwd, env, log, timeout, warm):
        data = cwd / "data" / "synthetic"
        seen["copied"] = (data / "mnist" / "train.bin").read_bytes()
        seen["link"] = (data / "elsewhere").exists()
        (data / "mnist" / "train.bin").write_bytes(b"poisoned")   # what a student's code could do
        return 1

    monkeypatch.setattr(batch, "_run_nbgrader", hostile_nbgrader)
    job = batch.Job("a1", "ada", "2027-01-01 00:00:00 UTC", submission, snapshot, 60.0, sandbox=False,
                    data_seed=seed)
    result = batch.grade_submission(job)
    assert result.status == "failed" and seen == {"copied": b"digits", "link": False}
    assert (seed / "synthetic" / "mnist" / "train.bin").read_bytes() == b"digits", "the class's copy is untouched"
