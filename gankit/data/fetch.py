"""Download, verify and unpack the course datasets into one cache that many users can share.

Layout: ``<root>/<name>/`` holds the downloaded files under their official names (archives are
kept, so ``verify`` can recheck them), whatever they unpack to, and a small ``.verified`` marker
with the SHA-256s that were checked. ``<root>`` is the ``root`` argument, else ``$GANKIT_DATA``,
else ``$XDG_CACHE_HOME/gankit``, else ``~/.cache/gankit``.

A dataset whose marker matches returns at once and nothing is written, so a class server can
give every student one read-only copy. Downloads go to ``<file>.part`` and resume from there.
A file is renamed into place only once its size and SHA-256 match the registry; a bad one is
moved aside to ``<file>.corrupt``, never deleted. A file the registry gives no URL (CelebA's
Google Drive copies) is placed in ``<root>/<name>/`` by hand; ``fetch`` checks it like a download
(leaving a wrong copy where it is) and otherwise says where to get it.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

from gankit.data.registry import DataError, DatasetSpec, FileSpec, get_spec
from gankit.io import atomic_write_text

MARKER = ".verified"
_CHUNK = 1 << 20
_TIMEOUT_S = 60
# Some servers refuse urllib's default agent; saying who we are is also polite.
_USER_AGENT = "gankit-data/0.1 (GAN course lab kit; python-urllib)"


class _TransferError(Exception):
    """A network-level failure of one URL; the next mirror may still work."""


# --------------------------------------------------------------------------------- locations
def default_root() -> Path:
    """The cache root used when no ``root`` is given.

    ``$GANKIT_DATA`` if set, else ``$XDG_CACHE_HOME/gankit`` (when absolute, as the XDG spec
    requires), else ``~/.cache/gankit``.
    """
    env = os.environ.get("GANKIT_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "gankit"


def _resolve(name: str, spec: DatasetSpec | None) -> DatasetSpec:
    if spec is None:
        return get_spec(name)
    if name != spec.name:
        raise ValueError(f"name {name!r} does not match spec.name {spec.name!r}")
    return spec


def dataset_dir(name: str, root: str | os.PathLike | None = None, *,
                spec: DatasetSpec | None = None) -> Path:
    """Directory of dataset ``name``: ``<root>/<name>``. Nothing is created or checked."""
    spec = _resolve(name, spec)
    base = Path(root).expanduser() if root is not None else default_root()
    return base / spec.name


# ------------------------------------------------------------------------------------ checks
def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (memory stays flat for multi-GB archives)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def check_layout(name: str, path: str | os.PathLike, *,
                 spec: DatasetSpec | None = None) -> list[str]:
    """Check that every path the dataset needs exists under ``path``; no checksums involved.

    This is the check shared by real downloads (inside ``verify``) and the synthetic copies.

    Returns
    -------
    list of str
        One ``"missing: <path>"`` line per absent path; empty when the layout is complete.
    """
    spec = _resolve(name, spec)
    base = Path(path)
    return [f"missing: {base / rel}" for rel in spec.required if not (base / rel).exists()]


def _file_problem(f: FileSpec, path: Path) -> str | None:
    """Why ``path`` is not the file ``f`` describes, or None when it is."""
    size = path.stat().st_size
    if size != f.size:
        return f"has {size} bytes, expected {f.size} (incomplete or a different file)"
    actual = sha256_file(path)
    if actual != f.sha256:
        return f"has sha256 {actual}, expected {f.sha256}"
    return None


def verify(name: str, root: str | os.PathLike | None = None, *,
           spec: DatasetSpec | None = None) -> list[str]:
    """Recompute every checksum and check the unpacked layout; writes nothing.

    Returns
    -------
    list of str
        Human-readable problems, each saying what to do; empty when the dataset is complete.
    """
    spec = _resolve(name, spec)
    d = dataset_dir(spec.name, root, spec=spec)
    if not d.is_dir():
        return [f"{d} does not exist: run `gankit data fetch {spec.name}`"]
    problems = []
    for f in spec.files:
        path = d / f.filename
        if not path.is_file():
            if not f.urls:
                problems.append(f"{path} is missing: get it by hand from {spec.homepage} "
                                f"({f.manual}), put it there and run `gankit data fetch "
                                f"{spec.name}`")
                continue
            problems.append(f"{path} is missing: run `gankit data fetch {spec.name}`, or "
                            f"download {f.url} yourself and put it there")
            continue
        problem = _file_problem(f, path)
        if problem:
            problems.append(f"{path} {problem}: delete it and run `gankit data fetch "
                            f"{spec.name}`")
    downloaded = {f.filename for f in spec.files}
    for rel in spec.required:
        if rel not in downloaded and not (d / rel).exists():
            problems.append(f"{d / rel} is missing: run `gankit data fetch {spec.name}` to "
                            "unpack it (nothing is downloaded again when the archive is there)")
    return problems


def _marker_ok(spec: DatasetSpec, d: Path) -> bool:
    """True if the marker records exactly the registry's checksums and nothing looks changed.

    Only sizes are re-read here; full hashing is what ``verify`` is for.
    """
    try:
        recorded = json.loads((d / MARKER).read_text(encoding="utf-8"))["files"]
        for f in spec.files:
            entry = recorded[f.filename]
            if entry["sha256"] != f.sha256 or entry["size"] != f.size:
                return False
            if (d / f.filename).stat().st_size != f.size:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return not check_layout(spec.name, d, spec=spec)


def is_verified(name: str, root: str | os.PathLike | None = None, *,
                spec: DatasetSpec | None = None) -> bool:
    """True if ``fetch`` would return at once (marker matches, sizes and layout fine)."""
    spec = _resolve(name, spec)
    return _marker_ok(spec, dataset_dir(spec.name, root, spec=spec))


def _write_marker(spec: DatasetSpec, d: Path) -> None:
    files = {f.filename: {"sha256": f.sha256, "size": f.size} for f in spec.files}
    atomic_write_text(d / MARKER, json.dumps({"dataset": spec.name, "files": files}, indent=1))


def _writable(d: Path) -> bool:
    """Can we create files in ``d`` (creating ``d`` if needed)? Tried, not guessed from modes."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    """Serialise fetches of one dataset, so two users on a shared cache never share a .part."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent fetches there are the user's business
        yield
        return
    with open(d / ".lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------- download
def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _announced_size(response, resumed: bool) -> int | None:
    """Total file size the server claims, if it says (Content-Range total or Content-Length)."""
    try:
        if resumed:
            total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
            return int(total) if total.isdigit() else None
        length = response.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None
    except (AttributeError, ValueError):
        return None


def _progress_bar(total: int, initial: int, label: str, enabled: bool):
    # Plain tqdm, not tqdm.auto: widget bars bloat papermill-executed notebooks.
    from tqdm import tqdm  # imported here so `import gankit.data` stays light

    return tqdm(total=total, initial=initial, desc=label, unit="B", unit_scale=True,
                unit_divisor=1024, disable=not enabled, file=sys.stderr)


def _download_one(url: str, part: Path, size: int, label: str, progress: bool,
                  _retried: bool = False) -> None:
    """Bring ``part`` up to ``size`` bytes from ``url``, resuming what is already there.

    Raises ``_TransferError`` on any network failure; what arrived stays in ``part``.
    """
    have = part.stat().st_size if part.exists() else 0
    if have > size:  # cannot be a prefix of the right file
        part.unlink()
        have = 0
    if have == size:
        return  # complete already; the checksum decides whether it is right
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have and not _retried:
            # The server disowns our partial file: start from zero, once.
            part.unlink()
            return _download_one(url, part, size, label, progress, _retried=True)
        raise _TransferError(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise _TransferError(str(err.reason)) from err
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise _TransferError(f"{type(err).__name__}: {err}") from err
    with response:
        status = getattr(response, "status", None)  # None for file:// URLs
        resumed = (have > 0 and status == 206
                   and _content_range_start(response.headers.get("Content-Range")) == have)
        if status == 206 and not resumed:
            part.unlink(missing_ok=True)  # a range we did not ask for: useless, start over
            raise _TransferError("server sent an unexpected byte range; discarded the partial "
                                 "file")
        if not resumed:
            # 200 (Range ignored) or a file:// URL: the body is the whole file, so rewrite it.
            have = 0
        announced = _announced_size(response, resumed)
        if announced is not None and announced != size:
            # An error or login page served with 200, or another version of the file: do not
            # let it into the .part, where the next mirror would resume on top of it.
            raise _TransferError(f"server offers {announced} bytes, expected {size}: not the "
                                 "expected file (error or login page?)")
        try:
            with open(part, "ab" if resumed else "wb") as out, \
                    _progress_bar(size, have, label, progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise _TransferError(f"transfer interrupted: {type(err).__name__}: {err}") from err
    got = part.stat().st_size
    if got < size:
        raise _TransferError(f"connection closed after {got} of {size} bytes")


def _offline_message(spec: DatasetSpec, f: FileSpec, dest: Path, errors: list[str]) -> str:
    tried = "\n".join(f"  {e}" for e in errors)
    return (
        f"could not download {f.filename} for dataset {spec.name!r}:\n{tried}\n"
        f"If this machine is offline or the site is blocked, download {f.url} yourself "
        f"({f.size} bytes) and put it at {dest}, then run `gankit data verify {spec.name}`. "
        f"Otherwise run `gankit data fetch {spec.name}` again: it resumes where it stopped."
    )


def _download(spec: DatasetSpec, f: FileSpec, dest: Path, progress: bool) -> None:
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in f.urls:
        try:
            _download_one(url, part, f.size, f.filename, progress)
            break
        except _TransferError as err:
            errors.append(f"{url}: {err}")
    else:
        raise DataError(_offline_message(spec, f, dest, errors))
    problem = _file_problem(f, part)
    if problem:
        corrupt = dest.with_name(dest.name + ".corrupt")
        actual = sha256_file(part)
        os.replace(part, corrupt)
        raise DataError(
            f"checksum mismatch for {dest}: expected sha256 {f.sha256} ({f.size} bytes), got "
            f"sha256 {actual} ({corrupt.stat().st_size} bytes). The bad download was moved "
            f"aside to {corrupt} (delete it when done). Run `gankit data fetch {spec.name}` "
            f"again; if it fails the same way, a proxy or mirror is altering the file: "
            f"download {f.url} on another network and put it at {dest}."
        )
    os.replace(part, dest)


def _manual_message(spec: DatasetSpec, d: Path, problem: str) -> str:
    """What to do about a file that cannot be downloaded automatically (no URL)."""
    listing = "\n".join(
        f"  {g.filename} ({g.size} bytes, sha256 {g.sha256})" + (f": {g.manual}" if g.manual
                                                                 else "")
        for g in spec.files if not g.urls)
    return (
        f"{problem}.\nDataset {spec.name!r} cannot be downloaded automatically: get these files "
        f"by hand from {spec.homepage} (after accepting its terms)\n{listing}\n"
        f"and put them in {d}/ under exactly these names, without unpacking them. Then run "
        f"`gankit data fetch {spec.name}` again: it checks the sha256 and unpacks the archives."
    )


def _ensure_file(spec: DatasetSpec, f: FileSpec, d: Path, progress: bool) -> None:
    dest = d / f.filename
    if not f.urls:  # placed by hand or not at all: check it, never rename or replace it
        if not dest.is_file():
            raise DataError(_manual_message(spec, d, f"{dest} is missing"))
        problem = _file_problem(f, dest)
        if problem:
            raise DataError(_manual_message(
                spec, d, f"{dest} {problem}: it is not the official file (an interrupted "
                         f"download, or another version); replace it"))
        return
    if dest.is_file():
        problem = _file_problem(f, dest)
        if problem is None:
            return  # downloaded earlier or placed by hand: either way it is the right bytes
        corrupt = dest.with_name(dest.name + ".corrupt")
        os.replace(dest, corrupt)
        warnings.warn(f"{dest} {problem}; moved it aside to {corrupt} and downloading it again",
                      RuntimeWarning, stacklevel=3)
    _download(spec, f, dest, progress)


# ----------------------------------------------------------------------------------- extract
def _safe_tar_extract(archive: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        archive.extractall(dest, filter="data")
        return
    # Older Pythons: refuse anything that would land outside dest or is not a plain file/dir.
    root = dest.resolve()
    for member in archive.getmembers():
        target = (dest / member.name).resolve()
        if not (member.isfile() or member.isdir()) or root not in (target, *target.parents):
            raise tarfile.TarError(f"refusing unsafe member {member.name!r}")
    archive.extractall(dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _extract(spec: DatasetSpec, f: FileSpec, d: Path) -> None:
    """Unpack into a temporary directory beside the target, then rename each top-level entry
    into place, so an interrupted unpack never leaves a half-filled tree that looks complete."""
    archive = d / f.filename
    keep = {MARKER, ".lock", *(g.filename for g in spec.files)}
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=d))
    try:
        if f.extract == "zip":
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)  # zipfile already strips absolute paths and '..'
        elif f.extract == "tar.gz":
            with tarfile.open(archive, "r:gz") as tf:
                _safe_tar_extract(tf, tmp)
        else:
            raise DataError(f"{spec.name}: unknown extract kind {f.extract!r}")
        for entry in sorted(tmp.iterdir()):
            if entry.name in keep:
                raise DataError(f"{archive} contains {entry.name!r}, which would overwrite a "
                                "downloaded file; the archive is not the expected one")
            target = d / entry.name
            if target.exists() or target.is_symlink():
                _remove(target)  # an older unpack of the same archive
            os.replace(entry, target)
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as err:
        raise DataError(
            f"could not unpack {archive}: {type(err).__name__}: {err}. Check free disk space "
            f"in {d}; if the archive is damaged, delete it and run `gankit data fetch "
            f"{spec.name}`"
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------- fetch
def fetch(name: str, root: str | os.PathLike | None = None, *, progress: bool = True,
          spec: DatasetSpec | None = None) -> Path:
    """Make dataset ``name`` available locally and return its directory.

    Parameters
    ----------
    name : str
        A registry name (``gankit data list``), or the name of ``spec``.
    root : path, optional
        Cache root; the dataset lives in ``<root>/<name>``. Default: see ``default_root``.
    progress : bool
        Show a tqdm bar per download.
    spec : DatasetSpec, optional
        Use this description instead of the registry's (tests, course-specific extras).

    Returns
    -------
    pathlib.Path
        ``<root>/<name>``, complete and verified.

    Raises
    ------
    DataError
        Unknown name, download failure (with how to place the file by hand), checksum mismatch
        (the bad file kept as ``<file>.corrupt``), a missing or wrong hand-placed file (with the
        page to get it from), unusable archive, or a read-only cache that lacks files.
    """
    spec = _resolve(name, spec)
    d = dataset_dir(spec.name, root, spec=spec)
    if _marker_ok(spec, d):
        return d  # the common case: nothing is read beyond a few stats, nothing is written
    if not _writable(d):
        problems = verify(spec.name, d.parent, spec=spec)
        if problems:
            raise DataError(
                f"the data directory {d} is read-only (or cannot be created) and dataset "
                f"{spec.name!r} is not complete there:\n  " + "\n  ".join(problems) + "\n"
                f"Set GANKIT_DATA to a folder you can write (e.g. `export "
                f"GANKIT_DATA=$HOME/gankit-data`), or ask the course admin to run `gankit data "
                f"fetch {spec.name}` on the shared copy."
            )
        return d  # a complete shared copy without a marker: fine, and we leave it untouched
    with _locked(d):
        if _marker_ok(spec, d):
            return d  # another process finished while we waited for the lock
        for f in spec.files:
            _ensure_file(spec, f, d, progress)
        if check_layout(spec.name, d, spec=spec):
            for f in spec.files:
                if f.extract:
                    _extract(spec, f, d)
        missing = check_layout(spec.name, d, spec=spec)
        if missing:
            raise DataError(
                f"{spec.name}: the archives verified but their contents are not laid out as "
                f"expected ({'; '.join(missing)}). Report this to the course staff."
            )
        _write_marker(spec, d)
    return d
