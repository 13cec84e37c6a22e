"""Student code runs in a bubblewrap sandbox; nbgrader and the grader stay outside it.

Measured on plain nbgrader: the kernel can read the instructor's source notebooks (hidden tests
included), write gradebook.db, read other students' submissions and write anywhere the grader can.
Here only the *kernel* is sandboxed (``SandboxedKernelManager``, used by GradingExecute when a
job asks for it); nbgrader, which must read the gradebook, runs outside. The kernel sees:

* the system and the kit's Python environment, read-only (``/usr``, ``/etc``, the venv, the
  installed ``gankit`` package: the repository's ``assignments/`` with the answer keys is not there);
* the notebook's own folder (the job's copy of that one submission), writable, at the neutral
  path ``/submission`` (its real path names the course's folders and the student), and the job's
  data folder, writable; a private ``/tmp`` and home; its own pid, ipc and network namespaces (no network at
  all: the kernel talks to the grader over unix sockets in a folder only the two of them share);
* the GPU the job was given (``/dev/nvidiaN`` plus the control devices) and no other.

Limits (``prlimit``, inherited by everything the kernel starts): address space (memory), CPU
seconds and the size of any file written; wall time is the grader's per-cell and per-notebook
timeouts. When the kernel dies of one, the grader records the cell as failed and goes on.

Processes: ``max_procs`` (course.yml ``grading.max_processes``) caps the processes and threads
one kernel may run at once, so a fork bomb fails inside its own kernel instead of filling the
grading server's process table. ``process_limit()`` says how, best first:

* ``cgroup2`` / ``cgroup1``: each kernel gets its own cgroup with ``pids.max``, made below the
  grader's own cgroup (a writable, delegated cgroup-v2 subtree with the pids controller, or a
  writable cgroup-v1 ``pids`` hierarchy). The kernel's first process (a one-line ``sh``) moves
  itself into that cgroup before it execs prlimit and bwrap, so nothing the student runs starts
  outside it. When the kernel is cleaned up, whatever is left in the cgroup is killed and the
  cgroup removed. Its ``pids.events`` counter tells GradingExecute that a fork was refused.
* ``nproc``: not root and no usable cgroup: ``prlimit --nproc`` at (the tasks this user runs
  now) + ``max_procs``. RLIMIT_NPROC counts every process of the user, so this is looser.
* ``none``: root without a writable cgroup (root ignores RLIMIT_NPROC): a warning says that fork
  bombs are not contained and what to change; ``gankit doctor`` reports the same.
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Integer, List, Unicode

from grading import scratch
from grading.course import REPO_ROOT

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`), or pass --no-sandbox to run "
                "student code with the grader's own rights (only for code you trust)")
PROCESS_LIMIT_HINT = ("run the grader as a non-root user (prlimit --nproc then caps each kernel), or give it a "
                      "writable cgroup with the pids controller: cgroup v2 delegated to the grader (systemd: "
                      "Delegate=pids in its service, or `systemd-run --user -p Delegate=yes ...`), or a writable "
                      "/sys/fs/cgroup/pids (cgroup v1)")
CGROUP_MECHANISMS = ("cgroup2", "cgroup1")
SANDBOX_WORKDIR = "/submission"      # where the kernel sees its notebook's folder, and starts
_serial = itertools.count()          # names this process's cgroups apart
_warned_uncontained = False          # the "fork bombs are not contained" warning, once per grader


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


@dataclass(frozen=True)
class ProcessLimit:
    """How kernels' processes are capped on this machine (see the module docstring)."""
    mechanism: str            # "cgroup2", "cgroup1", "nproc" or "none"
    parent: Path | None       # the cgroup below which each kernel gets its own (cgroup mechanisms)
    detail: str               # one line for the log and `gankit doctor`


def _own_cgroup_dirs() -> list[tuple[str, Path]]:
    """This process's own cgroup folders that have a pids controller: ("cgroup2"|"cgroup1", path).

    /proc/self/cgroup names the cgroup inside each hierarchy; /proc/self/mountinfo says where that
    hierarchy is mounted and which of its cgroups the mount shows as its root (a container often
    mounts only its own subtree), so the folder is mountpoint / (own path relative to mount root).
    """
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            own["cgroup2"] = path
        elif "pids" in controllers.split(","):
            own["cgroup1"] = path
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        root, mountpoint, fstype, options = fields[3], fields[4], fields[dash + 1], fields[dash + 3]
        if fstype == "cgroup2":
            kind = "cgroup2"
        elif fstype == "cgroup" and "pids" in options.split(","):
            kind = "cgroup1"
        else:
            continue
        if kind not in own or kind in found:
            continue
        relative = os.path.relpath(own[kind], root)
        if relative == ".." or relative.startswith("../"):
            continue     # this mount shows a subtree that does not hold our cgroup
        found[kind] = Path(os.path.normpath(os.path.join(mountpoint, relative)))
    return [(kind, found[kind]) for kind in CGROUP_MECHANISMS if kind in found]


def _cgroup_problem(kind: str, parent: Path) -> str | None:
    """None when kernels' cgroups can be made below PARENT, limited and entered; else why not."""
    if kind == "cgroup2":
        try:
            if "pids" not in (parent / "cgroup.controllers").read_text().split():
                return f"{parent}: the pids controller is not available to this cgroup (cgroup v2)"
            if "pids" not in (parent / "cgroup.subtree_control").read_text().split():
                # Children get a pids.max only once the parent hands the controller down.
                (parent / "cgroup.subtree_control").write_text("+pids")
        except OSError as err:
            return f"{parent}: cannot enable the pids controller for child cgroups ({err.strerror})"
    probe = parent / f"gankit-probe-{os.getpid()}-{next(_serial)}"
    try:
        probe.mkdir()
    except OSError as err:
        return f"{parent}: cannot create a cgroup ({err.strerror})"
    try:
        (probe / "pids.max").write_text("16")
        # The same step a kernel's command starts with: a process moves itself in.
        entered = subprocess.run(["/bin/sh", "-c", 'echo $$ > "$1"', "sh", str(probe / "cgroup.procs")],
                                 capture_output=True, text=True, timeout=10)
        if entered.returncode != 0:
            return f"{probe}: a process cannot move itself in ({entered.stderr.strip()})"
    except OSError as err:
        return f"{probe}: cannot set pids.max ({err.strerror})"
    finally:
        remove_cgroup(probe)
    return None


def process_limit() -> ProcessLimit:
    """Which mechanism caps a sandboxed kernel's processes here; see the module docstring.

    Probes by making (and removing) a small cgroup, so the answer is what a kernel would get.
    """
    problems = []
    try:
        candidates = _own_cgroup_dirs()
    except (OSError, ValueError) as err:    # no /proc/self/cgroup: not Linux, or /proc not mounted
        candidates = []
        problems.append(f"cannot read this process's cgroups ({err})")
    for kind, parent in candidates:
        problem = _cgroup_problem(kind, parent)
        if problem is None:
            version = "v2" if kind == "cgroup2" else "v1"
            return ProcessLimit(kind, parent, f"each kernel gets its own cgroup under {parent} "
                                f"(cgroup {version} pids.max = max_processes)")
        problems.append(problem)
    if not candidates:
        problems.append("no cgroup hierarchy with the pids controller is mounted")
    why = "; ".join(problems)
    if os.geteuid() != 0:
        return ProcessLimit("nproc", None, "prlimit --nproc: this user's current tasks + max_processes "
                            f"(no writable cgroup: {why})")
    return ProcessLimit("none", None, "fork bombs in student code are NOT contained: the grader runs as root, "
                        f"which ignores RLIMIT_NPROC, and no writable cgroup was found ({why}); {PROCESS_LIMIT_HINT}")


def tasks_of_user(uid: int) -> int:
    """Processes and threads whose real uid is UID: what RLIMIT_NPROC counts against its limit."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue    # it exited while we looked
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid:
            total += int(fields["Threads"])
    return total


def make_kernel_cgroup(parent: Path, max_procs: int) -> Path:
    """A new cgroup below PARENT that holds at most MAX_PROCS processes and threads."""
    _remove_stale_cgroups(parent)
    cgroup = parent / f"gankit-kernel-{os.getpid()}-{next(_serial)}"
    cgroup.mkdir()
    (cgroup / "pids.max").write_text(str(max_procs))
    return cgroup


def cgroup_limit_hits(cgroup: Path) -> int:
    """How often a fork or a new thread was refused because the cgroup was full (pids.events)."""
    for line in (cgroup / "pids.events").read_text().splitlines():
        key, value = line.split()
        if key == "max":
            return int(value)
    return 0


def kill_cgroup(cgroup: Path, timeout_s: float = 10.0) -> bool:
    """SIGKILL everything in CGROUP; True once it is empty.

    cgroup v2 kills all members at once (``cgroup.kill``); v1 has no such file, so the members
    are killed one by one, again until none is left: a fork bomb forks between two passes, but
    pids.max bounds what it can add.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pids = [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return True
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        if (cgroup / "cgroup.kill").exists():
            (cgroup / "cgroup.kill").write_text("1")
        else:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)


def remove_cgroup(cgroup: Path, timeout_s: float = 5.0) -> None:
    """Kill what is left in CGROUP and remove it; a cgroup is busy until its last member has exited."""
    kill_cgroup(cgroup)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _remove_stale_cgroups(parent: Path) -> None:
    """Remove kernel cgroups that a grader which no longer runs left behind (it was killed)."""
    for stale in parent.glob("gankit-*-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not Path("/proc", pid).exists():
            try:
                remove_cgroup(stale, timeout_s=1.0)
            except OSError:
                pass    # still busy: the next grader tries again


def _seed_font_cache(home: Path) -> None:
    """Copy the grader's matplotlib font list into the kernel's fresh home: without it every
    sandboxed kernel rebuilds it on its first plot (0.6 s measured, per notebook)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matplotlib"
    if os.environ.get("MPLCONFIGDIR"):
        cache = Path(os.environ["MPLCONFIGDIR"])
    for font_list in cache.glob("fontlist-*.json"):
        target = home / ".cache" / "matplotlib"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(font_list, target / font_list.name)


def sandbox_command(kernel_cmd: list[str], *, workdir: Path, shared: Path, writable: list[Path] = (),
                    gpu: str = "", memory_mb: int = 8192, cpu_s: int = 3600, file_mb: int = 512,
                    cgroup: Path | None = None, nproc: int = 0, bwrap: str = "bwrap") -> list[str]:
    """``kernel_cmd`` wrapped in prlimit and bwrap (see the module docstring).

    ``cgroup``: the process moves itself into this cgroup first, so prlimit, bwrap and the kernel
    all start inside it. ``nproc``: RLIMIT_NPROC for the kernel (0: none).
    """
    enter = []
    if cgroup is not None:
        # `&&`: if the move fails, nothing runs (the kernel fails to start, with sh's reason).
        enter = ["/bin/sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", str(cgroup / "cgroup.procs")]
    limits = ["prlimit", f"--as={memory_mb * 2**20}", f"--cpu={cpu_s}", f"--fsize={file_mb * 2**20}"]
    if nproc:
        limits.append(f"--nproc={nproc}")
    limits.append("--")
    home = shared / "home"
    home.mkdir(parents=True, exist_ok=True)
    _seed_font_cache(home)
    # Mounts apply in order: the fresh /tmp comes before the binds, so that a venv, a checkout or
    # a job folder under /tmp (a CI clone, a scratch course) is mounted on top of it, not hidden.
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--clearenv",
            *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            *_python_binds(), *_gpu_binds(gpu)]
    for path in [shared, *writable]:
        args += ["--bind", str(path), str(path)]
    args += ["--bind", str(workdir), SANDBOX_WORKDIR]
    env = {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": gpu if gpu.isdigit() else ""}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):   # the grader's share of the cores (gankit grade)
        if os.environ.get(name):
            env[name] = os.environ[name]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return enter + limits + args + ["--chdir", SANDBOX_WORKDIR, "--", *kernel_cmd]


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel in a bubblewrap sandbox, connected over unix sockets in a private folder."""

    gpu = Unicode("", help="the one GPU the kernel may use ('' for none)").tag(config=True)
    memory_mb = Integer(8192, help="address-space limit of the kernel and its children").tag(config=True)
    cpu_s = Integer(3600, help="CPU seconds for the whole kernel").tag(config=True)
    file_mb = Integer(512, help="largest file the kernel may write").tag(config=True)
    max_procs = Integer(512, help="processes and threads the kernel may run at once "
                        "(course.yml grading.max_processes)").tag(config=True)
    writable = List(Unicode(), help="more folders the kernel may write (the job's data folder)").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transport = "ipc"   # no network namespace is shared with the grader: unix sockets only
        # named after this process, so that a killed grader's folder is removed by the next (grading/scratch.py)
        self._shared = scratch.scratch_dir(scratch.KERNEL_PREFIX)
        os.chmod(self._shared, 0o700)
        self.connection_file = str(self._shared / "kernel.json")
        self.ip = str(self._shared / "kernel-ipc")
        self.process_limit: ProcessLimit | None = None   # known once the kernel command is built
        self._cgroup: Path | None = None                 # this kernel's own cgroup, kept over restarts
        self._limit_hits_seen = 0

    def format_kernel_cmd(self, extra_arguments=None):
        global _warned_uncontained
        cmd = super().format_kernel_cmd(extra_arguments)
        # A SIGINT would reach bwrap, not Python: interrupt (a cell over its time limit) by message
        self.kernel_spec.interrupt_mode = "message"
        # nbclient starts the kernel in the notebook's folder (start_kernel(cwd=...)), saved here
        workdir = Path(getattr(self, "_launch_args", {}).get("cwd") or os.getcwd()).resolve()
        bwrap = check_sandbox()
        if self.process_limit is None:
            self.process_limit = process_limit()
        nproc = 0
        if self.process_limit.mechanism in CGROUP_MECHANISMS and self._cgroup is None:
            try:
                self._cgroup = make_kernel_cgroup(self.process_limit.parent, self.max_procs)
            except OSError as err:   # the probe worked a moment ago: say so rather than run unlimited
                raise SandboxError(f"cannot create this kernel's cgroup under {self.process_limit.parent} "
                                   f"({err}); check who changed its permissions, or {PROCESS_LIMIT_HINT}") from err
        elif self.process_limit.mechanism == "nproc":
            # Counted anew at each start: the limit is on the whole user, whatever else it runs now.
            nproc = tasks_of_user(os.getuid()) + self.max_procs
        elif self.process_limit.mechanism == "none" and not _warned_uncontained:
            self.log.warning("%s", self.process_limit.detail)
            _warned_uncontained = True
        return sandbox_command(cmd, workdir=workdir, shared=self._shared, writable=[Path(p) for p in self.writable],
                               gpu=self.gpu, memory_mb=self.memory_mb, cpu_s=self.cpu_s, file_mb=self.file_mb,
                               cgroup=self._cgroup, nproc=nproc, bwrap=bwrap)

    def process_limit_reached(self) -> bool | None:
        """Was a fork or thread refused for ``max_procs`` since the last call? None: cannot tell.

        A cgroup counts its refusals; RLIMIT_NPROC does not (None), and without any limit
        nothing is ever refused (False).
        """
        if self._cgroup is not None:
            try:
                hits = cgroup_limit_hits(self._cgroup)
            except OSError:
                return None
            reached = hits > self._limit_hits_seen
            self._limit_hits_seen = hits
            return reached
        if self.process_limit is not None and self.process_limit.mechanism == "nproc":
            return None
        return False

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if self._cgroup is not None:
            # The kernel process is gone, but children of a fork bomb may not be: they die here,
            # also before a restart, so the next kernel starts in an empty cgroup.
            try:
                if not kill_cgroup(self._cgroup):
                    self.log.error("processes are left in %s after killing them for 10 s", self._cgroup)
                if not restart:
                    remove_cgroup(self._cgroup)
                    self._cgroup = None
            except OSError as err:
                self.log.error("could not clean up the kernel's cgroup %s: %s", self._cgroup, err)
        if not restart:
            shutil.rmtree(self._shared, ignore_errors=True)

    cleanup_resources = _async_cleanup_resources
