"""Write constraints.txt from the running environment (`make lock`)."""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from grading.course import REPO_ROOT

# torch pins its own CUDA runtime; leaving these out lets a CUDA-12 torch build use the same file.
SKIP = re.compile(r"^(nvidia-|cuda-|triton$|gankit$|pip$|setuptools$|wheel$)", re.IGNORECASE)


def freeze() -> str:
    header = []
    current = Path(REPO_ROOT / "constraints.txt")
    if current.exists():
        header = [ln for ln in current.read_text().splitlines() if ln.startswith("#")]
    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                   if not SKIP.match(d.metadata["Name"] or "")}, key=str.lower)
    return "\n".join(header + pins) + "\n"
