"""Intake without following links, one batch per assignment, and what a killed batch leaves behind:
the parts of `gankit grade` that need no kernel (tests/test_hostile_intake.py grades a class)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from grading import batch, safecopy, scratch
from grading.batch_lock import BatchLock
from grading.course import CourseError
from grading.safe_collect import INTAKE_NOTE, read_intake_note, write_intake_note

SECRET = b"the grader's secret 1f2e3d"


@pytest.fixture
def hostile_folder(tmp_path):
    """A submission with one honest file and every way to reach a file that is not the student's."""
    secret = tmp_path / "grader" / "gradebook.db"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    other = tmp_path / "submitted" / "other" / "week1"
    other.mkdir(parents=True)
    (other / "answers.ipynb").write_bytes(SECRET)
    folder = tmp_path / "submitted" / "me" / "week1"
    (folder / "sub").mkdir(parents=True)
    (folder / "mine.ipynb").write_text("my work")
    (folder / "sub" / "data.txt").write_text("mine too")
    (folder / "gb.db").symlink_to(os.path.relpath(secret, folder))
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "theirs.ipynb").symlink_to(other / "answers.ipynb")
    (folder / "linked_dir").symlink_to(secret.parent, target_is_directory=True)
    os.link(secret, folder / "hard.db")
    os.mkfifo(folder / "pipe")
    return folder


def test_a_copy_never_follows_a_link_nor_opens_a_pipe(hostile_folder, tmp_path):
    target = tmp_path / "copy"
    refused = dict(safecopy.copy_tree(hostile_folder, target))   # a pipe opened for reading would hang here
    copied = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert copied == ["mine.ipynb", "sub/data.txt"]
    assert all(SECRET not in p.read_bytes() for p in target.rglob("*") if p.is_file())
    assert set(refused) == {"gb.db", "passwd", "theirs.ipynb", "linked_dir", "hard.db", "pipe"}
    assert "symbolic link" in refused["gb.db"] and "/etc/passwd" in refused["passwd"]
    assert "hard link" in refused["hard.db"] and "named pipe" in refused["pipe"]
    files, refused_again = safecopy.read_tree(hostile_folder)
    assert sorted(files) == ["mine.ipynb", "sub/data.txt"] and len(refused_again) == 6


def test_a_copy_stops_at_its_byte_budget(tmp_path):
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "a.bin").write_bytes(bytes(3000))
    (tmp_path / "big" / "b.bin").write_bytes(bytes(3000))
    assert safecopy.tree_size(tmp_path / "big") == 6000
    with pytest.raises(safecopy.OutputTooLarge):
        safecopy.copy_tree(tmp_path / "big", tmp_path / "copy", limit_bytes=5000)
    with pytest.raises(safecopy.OutputTooLarge):
        safecopy.read_tree(tmp_path / "big", limit_bytes=5000)
    assert len(safecopy.read_tree(tmp_path / "big", limit_bytes=6000)[0]) == 2


def test_the_grading_copy_keeps_what_collect_refused(hostile_folder, tmp_path):
    write_intake_note(hostile_folder, [("exchange_link", "a symbolic link (to /etc/shadow): links are not followed")])
    assert read_intake_note(hostile_folder)[0][0] == "exchange_link"
    refused = dict(batch._copy_submission_safely(hostile_folder, tmp_path / "job"))
    assert "exchange_link" in refused and "gb.db" in refused
    assert not (tmp_path / "job" / INTAKE_NOTE).exists(), "the note is the grader's, not part of the work"
    # the content hash that tells LMS re-uploads apart reads no foreign byte either
    before = batch._content_hash(hostile_folder)
    (hostile_folder.parent.parent.parent / "grader" / "gradebook.db").write_bytes(b"changed")
    assert batch._content_hash(hostile_folder) == before


def test_a_second_batch_is_refused_naming_the_first(tmp_path):
    with BatchLock(tmp_path, "week1"):
        with pytest.raises(CourseError, match=rf"pid {os.getpid()} on {scratch.host()}.*remove .*grade-week1.lock"):
            BatchLock(tmp_path, "week1").acquire()
        with BatchLock(tmp_path, "week2"):   # another assignment may run beside it
            pass
    with BatchLock(tmp_path, "week1"):        # released: free again
        pass
    assert not (tmp_path / "grading" / "grade-week1.lock").exists()


def test_a_lock_from_another_process_is_refused_until_it_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from grading.batch_lock import BatchLock\n"
        f"lock = BatchLock(Path({str(tmp_path)!r}), 'week1').acquire()\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CourseError, match=rf"pid {holder.pid} on "):
            BatchLock(tmp_path, "week1").acquire()
    finally:
        holder.kill()   # SIGKILL: its lock file stays, naming it
        holder.wait()
    assert json.loads((tmp_path / "grading" / "grade-week1.lock").read_text())["pid"] == holder.pid
    with BatchLock(tmp_path, "week1") as lock:
        assert lock.took_over["pid"] == holder.pid, "a dead batch's lock is taken over"


def test_a_lock_of_another_host_is_refused_with_how_to_remove_it(tmp_path):
    path = tmp_path / "grading" / "grade-week1.lock"
    path.parent.mkdir()
    path.write_text(json.dumps({"pid": 4242, "host": "gpu-server-2", "started": "2026-01-01T00:00:00+00:00"}))
    with pytest.raises(CourseError, match=r"pid 4242 on gpu-server-2.*another host.*remove .*grade-week1.lock"):
        BatchLock(tmp_path, "week1").acquire()


def test_two_threads_never_hold_one_lock(tmp_path):
    held, errors = [], []

    def try_it():
        try:
            with BatchLock(tmp_path, "week1"):
                held.append(1)
                threading.Event().wait(0.2)
        except CourseError as err:
            errors.append(err)

    # flock is per open file description, so two opens in one process exclude each other too
    threads = [threading.Thread(target=try_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) >= 1 and len(held) + len(errors) == 4 and errors


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_a_killed_batch_are_removed_and_nothing_else(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    runtime = tmp_path / "runtime"
    dead = f"~{_dead_pid()}@{scratch.host()}~"
    alive = scratch.owner_tag()
    elsewhere = "~1@another-host~"
    made = {
        "dead scratch": tmp_path / "tmp" / f"{scratch.SCRATCH_PREFIX}{dead}ada-x1",
        "dead key build": tmp_path / "tmp" / f"{scratch.KEY_PREFIX}{dead}-x2",
        "dead kernel's sockets": tmp_path / "tmp" / f"{scratch.KERNEL_PREFIX}{dead}-x6",
        "dead .new": runtime / "autograded" / "ada" / f".week1.new{dead}x3",
        "dead .old": runtime / "autograded" / "ada" / f".week1.old{dead}",
        "live scratch": tmp_path / "tmp" / f"{scratch.SCRATCH_PREFIX}{alive}bob-x4",
        "other host's": tmp_path / "tmp" / f"{scratch.SCRATCH_PREFIX}{elsewhere}cy-x5",
        "graded": runtime / "autograded" / "ada" / "week1",
    }
    for path in made.values():
        (path / "keys").mkdir(parents=True)
        (path / "keys" / "answers.json").write_text("{}")
    snapshot = runtime / "grading" / f"{scratch.SNAPSHOT_PREFIX}{dead}.db"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_text("every source cell")
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(runtime))
    assert batch.main(["--clean"]) == 0   # `gankit grade --clean`
    said = capsys.readouterr().out
    assert "removed 6 leftover(s)" in said
    for name in ("dead scratch", "dead key build", "dead kernel's sockets", "dead .new", "dead .old"):
        assert not made[name].exists() and str(made[name]) in said, name
    assert not snapshot.exists()
    for name in ("live scratch", "other host's", "graded"):
        assert made[name].is_dir(), name
    assert scratch.remove_stale(runtime) == [], "nothing left to remove"
