"""The course's nbgrader exchange, served over HTTP to students' servers that share no folder with it.

The instructor runs this on the course server (``python -m grading exchange serve``, ``make
exchange-server``). Its storage is the course's ordinary exchange folder (``paths.exchange`` /
course id / outbound, inbound, feedback), so ``make release collect feedback`` keep using nbgrader's
own exchange there, unchanged. Students' servers talk to it through grading/exchange_http.py.

Who is who: each student has a random token (``python -m grading exchange add-student ID`` prints
it once); only its SHA-256 is stored, in ``<runtime>/exchange-server/tokens.json`` (outside the
folder served, mode 0600). A request's student is the token's: any id the client claims is ignored.

What a student can do, all under ``/api/v1/<course_id>/`` with ``Authorization: Bearer TOKEN``:

* ``GET whoami``: the token's student id and the upload limit;
* ``GET assignments``: the released assignments and their notebooks;
* ``GET assignments/<a>``: a tar of ``outbound/<a>/``, regular files only, each opened without
  following links (grading/safecopy.py): a link planted in the exchange is never served;
* ``POST submissions/<a>``: a tar (at most ``exchange_server.max_upload_mb``). The whole body is
  received into a private folder beside ``inbound/`` first, unpacked there (regular files and
  folders only, no absolute paths, no ``..``), given nbgrader's ``timestamp.txt`` (the server's
  clock) and ``submission_secret.txt``, then renamed into ``inbound/<student>+<a>+<timestamp>+<random>``
  as nbgrader's own submit names it. A dropped connection leaves nothing in inbound;
* ``GET submissions``: this student's own submissions, and which have feedback;
* ``GET feedback/<a>``: the feedback pages of this student's own submissions, found as nbgrader's
  fetch_feedback finds them (``feedback/<md5(secret + notebook id)>.html``), with the secret read
  from the inbound copy this server stored: never from anything the client sends.

It listens on 127.0.0.1 by default: students reach it through an SSH tunnel or a TLS reverse proxy
(README, "Separate servers: the HTTP exchange").
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tarfile
import tempfile
import threading
import traceback
import zoneinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gankit.io import atomic_write
from grading import safecopy
from grading.course import Course, CourseError
from grading.exchange_http import SAFE_ID, UnsafeArchive, checked_id, safe_extract

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f %Z"   # nbgrader's Exchange.timestamp_format default
UPLOADS = ".exchange-uploads"   # beside inbound/ (same file system, so the final rename is atomic)
INBOUND_NAME = re.compile(r"^(?P<student>[^+]*)\+(?P<assignment>[^+]*)\+(?P<timestamp>[^+]*)(?:\+(?P<random>.*))?$")
READ_TIMEOUT_S = 120   # a client that stops sending is dropped, its upload discarded


def tokens_file(course: Course) -> Path:
    """Where the token hashes live: in the runtime, outside the exchange folder the server reads."""
    return course.runtime_dir / "exchange-server" / "tokens.json"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_tokens(course: Course) -> dict[str, str]:
    """{student id: sha256 of the token}; {} before the first student is added."""
    path = tokens_file(course)
    text = safecopy.read_small(path, limit=1 << 22)
    if text is None:
        return {}
    try:
        students = json.loads(text)["students"]
    except (ValueError, KeyError, TypeError):
        raise CourseError(f"{path} is not a token file written by `python -m grading exchange add-student`; "
                          f"move it away and add the students again") from None
    return {str(k): str(v) for k, v in students.items()}


def write_tokens(course: Course, students: dict[str, str]) -> None:
    """Written beside and renamed into place, readable by the instructor only."""
    path = tokens_file(course)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with atomic_write(path, "w", private=True) as handle:
        json.dump({"students": dict(sorted(students.items()))}, handle, indent=1)


def add_student(course: Course, student_id: str) -> str:
    """A new token for STUDENT_ID (replacing any earlier one); returned once, stored only as a hash."""
    try:
        checked_id(student_id, "student id")
    except ValueError as err:
        raise CourseError(str(err)) from None
    token = secrets.token_urlsafe(32)
    students = read_tokens(course)
    students[student_id] = _hash(token)
    write_tokens(course, students)
    return token


def remove_student(course: Course, student_id: str) -> None:
    students = read_tokens(course)
    if student_id not in students:
        raise CourseError(f"{tokens_file(course)}: no student {student_id!r}; "
                          f"`python -m grading exchange list-students` lists them")
    del students[student_id]
    write_tokens(course, students)


def student_of(course: Course, token: str) -> str | None:
    """The student whose token this is, compared in constant time; None for an unknown token."""
    presented = _hash(token)
    found = None
    for student, stored in read_tokens(course).items():
        if hmac.compare_digest(stored, presented):
            found = student
    return found


class Refused(Exception):
    """An HTTP error answer: status and a message for the student."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ExchangeStore:
    """The course's exchange folder, as the server reads and writes it."""

    def __init__(self, course: Course, max_upload_mb: float):
        self.course = course
        self.course_dir = course.exchange_dir / course.course_id
        self.max_upload_mb = max_upload_mb
        try:   # the server's clock in the course's zone, as nbgrader's Exchange.timezone has it
            self.timezone = zoneinfo.ZoneInfo(course.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise CourseError(f"{course.source_file}: timezone {course.timezone!r} is not a time zone name "
                              f"(e.g. UTC, Europe/Berlin)") from None
        self.max_upload_bytes = int(max_upload_mb * 2**20)

    def _subdir(self, name: str) -> Path:
        return self.course_dir / name

    def released(self) -> list[dict]:
        outbound = self._subdir("outbound")
        out = []
        if not outbound.is_dir():
            return out
        for entry in sorted(os.scandir(outbound), key=lambda e: e.name):
            if not (SAFE_ID.match(entry.name) and entry.is_dir(follow_symlinks=False)):
                continue
            notebooks = sorted(n.name[:-len(".ipynb")] for n in os.scandir(entry.path)
                               if n.name.endswith(".ipynb") and n.is_file(follow_symlinks=False))
            out.append({"assignment_id": entry.name, "notebooks": notebooks})
        return out

    def released_dir(self, assignment_id: str) -> Path:
        folder = self._subdir("outbound") / assignment_id
        if not SAFE_ID.match(assignment_id) or not stat.S_ISDIR(_lstat_mode(folder)):
            raise Refused(404, f"no released assignment {assignment_id!r}")
        return folder

    def assignment_tar(self, assignment_id: str, log) -> bytes:
        """outbound/<a>/ as a tar: regular files only, never through a link (safecopy.walk)."""
        folder = self.released_dir(assignment_id)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for relative, fd, reason in safecopy.walk(folder):
                if fd is None:
                    log(f"not served from {folder}: {relative}: {reason}")
                    continue
                info = os.fstat(fd)
                member = tarfile.TarInfo(relative)
                member.size, member.mtime, member.mode = info.st_size, int(info.st_mtime), 0o644
                with open(fd, "rb", closefd=False) as handle:
                    tar.addfile(member, handle)
        return buffer.getvalue()

    def submissions(self, student_id: str, assignment_id: str | None = None) -> list[dict]:
        """This student's submissions in inbound/, each with its notebooks and their feedback pages."""
        inbound = self._subdir("inbound")
        out = []
        if not inbound.is_dir():
            return out
        for entry in sorted(os.scandir(inbound), key=lambda e: e.name):
            match = INBOUND_NAME.match(entry.name)
            if not match or match["student"] != student_id or not entry.is_dir(follow_symlinks=False):
                continue
            if assignment_id and match["assignment"] != assignment_id:
                continue
            secret = safecopy.read_small(Path(entry.path) / "submission_secret.txt", limit=1024)
            notebooks = []
            for name in sorted(n.name for n in os.scandir(entry.path)
                               if n.name.endswith(".ipynb") and n.is_file(follow_symlinks=False)):
                notebook_id = name[:-len(".ipynb")]
                page = self.feedback_page(secret, notebook_id) if secret else None
                notebooks.append({"notebook_id": notebook_id,
                                  "feedback_md5": hashlib.md5(page).hexdigest() if page is not None else None,
                                  "_page": page})
            out.append({"assignment_id": match["assignment"], "timestamp": match["timestamp"],
                        "random_string": match["random"], "notebooks": notebooks})
        return out

    def feedback_page(self, secret: str, notebook_id: str) -> bytes | None:
        """nbgrader's feedback/<md5(secret + notebook id)>.html, a regular file read without following links."""
        from nbgrader.utils import notebook_hash

        path = self._subdir("feedback") / f"{notebook_hash(secret=secret, notebook_id=notebook_id)}.html"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            with open(fd, "rb", closefd=False) as handle:
                return handle.read()
        finally:
            os.close(fd)

    def uploads_dir(self) -> Path:
        folder = self.course_dir / UPLOADS
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def clear_stale_uploads(self) -> None:
        """What a crash of an earlier server left half-received: never part of inbound, removed."""
        folder = self.course_dir / UPLOADS
        if folder.is_dir() and not folder.is_symlink():
            for entry in os.scandir(folder):
                shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir(follow_symlinks=False) \
                    else os.unlink(entry.path)

    def store_submission(self, student_id: str, assignment_id: str, body_path: Path, staging: Path) -> dict:
        """Unpack the received archive into STAGING, add what nbgrader's submit adds, rename into inbound."""
        self.released_dir(assignment_id)
        files = staging / "files"
        try:
            with open(body_path, "rb") as body:
                safe_extract(body, files, limit_bytes=self.max_upload_bytes, fsync=True)
        except UnsafeArchive as err:
            raise Refused(400, f"submission refused: {err}") from None
        timestamp = dt.datetime.now(self.timezone).strftime(TIMESTAMP_FORMAT)
        # What nbgrader's default ExchangeSubmit writes beside the files; a student's own copies are replaced.
        for name, text in (("timestamp.txt", timestamp), ("submission_secret.txt", secrets.token_hex(64))):
            target = files / name
            if target.is_dir():
                raise Refused(400, f"submission refused: {name} is nbgrader's file, not a folder")
            target.unlink(missing_ok=True)
            with open(target, "x", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        for folder, dirs, names in os.walk(files):
            os.chmod(folder, 0o755)   # the instructor (this process) owns it; others on the server may read, as with nbgrader
            for name in names:
                os.chmod(os.path.join(folder, name), 0o644)
        random_str = base64.urlsafe_b64encode(os.urandom(9)).decode("ascii")
        name = f"{student_id}+{assignment_id}+{timestamp}+{random_str}"
        inbound = self._subdir("inbound")
        inbound.mkdir(exist_ok=True)
        os.rename(files, inbound / name)   # atomic: inbound holds the whole submission or none of it
        _fsync_dir(inbound)
        return {"student_id": student_id, "assignment_id": assignment_id, "timestamp": timestamp}


def _lstat_mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ExchangeHandler(BaseHTTPRequestHandler):
    """One request. ``server.store`` is the ExchangeStore; nothing here trusts the client's claims."""

    server_version = "gankit-exchange/1"
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_S   # socket timeout: a stalled upload raises instead of holding a thread

    def log_message(self, format, *args):   # noqa: A002 - BaseHTTPRequestHandler's signature
        sys.stderr.write(f"{self.log_date_time_string()} {self.address_string()} {format % args}\n")

    def answer(self, status: int, payload: dict | bytes, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def route(self) -> tuple[str, list[str]]:
        """(student id, the path's parts after the course id), or Refused."""
        store: ExchangeStore = self.server.store
        path = self.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        if len(parts) < 3 or parts[:2] != ["api", "v1"]:
            raise Refused(404, "not an exchange address (/api/v1/<course>/...)")
        if parts[2] != store.course.course_id:
            raise Refused(404, f"this server serves the course {store.course.course_id!r}, not {parts[2]!r}")
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        student = student_of(store.course, token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if student is None:
            raise Refused(401, "unknown or missing token")
        return student, parts[3:]

    def handle_one(self, method: str) -> None:
        store: ExchangeStore = self.server.store
        try:
            student, rest = self.route()
            if method == "GET" and rest == ["whoami"]:
                self.answer(200, {"student_id": student, "course_id": store.course.course_id,
                                  "max_upload_mb": store.max_upload_mb})
            elif method == "GET" and rest == ["assignments"]:
                self.answer(200, {"assignments": store.released()})
            elif method == "GET" and len(rest) == 2 and rest[0] == "assignments":
                self.answer(200, store.assignment_tar(rest[1], self.log_message_text), "application/x-tar")
            elif method == "GET" and rest == ["submissions"]:
                subs = store.submissions(student)
                for sub in subs:
                    for notebook in sub["notebooks"]:
                        notebook.pop("_page")
                self.answer(200, {"student_id": student, "submissions": subs})
            elif method == "GET" and len(rest) == 2 and rest[0] == "feedback":
                pages = [{"timestamp": sub["timestamp"], "notebook_id": nb["notebook_id"],
                          "html": base64.b64encode(nb["_page"]).decode("ascii")}
                         for sub in store.submissions(student, rest[1]) for nb in sub["notebooks"]
                         if nb["_page"] is not None]
                self.answer(200, {"student_id": student, "feedback": pages})
            elif method == "POST" and len(rest) == 2 and rest[0] == "submissions":
                self.receive_submission(student, rest[1])
            else:
                raise Refused(404, f"no such exchange request: {method} {'/'.join(rest)}")
        except Refused as err:
            if method == "POST":
                self.close_connection = True   # the body may be unread: never parse it as the next request
            self.answer(err.status, {"error": str(err)})
        except Exception:   # a bug or a full disk: logged here in full, the student gets one line
            self.log_message("internal error on %s %s:\n%s", method, self.path.split("?")[0], traceback.format_exc())
            self.close_connection = True
            self.answer(500, {"error": "the exchange server failed; the instructor will find the reason in its log"})

    def log_message_text(self, text: str) -> None:
        self.log_message("%s", text)

    def receive_submission(self, student: str, assignment_id: str) -> None:
        store: ExchangeStore = self.server.store
        store.released_dir(assignment_id)
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            raise Refused(411, "a submission needs a Content-Length")
        length = int(length_text)
        if length > store.max_upload_bytes:
            raise Refused(413, f"{length / 2**20:.2f} MB sent, the course accepts at most "
                               f"{store.max_upload_mb:g} MB per submission (course.yml exchange_server.max_upload_mb)")
        staging = Path(tempfile.mkdtemp(dir=store.uploads_dir(), prefix=f"{student}+{assignment_id}."))
        try:
            body_path = staging / "upload.tar"
            received = 0
            with open(body_path, "wb") as body:
                while received < length:
                    chunk = self.rfile.read(min(1 << 20, length - received))
                    if not chunk:
                        break
                    body.write(chunk)
                    received += len(chunk)
            if received < length:   # the client went away: nothing of it is kept
                self.close_connection = True
                self.log_message("upload from %s for %s dropped after %d of %d bytes; discarded",
                                 student, assignment_id, received, length)
                return
            done = store.store_submission(student, assignment_id, body_path, staging)
            self.log_message("submission %s+%s+%s stored", student, assignment_id, done["timestamp"])
            self.answer(201, done)
        except (TimeoutError, ConnectionError) as err:
            self.close_connection = True
            self.log_message("upload from %s for %s failed (%s); discarded", student, assignment_id, err)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def do_GET(self):   # noqa: N802 - http.server's names
        self.handle_one("GET")

    def do_POST(self):   # noqa: N802
        self.handle_one("POST")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CourseError(f"--listen {text!r}: write HOST:PORT, e.g. 127.0.0.1:8765")
    return host.strip("[]"), int(port)


def make_server(course: Course, listen: str, max_upload_mb: float) -> ThreadingHTTPServer:
    """The server bound to LISTEN (port 0: any free one), not yet serving."""
    host, port = parse_listen(listen)
    store = ExchangeStore(course, max_upload_mb)
    store.course_dir.mkdir(parents=True, exist_ok=True)
    store.clear_stale_uploads()
    try:
        server = ThreadingHTTPServer((host, port), ExchangeHandler)
    except OSError as err:
        raise CourseError(f"cannot listen on {listen}: {err.strerror}; choose another port with --listen") from None
    server.daemon_threads = True
    server.store = store
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="exchange-server", daemon=True)
    thread.start()
    return thread


def serve(course: Course, listen: str, max_upload_mb: float) -> None:
    server = make_server(course, listen, max_upload_mb)
    host, port = server.server_address[:2]
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: listening on {host}: tokens travel in clear text unless a TLS proxy is in front "
              f"(README, 'Separate servers: the HTTP exchange')", file=sys.stderr)
    students = len(read_tokens(course))
    print(f"exchange of {course.course_id} ({course.exchange_dir}) served on http://{host}:{port}/ "
          f"to {students} student(s) with a token; Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
