"""Write files so that nothing is ever left half-written.

Every checkpoint, grade file, CSV and downloaded archive goes through ``atomic_write``: the bytes
land in a temporary file in the same directory, are flushed to disk, and only then renamed over
the target. A crash or Ctrl-C in the middle leaves the previous version intact.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, private: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success, fsync it and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched. ``private``: the file
    stays readable by its owner alone (0600) from its first byte, e.g. for tokens.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write supports mode 'w' or 'wb'")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file private (0600); give it the usual umask-based mode so checkpoints
        # and grade files on a shared class server stay readable as any other file would be.
        if not private:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_name, 0o666 & ~umask)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)
