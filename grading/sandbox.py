"""Student code runs in a bubblewrap sandbox; nbgrader and the grader stay outside it.

Measured on plain nbgrader: the kernel can read the instructor's source notebooks (hidden tests
included), write gradebook.db, read other students' submissions and write anywhere the grader can.
Here only the *kernel* is sandboxed (``SandboxedKernelManager``, used by GradingExecute when a
job asks for it); nbgrader, which must read the gradebook, runs outside. The kernel sees:

* the system and the kit's Python environment, read-only (``/usr``, ``/etc``, the venv, the
  installed ``gankit`` package: the repository's ``assignments/`` with the answer keys is not there);
* the notebook's own folder (the job's copy of that one submission) and the job's data folder,
  writable; a private ``/tmp`` and home; its own pid, ipc and network namespaces (no network at
  all: the kernel talks to the grader over unix sockets in a folder only the two of them share);
* the GPU the job was given (``/dev/nvidiaN`` plus the control devices) and no other.

Limits (``prlimit``, inherited by everything the kernel starts): address space (memory), CPU
seconds and the size of any file written; wall time is the grader's per-cell and per-notebook
timeouts. When the kernel dies of one, the grader records the cell as failed and goes on.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Integer, List, Unicode

from grading.course import REPO_ROOT

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`), or pass --no-sandbox to run "
                "student code with the grader's own rights (only for code you trust)")


class SandboxError(RuntimeError):
    """bubblewrap is missing or cannot make a sandbox here; the message says what to do."""


def check_sandbox() -> str:
    """The path of a working ``bwrap``; raise SandboxError saying why and how to fix it otherwise."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError(f"bubblewrap (bwrap) is not installed, so student code cannot be isolated: {INSTALL_HINT}")
    probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise SandboxError(f"bwrap cannot create a sandbox here ({probe.stderr.strip() or probe.returncode}); "
                           "unprivileged user namespaces may be off (sysctl kernel.unprivileged_userns_clone=1)")
    return bwrap


def _system_binds() -> list[str]:
    """Read-only system folders; merged-/usr symlinks (/bin -> usr/bin) are recreated as links."""
    args: list[str] = []
    for path in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _python_binds() -> list[str]:
    """The interpreter's environment and the kit's own package, read-only."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), (REPO_ROOT / "gankit").resolve()}
    args: list[str] = []
    for path in sorted(paths):
        if not str(path).startswith(("/usr/", "/etc/")) and path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _gpu_binds(gpu: str) -> list[str]:
    """Only the job's GPU is a device in the sandbox (besides the driver's control devices)."""
    args: list[str] = []
    wanted = [f"/dev/nvidia{gpu}"] if gpu.isdigit() else []
    for device in [*wanted, "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]:
        if os.path.exists(device) and wanted:
            args += ["--dev-bind", device, device]
    return args


def sandbox_command(kernel_cmd: list[str], *, workdir: Path, shared: Path, writable: list[Path] = (),
                    gpu: str = "", memory_mb: int = 8192, cpu_s: int = 3600, file_mb: int = 512,
                    bwrap: str = "bwrap") -> list[str]:
    """``kernel_cmd`` wrapped in prlimit and bwrap (see the module docstring)."""
    limits = ["prlimit", f"--as={memory_mb * 2**20}", f"--cpu={cpu_s}", f"--fsize={file_mb * 2**20}", "--"]
    home = shared / "home"
    home.mkdir(parents=True, exist_ok=True)
    # Mounts apply in order: the fresh /tmp comes before the binds, so that a venv, a checkout or
    # a job folder under /tmp (a CI clone, a scratch course) is mounted on top of it, not hidden.
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--clearenv",
            *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            *_python_binds(), *_gpu_binds(gpu)]
    for path in [shared, *writable, workdir]:
        args += ["--bind", str(path), str(path)]
    env = {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": gpu if gpu.isdigit() else ""}
    for key, value in env.items():
        args += ["--setenv", key, value]
    return limits + args + ["--chdir", str(workdir), "--", *kernel_cmd]


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel in a bubblewrap sandbox, connected over unix sockets in a private folder."""

    gpu = Unicode("", help="the one GPU the kernel may use ('' for none)").tag(config=True)
    memory_mb = Integer(8192, help="address-space limit of the kernel and its children").tag(config=True)
    cpu_s = Integer(3600, help="CPU seconds for the whole kernel").tag(config=True)
    file_mb = Integer(512, help="largest file the kernel may write").tag(config=True)
    writable = List(Unicode(), help="more folders the kernel may write (the job's data folder)").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transport = "ipc"   # no network namespace is shared with the grader: unix sockets only
        self._shared = Path(tempfile.mkdtemp(prefix="gankit-kernel-"))
        os.chmod(self._shared, 0o700)
        self.connection_file = str(self._shared / "kernel.json")
        self.ip = str(self._shared / "kernel-ipc")

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        # A SIGINT would reach bwrap, not Python: interrupt (a cell over its time limit) by message
        self.kernel_spec.interrupt_mode = "message"
        # nbclient starts the kernel in the notebook's folder (start_kernel(cwd=...)), saved here
        workdir = Path(getattr(self, "_launch_args", {}).get("cwd") or os.getcwd()).resolve()
        return sandbox_command(cmd, workdir=workdir, shared=self._shared, writable=[Path(p) for p in self.writable],
                               gpu=self.gpu, memory_mb=self.memory_mb, cpu_s=self.cpu_s, file_mb=self.file_mb,
                               bwrap=check_sandbox())

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._shared, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources
