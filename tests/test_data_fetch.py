"""fetch / verify against local fake remotes: file:// URLs and a loopback HTTP server.

No test touches the internet: an autouse guard makes any non-local URL fail like an offline
machine would.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import http.server
import io
import random
import shutil
import stat
import tarfile
import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from gankit.data import DataError, fetch, is_verified, verify
from gankit.data.cli import main as cli_main
from gankit.data.registry import REGISTRY, DatasetSpec, FileSpec

# The package re-exports the function `fetch`, which shadows the submodule attribute.
fetch_module = importlib.import_module("gankit.data.fetch")
UNREACHABLE = "http://127.0.0.1:9/"  # discard port: closed on any sane machine


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    real = urllib.request.urlopen

    def guarded(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if not (url.startswith("file:") or url.startswith("http://127.0.0.1")):
            raise urllib.error.URLError(f"network disabled in tests ({url})")
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


# ------------------------------------------------------------------------------- fake remotes
def _payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split in ("trainA", "trainB", "testA", "testB"):
            zf.writestr(f"toy/{split}/0001.txt", f"{split} image".encode())
    return buf.getvalue()


def _tar_gz_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in ("data_batch_1", "test_batch"):
            data = _payload(5000, seed=len(name))
            info = tarfile.TarInfo(f"toy-batches/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _spec(name: str, filename: str, data: bytes, urls: list[str], extract=None,
          required: tuple[str, ...] | None = None, sha256: str | None = None) -> DatasetSpec:
    f = FileSpec(filename=filename, url=urls[0], mirrors=tuple(urls[1:]), extract=extract,
                 sha256=sha256 or hashlib.sha256(data).hexdigest(), size=len(data))
    return DatasetSpec(name=name, description="test only", files=(f,), layout="test",
                       required=required or (filename,))


def _serve_file(tmp_path: Path, filename: str, data: bytes) -> str:
    remote = tmp_path / "remote"
    remote.mkdir(exist_ok=True)
    (remote / filename).write_bytes(data)
    return (remote / filename).as_uri()


class _Server:
    """Loopback HTTP server for one file; records each request's Range header."""

    def __init__(self, data: bytes, honour_range: bool = True, cut_after: int | None = None):
        self.data, self.honour_range, self.cut_after = data, honour_range, cut_after
        self.ranges: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server naming
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = 0
                if rng and outer.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(outer.data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(outer.data) - 1}/{len(outer.data)}")
                else:
                    self.send_response(200)
                body = outer.data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_after is not None:
                    body = body[:outer.cut_after]  # then hang up: a dropped connection
                    outer.cut_after = None  # only the first transfer fails
                self.wfile.write(body)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"
        # A short poll interval: shutdown() otherwise waits up to 0.5 s per test.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _snapshot(root: Path) -> dict:
    """Everything that changes when anything is written under root."""
    snap = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        snap[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return snap


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()
                  if p.name.endswith((".part", ".tmp")) or p.name.startswith(".extract-"))


# ------------------------------------------------------------------------------------- tests
def test_file_url_download_and_zip_extract(tmp_path):
    data = _zip_bytes()
    spec = _spec("toy", "toy.zip", data, [_serve_file(tmp_path, "toy.zip", data)],
                 extract="zip", required=("toy/trainA", "toy/trainB", "toy/testA", "toy/testB"))
    d = fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    assert d == tmp_path / "cache" / "toy"
    assert (d / "toy.zip").read_bytes() == data  # archive kept for re-verification
    assert (d / "toy" / "trainB" / "0001.txt").read_text() == "trainB image"
    assert (d / ".verified").is_file()
    assert _leftovers(d) == []
    assert verify("toy", tmp_path / "cache", spec=spec) == []
    assert is_verified("toy", tmp_path / "cache", spec=spec)


def test_tar_gz_extract(tmp_path):
    data = _tar_gz_bytes()
    spec = _spec("tarry", "toy.tar.gz", data, [_serve_file(tmp_path, "toy.tar.gz", data)],
                 extract="tar.gz", required=("toy-batches/data_batch_1", "toy-batches/test_batch"))
    d = fetch("tarry", tmp_path / "cache", spec=spec, progress=False)
    assert (d / "toy-batches" / "data_batch_1").read_bytes() == _payload(5000, len("data_batch_1"))
    assert _leftovers(d) == []


def test_http_resume_with_range(tmp_path):
    data = _payload(300_000)
    half = len(data) // 2
    with _Server(data) as server:
        spec = _spec("toy", "file.bin", data, [server.url])
        d = tmp_path / "cache" / "toy"
        d.mkdir(parents=True)
        (d / "file.bin.part").write_bytes(data[:half])
        fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    assert server.ranges == [f"bytes={half}-"]
    assert (d / "file.bin").read_bytes() == data
    assert not (d / "file.bin.part").exists()
    assert verify("toy", tmp_path / "cache", spec=spec) == []


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    data = _payload(200_000, seed=1)
    with _Server(data, honour_range=False) as server:
        spec = _spec("toy", "file.bin", data, [server.url])
        d = tmp_path / "cache" / "toy"
        d.mkdir(parents=True)
        # A stale partial that is NOT a prefix: appending the 200 body to it would corrupt.
        (d / "file.bin.part").write_bytes(b"x" * 1000)
        fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    assert server.ranges == ["bytes=1000-"]
    assert (d / "file.bin").read_bytes() == data


def test_dropped_connection_keeps_part_and_next_fetch_resumes(tmp_path):
    data = _payload(250_000, seed=2)
    with _Server(data, cut_after=100_000) as server:
        spec = _spec("toy", "file.bin", data, [server.url])
        with pytest.raises(DataError) as err:
            fetch("toy", tmp_path / "cache", spec=spec, progress=False)
        assert "resumes" in str(err.value)
        part = tmp_path / "cache" / "toy" / "file.bin.part"
        assert part.stat().st_size == 100_000
        fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    assert server.ranges == [None, "bytes=100000-"]
    assert (tmp_path / "cache" / "toy" / "file.bin").read_bytes() == data


def test_wrong_sized_answer_from_primary_does_not_poison_the_mirror(tmp_path):
    data = _payload(40_000, seed=8)
    with _Server(b"<html>please log in</html>") as portal, _Server(data) as mirror:
        spec = _spec("toy", "file.bin", data, [portal.url, mirror.url])
        d = fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    assert portal.ranges == [None]
    assert mirror.ranges == [None]  # nothing of the login page was kept to resume from
    assert (d / "file.bin").read_bytes() == data


def test_checksum_mismatch_moves_file_aside(tmp_path):
    data = _payload(10_000, seed=3)
    wrong = hashlib.sha256(b"something else").hexdigest()
    spec = _spec("toy", "file.bin", data, [_serve_file(tmp_path, "file.bin", data)],
                 sha256=wrong)
    with pytest.raises(DataError) as err:
        fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    message = str(err.value)
    d = tmp_path / "cache" / "toy"
    assert wrong in message
    assert hashlib.sha256(data).hexdigest() in message
    assert str(d / "file.bin") in message and "file.bin.corrupt" in message
    assert (d / "file.bin.corrupt").read_bytes() == data  # kept, not deleted
    assert not (d / "file.bin").exists() and not (d / "file.bin.part").exists()
    assert not (d / ".verified").exists()


def test_unreachable_url_message_tells_how_to_place_the_file(tmp_path):
    spec = _spec("toy", "file.bin", b"abc", [UNREACHABLE + "file.bin"])
    with pytest.raises(DataError) as err:
        fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    message = str(err.value)
    assert UNREACHABLE + "file.bin" in message
    assert str(tmp_path / "cache" / "toy" / "file.bin") in message
    assert "gankit data verify toy" in message


def test_mirror_used_when_primary_fails(tmp_path):
    data = _payload(5000, seed=4)
    spec = _spec("toy", "file.bin", data,
                 [UNREACHABLE + "file.bin", _serve_file(tmp_path, "file.bin", data)])
    d = fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    assert (d / "file.bin").read_bytes() == data


def test_second_fetch_of_verified_dataset_writes_nothing(tmp_path, monkeypatch):
    data = _zip_bytes()
    url = _serve_file(tmp_path, "toy.zip", data)
    spec = _spec("toy", "toy.zip", data, [url], extract="zip",
                 required=("toy/trainA", "toy/testB"))
    root = tmp_path / "cache"
    d = fetch("toy", root, spec=spec, progress=False)
    (tmp_path / "remote" / "toy.zip").unlink()  # any download attempt would now fail
    before = _snapshot(root)

    def must_not_run(*args):
        raise AssertionError("the verified fast path should neither hash nor probe for writes")

    monkeypatch.setattr(fetch_module, "sha256_file", must_not_run)
    monkeypatch.setattr(fetch_module, "_writable", must_not_run)
    modes = {p: p.stat().st_mode for p in [root, d, *d.rglob("*")]}
    try:
        for p in modes:
            p.chmod(stat.S_IMODE(modes[p]) & ~0o222)  # read-only, as on a class server
        assert fetch("toy", root, spec=spec, progress=False) == d
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))
    assert _snapshot(root) == before


def test_hand_placed_file_is_accepted(tmp_path):
    data = _payload(8000, seed=5)
    spec = _spec("toy", "file.bin", data, [UNREACHABLE + "file.bin"])
    d = tmp_path / "cache" / "toy"
    d.mkdir(parents=True)
    (d / "file.bin").write_bytes(data)
    assert fetch("toy", tmp_path / "cache", spec=spec, progress=False) == d
    assert (d / ".verified").is_file()


def test_hand_placed_wrong_file_is_kept_aside_not_deleted(tmp_path):
    data = _payload(8000, seed=6)
    spec = _spec("toy", "file.bin", data, [UNREACHABLE + "file.bin"])
    d = tmp_path / "cache" / "toy"
    d.mkdir(parents=True)
    (d / "file.bin").write_bytes(b"not it")
    with pytest.warns(RuntimeWarning, match="corrupt"), pytest.raises(DataError):
        fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    assert (d / "file.bin.corrupt").read_bytes() == b"not it"


def test_read_only_cache_with_missing_files(tmp_path, monkeypatch):
    # Tests run as root, where chmod does not stop writes: simulate the read-only mount.
    monkeypatch.setattr(fetch_module, "_writable", lambda d: False)
    spec = _spec("toy", "file.bin", b"abc", [UNREACHABLE + "file.bin"])
    with pytest.raises(DataError) as err:
        fetch("toy", tmp_path / "cache", spec=spec, progress=False)
    message = str(err.value)
    assert "read-only" in message and "GANKIT_DATA" in message and "admin" in message
    assert not (tmp_path / "cache").exists()


def test_read_only_complete_copy_without_marker_is_used_as_is(tmp_path, monkeypatch):
    data = _payload(3000, seed=7)
    spec = _spec("toy", "file.bin", data, [UNREACHABLE + "file.bin"])
    d = tmp_path / "cache" / "toy"
    d.mkdir(parents=True)
    (d / "file.bin").write_bytes(data)
    monkeypatch.setattr(fetch_module, "_writable", lambda d: False)
    before = _snapshot(tmp_path / "cache")
    assert fetch("toy", tmp_path / "cache", spec=spec, progress=False) == d
    assert _snapshot(tmp_path / "cache") == before


def test_verify_recomputes_and_fetch_reextracts_without_download(tmp_path):
    data = _zip_bytes()
    spec = _spec("toy", "toy.zip", data, [_serve_file(tmp_path, "toy.zip", data)],
                 extract="zip", required=("toy/trainA", "toy/testB"))
    root = tmp_path / "cache"
    d = fetch("toy", root, spec=spec, progress=False)
    offline = dataclasses.replace(
        spec, files=(dataclasses.replace(spec.files[0], url=UNREACHABLE + "toy.zip"),))
    # Lost extracted folder: verify says how to fix, fetch re-unpacks from the kept archive.
    shutil.rmtree(d / "toy")
    problems = verify("toy", root, spec=offline)
    assert len(problems) == 2 and all("gankit data fetch toy" in p for p in problems)
    fetch("toy", root, spec=offline, progress=False)
    assert verify("toy", root, spec=offline) == []
    # Same-size corruption: the marker fast path cannot see it, verify must.
    raw = bytearray((d / "toy.zip").read_bytes())
    raw[-1] ^= 0xFF
    (d / "toy.zip").write_bytes(bytes(raw))
    problems = verify("toy", root, spec=offline)
    assert len(problems) == 1 and "sha256" in problems[0]


def test_verify_of_absent_dataset(tmp_path):
    spec = _spec("toy", "file.bin", b"abc", [UNREACHABLE + "file.bin"])
    problems = verify("toy", tmp_path, spec=spec)
    assert problems and "gankit data fetch toy" in problems[0]


def test_spec_name_must_match(tmp_path):
    spec = _spec("toy", "file.bin", b"abc", [UNREACHABLE + "file.bin"])
    with pytest.raises(ValueError):
        fetch("other", tmp_path, spec=spec)


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="known datasets: .*mnist"):
        fetch("no_such_set", tmp_path)


def test_kodak_entry_fetches_and_verifies_single_pngs(tmp_path):
    # The real entry with each file re-pinned to a local stand-in: 24 plain PNGs, no archive.
    from gankit.data.synthetic import write_synthetic

    src = write_synthetic("kodak", tmp_path / "src")
    payload = {f.filename: (src / f.filename).read_bytes() for f in REGISTRY["kodak"].files}
    files = tuple(dataclasses.replace(f, url=_serve_file(tmp_path, f.filename, data),
                                      sha256=hashlib.sha256(data).hexdigest(), size=len(data))
                  for f, data in zip(REGISTRY["kodak"].files, payload.values()))
    spec = dataclasses.replace(REGISTRY["kodak"], files=files)
    root = tmp_path / "cache"
    d = fetch("kodak", root, spec=spec, progress=False)
    assert d == root / "kodak" and is_verified("kodak", root, spec=spec)
    assert verify("kodak", root, spec=spec) == []
    assert {name: (d / name).read_bytes() for name in payload} == payload
    assert _leftovers(d) == []
    (d / "kodim07.png").unlink()
    problems = verify("kodak", root, spec=spec)
    assert len(problems) == 1 and "kodim07.png is missing" in problems[0]


# --------------------------------------------------------------------------------------- CLI
def test_cli_fetch_offline_real_entry_prints_message_not_traceback(tmp_path, capsys):
    code = cli_main(["data", "fetch", "mnist", "--root", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    assert "https://storage.googleapis.com/cvdf-datasets/mnist/" in err
    assert "gankit data verify mnist" in err
    assert str(tmp_path / "mnist") in err


def test_cli_unknown_name_and_verify_exit_codes(tmp_path, capsys):
    assert cli_main(["data", "verify", "nope", "--root", str(tmp_path)]) == 1
    assert "known datasets" in capsys.readouterr().err
    assert cli_main(["data", "verify", "cifar10", "--root", str(tmp_path)]) == 1
    assert "gankit data fetch cifar10" in capsys.readouterr().err


def test_cli_list(tmp_path, capsys):
    assert cli_main(["data", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion_mnist", "cifar10", "horse2zebra", "kodak"):
        assert name in out
    assert "missing" in out and "162.6 MiB" in out  # cifar10's tarball
    assert any(line.split()[:4] == ["kodak", "14.7", "MiB", "missing"] for line in out.splitlines())


def test_cli_add_parser_sets_func():
    import argparse

    from gankit.data.cli import add_parser

    parser = argparse.ArgumentParser(prog="gankit")
    add_parser(parser.add_subparsers(dest="command"))
    for argv in (["data", "list"], ["data", "fetch", "mnist"], ["data", "verify", "mnist"],
                 ["data", "synthetic", "mnist", "/tmp/x"]):
        assert callable(parser.parse_args(argv).func)
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        parser.parse_args(["data"])  # a subcommand is required

