"""`gankit doctor`: is this server ready to train and grade?

This module checks the machine a student trains on. Facts are gathered in one place (`gather`)
and judged by a pure function (`diagnose`), so every verdict is tested with faked facts: no GPU,
an architecture the installed torch build was not compiled for (a V100 with a CUDA-13 build), a
missing dataset, little disk or memory.

The library never imports the course application: the course's checks (course.yml, the nbgrader
exchange and Assignment List, the TAs' sandbox and process limit) come from the packages that
register a function in the ``gankit.doctor`` entry-point group (grading/doctor.py, named in
pyproject.toml). Each returns a list of `Finding`; one that cannot run is a warning, and a machine
with none installed still gets the rest of the report.
"""
from __future__ import annotations

import os

import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DOCTOR_GROUP = "gankit.doctor"
CUDA12_HINT = ("install a CUDA-12 build of torch: `make clean-venv setup "
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
    free_disk_gib: float | None = None
    free_memory_gib: float | None = None


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
    probe = facts.data_root if facts.data_root and facts.data_root.exists() else Path.home()
    facts.free_disk_gib = shutil.disk_usage(probe).free / 2**30
    facts.free_memory_gib = _available_memory_gib()
    return facts


def registered_findings() -> list[Finding]:
    """The verdicts of every ``gankit.doctor`` entry point installed, in the order of their names."""
    from importlib.metadata import entry_points

    by_name = {}
    for entry in entry_points(group=DOCTOR_GROUP):
        by_name.setdefault(entry.name, entry)   # a package seen twice on sys.path lists its checks twice
    findings = []
    for name in sorted(by_name):
        try:
            findings.extend(by_name[name].load()())
        except Exception as err:  # a broken plugin must not hide the machine's report
            findings.append(Finding("warn", f"the {name} checks ({by_name[name].value}) could not run: "
                                    f"{type(err).__name__}: {err}"))
    return findings


def _available_memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


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
    role = getattr(args, "role", None)
    if role:   # read by the registered checks (gankit itself has no roles)
        os.environ["GANKIT_ROLE"] = role
    findings = diagnose(gather()) + registered_findings()
    print(render(findings))
    return 1 if any(f.level == "error" for f in findings) else 0
