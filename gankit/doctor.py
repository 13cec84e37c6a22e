"""`gankit doctor`: is this server ready to train and grade?

Facts are gathered in one place (`gather`) and judged by a pure function (`diagnose`), so every
verdict is tested with faked facts: no GPU, an architecture the installed torch build was not
compiled for (a V100 with a CUDA-13 build), a missing dataset, an unwritable exchange, little
memory, no bubblewrap (TAs' sandboxed grading), no process limit for sandboxed kernels (a root
grader without a writable cgroup cannot stop a fork bomb), no nbgrader JupyterLab extension.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

CUDA12_HINT = ("install a CUDA-12 build of torch: `make clean-all setup "
               "TORCH_INDEX=https://download.pytorch.org/whl/cu126` (README, 'V100 servers')")


@dataclass
class GPU:
    index: int
    name: str
    capability: tuple[int, int]
    memory_gib: float


@dataclass
class Facts:
    python: str
    torch: str
    torch_cuda: str | None           # CUDA version torch was built with, None for CPU builds
    arch_list: list[str]             # e.g. ['sm_75', 'sm_80', ..., 'compute_120']
    driver: str | None
    gpus: list[GPU] = field(default_factory=list)
    data_root: Path | None = None
    datasets: dict[str, str] = field(default_factory=dict)   # name -> "verified" | "missing" | problem
    exchange: Path | None = None
    free_disk_gib: float | None = None
    free_memory_gib: float | None = None
    bubblewrap: str | None = None     # "ok", "missing", or why `bwrap` cannot make a sandbox here
    nbgrader_lab: bool | None = None  # nbgrader's JupyterLab extension (assignment list) installed
    process_limit: tuple[str, str] | None = None  # (mechanism, detail): grading.sandbox.process_limit()


@dataclass(frozen=True)
class Finding:
    level: str      # "ok" | "warn" | "error"
    message: str


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Can a build with ``arch_list`` run on a GPU of ``capability``?

    Exact SASS (sm_XY) runs on the same major version with minor >= Y; PTX (compute_XY) is
    JIT-compiled for any GPU at least as new as XY.
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("af")          # sm_90a, sm_100f: family-specific variants
        if not digits.isdigit():
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def diagnose(facts: Facts) -> list[Finding]:
    findings = [Finding("ok", f"Python {facts.python}, torch {facts.torch}"
                        + (f" (CUDA {facts.torch_cuda})" if facts.torch_cuda else " (CPU build)"))]
    if not facts.gpus:
        if facts.torch_cuda and facts.driver is None:
            findings.append(Finding("warn", "no NVIDIA driver found: training runs on the CPU (fine for "
                                    "SMOKE=True, far too slow for overnight runs)"))
        else:
            findings.append(Finding("warn", "no GPU visible: training runs on the CPU (fine for SMOKE=True)"))
    if facts.torch_cuda and facts.arch_list:
        findings.append(Finding("ok", f"torch build runs on: {' '.join(facts.arch_list)}"))
    for gpu in facts.gpus:
        sm = f"sm_{gpu.capability[0]}{gpu.capability[1]}"
        line = f"GPU {gpu.index}: {gpu.name} ({sm}, {gpu.memory_gib:.0f} GiB), driver {facts.driver or '?'}"
        if arch_supported(gpu.capability, facts.arch_list):
            findings.append(Finding("ok", line))
        else:
            findings.append(Finding("error", f"{line}: this torch build has no kernels for {sm} "
                                    f"(built for {' '.join(facts.arch_list) or 'nothing'}); {CUDA12_HINT}"))
        if gpu.capability < (8, 0):
            findings.append(Finding("ok", f"GPU {gpu.index}: no bf16; mixed precision uses fp16 with a gradient scaler"))
    if facts.data_root is not None:
        findings.append(Finding("ok", f"data cache: {facts.data_root} (set GANKIT_DATA to share one copy)"))
        for name, state in sorted(facts.datasets.items()):
            if state == "verified":
                findings.append(Finding("ok", f"dataset {name}: present and verified"))
            elif state == "missing":
                findings.append(Finding("warn", f"dataset {name}: not downloaded (`gankit data fetch {name}`)"))
            else:
                findings.append(Finding("error", f"dataset {name}: {state} (`gankit data verify {name}`)"))
    if facts.exchange is not None:
        if not facts.exchange.is_dir():
            findings.append(Finding("warn", f"nbgrader exchange {facts.exchange} does not exist yet "
                                    "(the instructor's first release creates it)"))
        elif not os.access(facts.exchange, os.W_OK):
            findings.append(Finding("error", f"nbgrader exchange {facts.exchange} is not writable: "
                                    "students cannot submit (ask the admin: chmod 1777)"))
        else:
            findings.append(Finding("ok", f"nbgrader exchange {facts.exchange} is writable"))
    if facts.free_disk_gib is not None:
        if facts.free_disk_gib < 10:
            findings.append(Finding("warn", f"only {facts.free_disk_gib:.1f} GiB free disk for data and checkpoints"))
        else:
            findings.append(Finding("ok", f"{facts.free_disk_gib:.0f} GiB free disk"))
    if facts.free_memory_gib is not None:
        if facts.free_memory_gib < 8:
            findings.append(Finding("warn", f"only {facts.free_memory_gib:.1f} GiB of memory available: "
                                    "use fewer DataLoader workers (--workers 2) or a smaller batch"))
        else:
            findings.append(Finding("ok", f"{facts.free_memory_gib:.0f} GiB of memory available"))
    if facts.nbgrader_lab is False:
        findings.append(Finding("error", "nbgrader's JupyterLab extension is missing: no Assignment List to "
                                "fetch and submit (`make setup` installs it with nbgrader)"))
    elif facts.nbgrader_lab:
        findings.append(Finding("ok", "nbgrader's JupyterLab extension (Assignment List, Validate) is installed"))
    if facts.bubblewrap == "missing":
        findings.append(Finding("warn", "bubblewrap is not installed: TAs cannot grade in a sandbox "
                                "(`apt-get install bubblewrap`; students do not need it)"))
    elif facts.bubblewrap not in (None, "ok"):
        findings.append(Finding("warn", f"bubblewrap cannot make a sandbox here: {facts.bubblewrap} (unprivileged "
                                "user namespaces may be off: sysctl kernel.unprivileged_userns_clone=1)"))
    elif facts.bubblewrap == "ok":
        findings.append(Finding("ok", "bubblewrap makes sandboxes (for grading)"))
    if facts.process_limit is not None:
        mechanism, detail = facts.process_limit
        if mechanism in ("cgroup2", "cgroup1", "nproc"):
            findings.append(Finding("ok", f"sandboxed kernels' processes are capped ({mechanism}): {detail}"))
        else:   # "none" says itself what to change; "unknown" says why it could not be checked
            findings.append(Finding("warn", f"sandboxed kernels' processes are not capped: {detail}"))
    return findings


def gather(datasets: tuple[str, ...] = ("mnist",)) -> Facts:
    import torch

    facts = Facts(python=platform.python_version(), torch=torch.__version__,
                  torch_cuda=torch.version.cuda, arch_list=[], driver=_driver_version())
    if torch.cuda.is_available():
        facts.arch_list = list(torch.cuda.get_arch_list())
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            facts.gpus.append(GPU(i, props.name, (props.major, props.minor), props.total_memory / 2**30))
    try:
        from gankit.data import dataset_dir, default_root, verify
        facts.data_root = default_root()
        for name in datasets:
            if not dataset_dir(name).exists():
                facts.datasets[name] = "missing"
            else:
                problems = verify(name)
                facts.datasets[name] = "verified" if not problems else "; ".join(problems)
    except Exception as err:  # a broken data package must not hide the GPU report
        facts.datasets["(data)"] = f"could not check: {err}"
    try:
        from grading.course import load_course
        facts.exchange = load_course().exchange_dir
    except Exception:
        pass
    probe = facts.data_root if facts.data_root and facts.data_root.exists() else Path.home()
    facts.free_disk_gib = shutil.disk_usage(probe).free / 2**30
    facts.free_memory_gib = _available_memory_gib()
    facts.bubblewrap = _bubblewrap_state()
    try:
        from grading.sandbox import process_limit
        limit = process_limit()
        facts.process_limit = (limit.mechanism, limit.detail)
    except Exception as err:  # the grading package missing or broken must not hide the rest
        facts.process_limit = ("unknown", f"could not check: {err}")
    facts.nbgrader_lab = (Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "@jupyter" / "nbgrader").is_dir()
    return facts


def _available_memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _bubblewrap_state() -> str:
    """"ok" when ``bwrap`` runs a command in a fresh namespace, else "missing" or its error."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "missing"
    try:
        result = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    return "ok" if result.returncode == 0 else (result.stderr.strip() or f"exit {result.returncode}")


def _driver_version() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        return out[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def render(findings: list[Finding]) -> str:
    marks = {"ok": "  ok ", "warn": "WARN ", "error": "FAIL "}
    return "\n".join(marks[f.level] + f.message for f in findings)


def main(args=None) -> int:
    findings = diagnose(gather())
    print(render(findings))
    return 1 if any(f.level == "error" for f in findings) else 0
