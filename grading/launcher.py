"""nbgrader, started warm: each job's ``nbgrader autograde`` is forked from a process that has
already imported nbgrader, instead of a fresh ``python -m nbgrader`` per submission.

Measured on the course's 2-core machine: ``python -m nbgrader`` spends 3.5 s importing before it
reads a file, 1.3 s of it in ``rfc3987_syntax``, which jsonschema imports (when installed) for two
format checks nbformat never uses, and which builds a grammar on import. A job paid that once per
submission, while nbgrader's serial autograde pays it once per class: at 8 week-1 submissions it
was more than a third of a job's own time.

* ``python -m grading.launcher -- ARGS...`` runs ``nbgrader ARGS...`` once, without that import
  (what a job on a Dask worker uses).
* ``python -m grading.launcher --serve`` is a warm launcher: it imports nbgrader, then reads one
  JSON request a line on stdin (``argv``, ``cwd``, ``env``, ``log``) and forks a child for each.
  The child starts a new session, points stdout and stderr at ``log``, takes the job's folder and
  environment and runs nbgrader there, so each job still gets a process of its own (nbgrader's
  singletons, a crash, a kill on time-out). The launcher answers ``{"pid": ...}`` when the child
  starts and ``{"pid": ..., "status": ...}`` when it ends. :class:`WarmNbgrader` is the
  coordinator's side: one launcher per worker slot, used one job at a time.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

# Never imported: see the module docstring. jsonschema skips the two checks it would serve.
UNUSED_SLOW_IMPORTS = ("rfc3987_syntax",)


def _block_slow_imports() -> None:
    for name in UNUSED_SLOW_IMPORTS:
        sys.modules.setdefault(name, None)   # None in sys.modules: `import name` raises ImportError


def _nbgrader_main(argv: list[str]) -> int:
    """nbgrader's own command line (``python -m nbgrader``) on ``argv``; its exit status."""
    from nbgrader.apps.nbgraderapp import NbGraderApp

    sys.argv = ["nbgrader", *argv]
    try:
        NbGraderApp.launch_instance(argv=argv)
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def _run_child(request: dict) -> None:
    """In the forked child: become the job's nbgrader process, then exit with its status."""
    status = 1
    try:
        os.setsid()   # its own process group: a time-out kills nbgrader and whatever it started
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        status = _nbgrader_main(request["argv"])
    except BaseException:   # noqa: BLE001 - whatever it was, the log says it and the job fails
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def serve() -> NoReturn:
    """The warm launcher's loop (``--serve``): one child per request, one request at a time."""
    _block_slow_imports()
    import nbgrader.apps  # noqa: F401 - the import every job would otherwise pay for
    import nbgrader.converters  # noqa: F401

    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        out.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, wait_status = os.waitpid(pid, 0)
        out.write(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(wait_status)}) + "\n")
        out.flush()
    # Nothing of the launcher's own needs tearing down (its children are reaped, its answers
    # flushed): skipping the interpreter's finalisation of nbgrader's modules saves the batch
    # 0.3 s per slot at its end, where nothing else overlaps it.
    os._exit(0)


class LauncherGone(RuntimeError):
    """The warm launcher exited or stopped answering: run this job the cold way."""


class WarmNbgrader:
    """The coordinator's handle on one warm launcher (started on first use, one job at a time)."""

    def __init__(self, env: dict[str, str]):
        self._env = env
        self._process: subprocess.Popen | None = None
        self._pending = b""   # bytes read from the launcher past the last whole line
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen([sys.executable, "-m", "grading.launcher", "--serve"],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, env=self._env)
            self._pending = b""
        return self._process

    def _answer(self, process: subprocess.Popen, deadline: float | None) -> dict | None:
        """The launcher's next line, or None when ``deadline`` (monotonic) passes first.

        Read from the pipe's descriptor directly: a buffered reader may hold the second answer
        already, and select() would then wait for bytes that never come."""
        fd = process.stdout.fileno()
        while b"\n" not in self._pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise LauncherGone("the warm nbgrader launcher exited")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, argv: list[str], *, cwd: Path, env: dict[str, str], log: Path,
            timeout: float) -> int | None:
        """Run ``nbgrader ARGV`` in ``cwd`` with ``env``, its output in ``log``; its exit status,
        or None after ``timeout`` seconds (it is then killed)."""
        with self._lock:
            process = self._start()
            request = {"argv": argv, "cwd": str(cwd), "env": env, "log": str(log)}
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                started = self._answer(process, time.monotonic() + 60)
            except (BrokenPipeError, OSError, ValueError) as err:
                raise LauncherGone(f"the warm nbgrader launcher cannot be reached ({err})") from None
            if started is None:
                self.close()
                raise LauncherGone("the warm nbgrader launcher did not answer within 60 s")
            ended = self._answer(process, time.monotonic() + timeout)
            if ended is None:
                try:
                    os.killpg(started["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._answer(process, None)   # the launcher reaps it and says so
                return None
            return ended["status"]

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        return serve()
    if argv[:1] == ["--"]:
        argv = argv[1:]
    _block_slow_imports()
    return _nbgrader_main(argv)


if __name__ == "__main__":
    sys.exit(main())
