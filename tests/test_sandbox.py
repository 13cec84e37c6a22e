"""grading/sandbox.py: a student's kernel sees its own folder and nothing of the course, and
cannot take the grading server down with a fork bomb or endless output."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook
from traitlets.config import Config

from grading import doctor, sandbox
from grading.course import REPO_ROOT
from grading.preprocessors import GradingExecute
from nbgrader import utils

pytestmark = pytest.mark.slow


def run_sandboxed(cells: list[str], workdir, **limits) -> list[list[dict]]:
    """Execute CELLS in a sandboxed kernel started in WORKDIR; each cell's outputs."""
    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(workdir)}},
                            kernel_manager_class="grading.sandbox.SandboxedKernelManager")
    for name, value in limits.items():
        setattr(client.config.SandboxedKernelManager, name, value)
    client.execute()
    return [cell.outputs for cell in nb.cells]


def text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") or f"{o.get('ename')}: {o.get('evalue')}" for o in outputs)


@pytest.mark.needs_bwrap
def test_the_kernel_sees_its_folder_and_nothing_else(tmp_path):
    course = tmp_path / "course"
    (course / "submitted" / "other").mkdir(parents=True)
    (course / "submitted" / "other" / "answers.ipynb").write_text("another student's work")
    (course / "gradebook.db").write_text("grades")
    work = course / "autograded" / "me" / "week1"
    work.mkdir(parents=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        outputs = run_sandboxed([
            "import os; print(os.getcwd())",
            f"print(open({str(course / 'gradebook.db')!r}).read())",
            f"print(os.listdir({str(course / 'submitted')!r}))",
            f"print(os.path.exists({str(REPO_ROOT / 'assignments')!r}), os.path.exists({str(REPO_ROOT / 'gankit')!r}))",
            f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)",
            "open('mine.txt', 'w').write('ok'); print(open('mine.txt').read())",
            "open('/tmp/scratch', 'w').write('private'); print(sorted(os.listdir('/tmp')) == ['scratch'] or os.listdir('/tmp'))",
            "import gankit; print(gankit.__version__)",
            f"print(os.path.exists({str(work)!r}), os.path.exists({str(course)!r}))",
        ], work)
    finally:
        listener.close()
    assert text(outputs[0]).strip() == sandbox.SANDBOX_WORKDIR, "a neutral path: no course folder, no student"
    assert "FileNotFoundError" in text(outputs[1]), "the gradebook is not there"
    assert "FileNotFoundError" in text(outputs[2]), "other submissions are not there"
    assert text(outputs[3]).split() == ["False", "True"], "the kit is, the answer keys are not"
    assert "ConnectionRefusedError" in text(outputs[4]) or "OSError" in text(outputs[4]), "no network"
    assert text(outputs[5]).strip() == "ok" and (work / "mine.txt").read_text() == "ok"
    assert "True" in text(outputs[6]) or "scratch" in text(outputs[6])
    assert not (tmp_path / "scratch").exists()
    assert text(outputs[7]).strip() == "0.1.0"
    assert text(outputs[8]).split() == ["False", "False"], "the folder's real path, and its parents, are not there"


@pytest.mark.needs_bwrap
def test_limits_stop_memory_and_file_bombs(tmp_path):
    outputs = run_sandboxed([
        "x = bytearray(3 * 2**30)",                                     # 3 GiB > the 1 GiB limit
        "f = open('big.bin', 'wb')\nfor _ in range(200): f.write(b'0' * 2**20)",   # 200 MiB > 64 MiB
        "print('still alive')",
    ], tmp_path, memory_mb=1024, file_mb=64)
    assert "MemoryError" in text(outputs[0])
    assert "File too large" in text(outputs[1]) or "OSError" in text(outputs[1])
    assert (tmp_path / "big.bin").stat().st_size <= 64 * 2**20
    assert text(outputs[2]).strip() == "still alive"


@pytest.mark.needs_bwrap
def test_a_cell_over_its_time_limit_is_interrupted_and_the_kernel_goes_on(tmp_path):
    nb = new_notebook(cells=[new_code_cell("while True:\n    pass"), new_code_cell("print('next')")])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    client = NotebookClient(nb, timeout=3, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(tmp_path)}},
                            kernel_manager_class="grading.sandbox.SandboxedKernelManager")
    client.execute()
    assert "KeyboardInterrupt" in text(nb.cells[0].outputs)
    assert text(nb.cells[1].outputs).strip() == "next"


def test_folders_under_tmp_are_bound_after_the_private_tmp(tmp_path, monkeypatch):
    """A venv or checkout under /tmp (a CI clone) must not vanish under the sandbox's own /tmp."""
    monkeypatch.setattr(sandbox.sys, "prefix", "/tmp/clone/.venv")
    monkeypatch.setattr(sandbox, "_python_binds", lambda: ["--ro-bind", "/tmp/clone/.venv", "/tmp/clone/.venv"])
    cmd = sandbox.sandbox_command(["python"], workdir=tmp_path / "work", shared=tmp_path / "shared")
    tmpfs = cmd.index("--tmpfs")
    binds = [i for i, arg in enumerate(cmd) if arg in ("--bind", "--ro-bind") and cmd[i + 1].startswith("/tmp/")]
    assert binds and all(i > tmpfs for i in binds), cmd


def test_the_graders_thread_share_reaches_the_kernel(tmp_path, monkeypatch):
    # gankit grade sets OMP_NUM_THREADS per job; --clearenv would drop it on the way in.
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    cmd = sandbox.sandbox_command(["python"], workdir=tmp_path / "work", shared=tmp_path / "shared")
    settings = {cmd[i + 1]: cmd[i + 2] for i, word in enumerate(cmd) if word == "--setenv"}
    assert settings["OMP_NUM_THREADS"] == "3" and "MKL_NUM_THREADS" not in settings


def test_without_bubblewrap_grading_refuses_and_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap.*--no-sandbox"):
        sandbox.check_sandbox()


def _test_cell(source, grade_id):
    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id,
                                 "points": 1, "schema_version": 3, "task": False}
    return cell


def grade_sandboxed(cells, workdir, max_procs=512, **traits):
    """Run CELLS through GradingExecute with sandboxed kernels; the executed notebook."""
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    config = Config({"SandboxedKernelManager": {"max_procs": max_procs}})
    executor = GradingExecute(config=config, kernel_manager_class="grading.sandbox.SandboxedKernelManager",
                              **{"timeout": 10, "notebook_timeout": 120, "max_kernel_restarts": 1, **traits})
    nb, _ = executor.preprocess(nb, {"metadata": {"path": str(workdir)}})
    return nb


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains TEXT (zombies have none)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(pid))
    return found


def test_the_kernel_command_enters_its_cgroup_before_anything_runs(tmp_path):
    cgroup = tmp_path / "gankit-kernel-1-0"
    cmd = sandbox.sandbox_command(["python"], workdir=tmp_path, shared=tmp_path / "shared", cgroup=cgroup, nproc=99)
    assert cmd[:5] == ["/bin/sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", str(cgroup / "cgroup.procs")]
    assert cmd[5] == "prlimit" and "--nproc=99" in cmd[:cmd.index("--")]
    plain = sandbox.sandbox_command(["python"], workdir=tmp_path, shared=tmp_path / "shared")
    assert plain[0] == "prlimit" and not any(arg.startswith("--nproc") for arg in plain)


def test_without_a_cgroup_root_is_warned_and_others_get_nproc(monkeypatch):
    monkeypatch.setattr(sandbox, "_own_cgroup_dirs", lambda: [])
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    limit = sandbox.process_limit()
    assert limit.mechanism == "none" and "NOT contained" in limit.detail and "non-root user" in limit.detail
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    assert sandbox.process_limit().mechanism == "nproc"


def test_this_machine_has_a_process_limit_or_says_why_not():
    limit = sandbox.process_limit()
    assert limit.mechanism in ("cgroup2", "cgroup1", "nproc", "none"), limit
    if limit.mechanism in sandbox.CGROUP_MECHANISMS:
        assert limit.parent.is_dir() and not list(limit.parent.glob(f"gankit-probe-{os.getpid()}-*"))
    print(f"process limit: {limit.mechanism}: {limit.detail}")


def test_the_doctor_reports_the_process_limit():
    facts = doctor.CourseFacts()
    facts.process_limit = ("cgroup1", "each kernel gets its own cgroup under /sys/fs/cgroup/pids")
    assert any("capped (cgroup1)" in f.message for f in doctor.diagnose(facts) if f.level == "ok")
    facts.process_limit = ("none", "fork bombs are NOT contained: ...; run the grader as a non-root user")
    warnings = [f.message for f in doctor.diagnose(facts) if f.level == "warn"]
    assert any("not capped" in m and "non-root user" in m for m in warnings)


def test_cgroups_left_by_a_dead_grader_are_removed(tmp_path):
    """Only folders named for a process that no longer runs go; plain folders stand in for cgroups."""
    dead = subprocess.Popen(["true"])
    dead.wait()     # reaped: its pid names no process now
    # serial 999: not the one make_kernel_cgroup picks next, which depends on the tests run before
    stale, alive = tmp_path / f"gankit-kernel-{dead.pid}-0", tmp_path / f"gankit-kernel-{os.getpid()}-999"
    stale.mkdir()
    alive.mkdir()
    made = sandbox.make_kernel_cgroup(tmp_path, 7)
    assert not stale.exists() and alive.exists()
    assert (made / "pids.max").read_text() == "7"


@pytest.mark.needs_bwrap
def test_a_fork_bomb_is_held_by_the_process_limit_and_the_rest_is_graded(tmp_path, monkeypatch):
    """`while True: os.fork()` fills its own kernel's limit only; the cell says so, the next one passes."""
    limit = sandbox.process_limit()
    if limit.mechanism not in ("cgroup2", "cgroup1", "nproc"):
        pytest.skip(f"no fork bomb without a process limit, and there is none here: {limit.detail}")
    started = []     # (shared folder, cgroup) of each kernel the grader starts
    build = sandbox.sandbox_command

    def recording(kernel_cmd, **options):
        started.append((options["shared"], options["cgroup"]))
        return build(kernel_cmd, **options)

    monkeypatch.setattr(sandbox, "sandbox_command", recording)
    begin = time.monotonic()
    nb = grade_sandboxed([new_code_cell("x = 41"),
                          _test_cell("import os\nwhile True:\n    os.fork()", "bomb"),
                          _test_cell("assert x + 1 == 42", "after")], tmp_path, max_procs=32)
    bomb, after = nb.cells[1], nb.cells[2]
    errors = [o for o in bomb.outputs if o.output_type == "error"]
    assert errors and utils.determine_grade(bomb)[0] == 0
    if limit.mechanism in sandbox.CGROUP_MECHANISMS:
        assert errors[-1].ename == "ProcessLimit", errors
        assert "32 processes" in errors[-1].evalue and "grading.max_processes" in errors[-1].evalue
        assert len(started) == 2 and all(cgroup is not None for _, cgroup in started), "a fresh kernel took over"
    assert utils.determine_grade(after)[0] == 1, after.outputs
    assert time.monotonic() - begin < 90
    assert subprocess.run(["true"]).returncode == 0, "the grader can still start processes"
    for shared, cgroup in started:
        assert cgroup is None or not cgroup.exists(), "each kernel's cgroup is removed, so it was empty"
        assert processes_mentioning(str(shared)) == [], "nothing of the kernel or the bomb is left"


@pytest.mark.needs_bwrap
def test_endless_output_in_the_sandbox_is_stopped_at_the_output_limit(tmp_path):
    """The interrupt reaches a sandboxed kernel by message; the limit's note names course.yml."""
    begin = time.monotonic()
    nb = grade_sandboxed([new_code_cell("x = 41"),
                          _test_cell("while True:\n    print('spam ' * 20)", "floods"),
                          _test_cell("assert x + 1 == 42", "after")], tmp_path,
                         timeout=60, max_output_bytes=100_000)
    assert time.monotonic() - begin < 30, "stopped by the output limit, not by the 60 s cell timeout"
    flood = nb.cells[1]
    assert flood.outputs[-1].ename == "OutputLimit" and "grading.max_output_mb" in flood.outputs[-1].evalue
    assert len(nbformat.writes(nb)) < 200_000
    assert utils.determine_grade(nb.cells[2])[0] == 1


def test_the_kernels_home_starts_with_the_graders_font_list(tmp_path, monkeypatch):
    # A fresh home per kernel would make matplotlib rebuild its font list in every notebook.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    (tmp_path / "cache" / "matplotlib").mkdir(parents=True)
    (tmp_path / "cache" / "matplotlib" / "fontlist-v3.json").write_text('{"ttflist": []}')
    sandbox.sandbox_command(["python"], workdir=tmp_path / "work", shared=tmp_path / "shared")
    assert (tmp_path / "shared" / "home" / ".cache" / "matplotlib" / "fontlist-v3.json").read_text() == '{"ttflist": []}'
