"""One `gankit grade` batch per assignment at a time.

Two batches of one assignment would both grade every student and both write the gradebook (one
crashes on nbgrader's ``UNIQUE constraint failed``). The lock is ``<runtime>/grading/grade-<a>.lock``:
held with ``flock`` (the kernel lets go when the holder dies, however it dies) and holding the
holder's pid, host and start time, which the refusal names. A lock file still naming a batch whose
``flock`` is gone was left by a dead batch of this host and is taken over. One naming another host
is refused even then: on an NFS runtime mounted without lock support that batch may be running
(the message says how to remove the file when it is not).
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from pathlib import Path

from grading.course import CourseError
from grading.scratch import host


class BatchLock:
    """``with BatchLock(runtime_dir, assignment):`` grade; CourseError if another batch holds it."""

    def __init__(self, runtime_dir: Path, assignment: str):
        self.path = runtime_dir / "grading" / f"grade-{assignment}.lock"
        self.assignment = assignment
        self.took_over: dict | None = None   # what a dead batch's lock said, when we took it over
        self._fd: int | None = None

    def _holder_text(self, holder: dict) -> str:
        return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                f"{holder.get('started', '?')}")

    def _refuse(self, holder: dict, why: str) -> CourseError:
        return CourseError(f"another `gankit grade {self.assignment}` is running ({self._holder_text(holder)}){why}: "
                           f"wait for it to finish; if you are sure it is not running any more, remove {self.path} "
                           f"and run this again")

    def acquire(self) -> "BatchLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise self._refuse(holder, "") from None
            # The holder before us may have removed the file between our open and our flock:
            # then we hold a lock on a name nobody else sees; start again on the current file.
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            holder = _read(fd)
            if holder and holder.get("host") != host():
                os.close(fd)
                raise self._refuse(holder, " (another host: its lock cannot be checked from here)")
            if holder:
                self.took_over = holder   # same host, flock released: that batch died
            os.ftruncate(fd, 0)
            mine = {"pid": os.getpid(), "host": host(),
                    "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            os.pwrite(fd, json.dumps(mine).encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)   # while still holding it: see acquire's inode check
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "BatchLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}
