"""Copy a folder a student (or a student's kernel) controls without ever leaving it.

``shutil.copytree`` and ``shutil.copy`` follow symbolic links with the rights of whoever copies: a
submission holding ``gb.db -> ../../../gradebook.db`` becomes a regular file with the gradebook's
bytes. Here every entry is opened relative to its parent folder's descriptor with ``O_NOFOLLOW``,
so a link (or a folder swapped for a link while we copy) is never followed, and only regular files
are read. What is not copied is reported as ``(relative path, reason)``:

* a symbolic link (wherever it points: inside the folder is harmless, but telling it apart from
  ``../`` tricks is where bugs live);
* a named pipe, a device, a socket (reading a pipe would hang the grader);
* a regular file with more than one name (a hard link): its bytes may be a file of the grader's
  that the student could name but not read through the exchange.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Iterator

CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK   # NONBLOCK: a pipe swapped in never hangs open()


class OutputTooLarge(Exception):
    """The files exceed the byte budget given to the copy."""

    def __init__(self, total: int, limit: int):
        super().__init__(f"{total} bytes, over the limit of {limit}")
        self.total, self.limit = total, limit


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refusal(name: str, dir_fd: int, mode: int) -> str:
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            target = "?"
        return f"a symbolic link (to {target}): links are not followed"
    return f"{_kind(mode)}: only regular files are graded"


def walk(root: Path, ignore: Callable[[str, list[str]], set] | None = None) -> Iterator[tuple[str, int | None, str]]:
    """Yield ``(relative path, fd, "")`` for each regular file under ROOT (the caller reads, then
    this closes the fd) and ``(relative path, None, reason)`` for each entry refused.

    ``ignore`` is a ``shutil.copytree``-style callable (folder, names) -> names to skip silently.
    ROOT itself must be a real folder, not a link.
    """
    top = os.open(root, _DIR_FLAGS)
    try:
        yield from _walk_fd(top, str(root), "", ignore)
    finally:
        os.close(top)


def _walk_fd(dir_fd: int, shown: str, prefix: str, ignore) -> Iterator[tuple[str, int | None, str]]:
    names = sorted(os.listdir(dir_fd))
    skipped = ignore(shown, names) if ignore else set()
    for name in names:
        if name in skipped:
            continue
        relative = f"{prefix}{name}"
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue   # removed while we looked
        if stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as err:   # swapped for a link or a file since the stat
                yield relative, None, f"not opened without following links ({err.strerror})"
                continue
            try:
                yield from _walk_fd(child, os.path.join(shown, name), relative + "/", ignore)
            finally:
                os.close(child)
            continue
        if not stat.S_ISREG(info.st_mode):
            yield relative, None, _refusal(name, dir_fd, info.st_mode)
            continue
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as err:
            yield relative, None, f"not opened without following links ({err.strerror})"
            continue
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                yield relative, None, _refusal(name, dir_fd, opened.st_mode)
            elif opened.st_nlink > 1:
                yield relative, None, (f"a hard link ({opened.st_nlink} names for one file): its bytes may "
                                       f"belong to someone else, so it is not graded")
            else:
                os.set_blocking(fd, True)
                yield relative, fd, ""
        finally:
            os.close(fd)


def tree_size(root: Path) -> int:
    """Bytes in the regular files under ROOT, links not followed."""
    total = 0
    for _, fd, _ in walk(root):
        if fd is not None:
            total += os.fstat(fd).st_size
    return total


def _copy_fd(fd: int, target: Path, budget: list[int]) -> None:
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                return
            budget[0] += len(chunk)
            if budget[1] and budget[0] > budget[1]:
                raise OutputTooLarge(budget[0], budget[1])
            os.write(out, chunk)
    finally:
        os.close(out)


def copy_tree(src: Path, dest: Path, *, ignore=None, limit_bytes: int = 0) -> list[tuple[str, str]]:
    """Copy the regular files of SRC into DEST (created if need be; its files must not exist yet), in
    chunks; return what was refused as ``[(relative path, reason)]``. Over ``limit_bytes`` (0: none):
    OutputTooLarge."""
    dest.mkdir(parents=True, exist_ok=True)
    refused = []
    budget = [0, limit_bytes]
    for relative, fd, reason in walk(src, ignore):
        if fd is None:
            refused.append((relative, reason))
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_fd(fd, target, budget)
    return refused


def read_tree(src: Path, *, limit_bytes: int = 0) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """({relative path: bytes}, refused) of SRC, for results that must travel to another host."""
    files, refused, total = {}, [], 0
    for relative, fd, reason in walk(src):
        if fd is None:
            refused.append((relative, reason))
            continue
        parts = []
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if limit_bytes and total > limit_bytes:
                raise OutputTooLarge(total, limit_bytes)
            parts.append(chunk)
        files[relative] = b"".join(parts)
    return files, refused


def read_small(path: Path, limit: int = 4096) -> str | None:
    """The text of a small regular file, never through a link; None when absent or not one."""
    try:
        fd = os.open(path, _FILE_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


def describe(refused: list[tuple[str, str]]) -> str:
    """One line for the ledger and the feedback."""
    return "; ".join(f"{path}: {reason}" for path, reason in refused)
