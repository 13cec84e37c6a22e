"""Where a batch keeps secrets for a while, and how the next run finds what a crash left behind.

Everything a batch writes outside its results carries its owner in its name, ``~PID@HOST~``: job
scratch courses (answer keys, a gradebook copy), answer-key builds and sandboxed kernels' socket
folders under the system's temp folder, gradebook snapshots under ``<runtime>/grading/``,
half-written ``.<a>.new~...`` and ``.<a>.old~...`` folders beside
``autograded/<student>/<assignment>``. A leftover whose owner ran on
this host and is no longer running is removed by :func:`remove_stale` (each `gankit grade` calls
it; ``gankit grade --clean`` does nothing else). Leftovers of another host are that host's to
remove: its process may still be running.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
from pathlib import Path

SCRATCH_PREFIX = "gankit-grade"
KEY_PREFIX = "gankit-key"
KERNEL_PREFIX = "gankit-kernel"   # a sandboxed kernel's sockets and home
SNAPSHOT_PREFIX = "gradebook-snapshot"
_TAG = re.compile(r"~(?P<pid>\d+)@(?P<host>[^~/]+)~")


def host() -> str:
    return platform.node().replace("~", "-") or "localhost"


def owner_tag() -> str:
    """``~PID@HOST~`` of this process: put in every name the next run may have to clean up."""
    return f"~{os.getpid()}@{host()}~"


def scratch_dir(kind: str, label: str = "") -> Path:
    """A new private folder under the temp folder, ``<kind>~PID@HOST~<label>-XXXX``, mode 0700."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:40]
    return Path(tempfile.mkdtemp(prefix=f"{kind}{owner_tag()}{safe}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's process
    return True


def is_stale(name: str) -> bool:
    """Whether NAME carries an owner tag of a process of this host that is no longer running."""
    match = _TAG.search(name)
    if match is None or match["host"] != host():
        return False
    pid = int(match["pid"])
    return pid != os.getpid() and not _alive(pid)


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError:
        return False   # not ours to remove (another user's): left for them
    return True


def remove_stale_scratch() -> list[Path]:
    """Remove job scratch and answer-key build folders under the temp folder left by dead processes."""
    removed = []
    temp = Path(tempfile.gettempdir())
    for prefix in (SCRATCH_PREFIX, KEY_PREFIX, KERNEL_PREFIX):
        for path in sorted(temp.glob(f"{prefix}~*")):
            if is_stale(path.name) and _remove(path):
                removed.append(path)
    return removed


def remove_stale(runtime_dir: Path) -> list[Path]:
    """Remove every leftover of a dead batch of this host: scratch, snapshots, half-swapped folders."""
    removed = remove_stale_scratch()
    grading = runtime_dir / "grading"
    candidates = sorted(grading.glob(f"{SNAPSHOT_PREFIX}~*")) if grading.is_dir() else []
    autograded = runtime_dir / "autograded"
    if autograded.is_dir():
        candidates += sorted(autograded.glob("*/.*.new~*")) + sorted(autograded.glob("*/.*.old~*"))
    for path in candidates:
        if is_stale(path.name) and _remove(path):
            removed.append(path)
    return removed
