"""grading/sandbox.py: a student's kernel sees its own folder and nothing of the course."""
from __future__ import annotations

import socket

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from grading import sandbox
from grading.course import REPO_ROOT

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


def test_the_kernel_sees_its_folder_and_nothing_else(tmp_path):
    sandbox.check_sandbox()   # .ci/run installs bubblewrap: missing here is a failure
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
        ], work)
    finally:
        listener.close()
    assert text(outputs[0]).strip() == str(work)
    assert "FileNotFoundError" in text(outputs[1]), "the gradebook is not there"
    assert "FileNotFoundError" in text(outputs[2]), "other submissions are not there"
    assert text(outputs[3]).split() == ["False", "True"], "the kit is, the answer keys are not"
    assert "ConnectionRefusedError" in text(outputs[4]) or "OSError" in text(outputs[4]), "no network"
    assert text(outputs[5]).strip() == "ok" and (work / "mine.txt").read_text() == "ok"
    assert "True" in text(outputs[6]) or "scratch" in text(outputs[6])
    assert not (tmp_path / "scratch").exists()
    assert text(outputs[7]).strip() == "0.1.0"


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


def test_without_bubblewrap_grading_refuses_and_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap.*--no-sandbox"):
        sandbox.check_sandbox()
