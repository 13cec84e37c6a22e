"""nbgrader's exchange over HTTP, for a student's server that shares no folder with the course server.

A student's JupyterLab runs on its own machine; the course's nbgrader exchange lives on the course
server, served by :mod:`grading.exchange_server`. These classes plug into nbgrader's pluggable
exchange (``c.ExchangeFactory.list`` and friends, set by grading/nbgrader_setup.configure_student
when course.yml has ``exchange_server.url``), so the Assignment List's Fetch, Submit and Fetch
Feedback buttons and ``nbgrader list/fetch_assignment/submit/fetch_feedback`` work unchanged.

The student is whoever the token belongs to (env ``GANKIT_EXCHANGE_TOKEN`` or the file
``~/.config/gankit/exchange-token``, readable by its owner only): the server ignores any student id
the client claims. Only the standard library and nbgrader are used, and nothing from the
instructor's side, so this module runs on a student's machine as it is.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from nbgrader.exchange.abc import Exchange as ABCExchange
from nbgrader.exchange.abc import ExchangeError
from nbgrader.exchange.abc import ExchangeFetchAssignment as ABCExchangeFetchAssignment
from nbgrader.exchange.abc import ExchangeFetchFeedback as ABCExchangeFetchFeedback
from nbgrader.exchange.abc import ExchangeList as ABCExchangeList
from nbgrader.exchange.abc import ExchangeSubmit as ABCExchangeSubmit
from traitlets import Float, Unicode

TOKEN_ENV = "GANKIT_EXCHANGE_TOKEN"
TOKEN_FILE = "~/.config/gankit/exchange-token"
API = "api/v1"
# Student ids, assignment ids, notebook ids and timestamps that travel in URLs and become folder
# names: no path separators, no leading dot, and none of nbgrader's '+' / '*' separators in ids.
SAFE_ID = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,99}$")
SAFE_TIMESTAMP = re.compile(r"^[0-9][0-9A-Za-z :.+-]{0,63}$")
MAX_MEMBERS = 10000   # files and folders in one archive


class UnsafeArchive(ValueError):
    """An archive holds a link, a device, an absolute path or ``..``: it is refused as a whole."""


def checked_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not SAFE_ID.match(value):
        raise ValueError(f"{what} {value!r} is not valid: use letters, digits, '_', '-', '.', '@' "
                         f"(no '/', '+', '*', no leading dot)")
    return value


def member_parts(name: str) -> list[str]:
    """The path parts of an archive member, or UnsafeArchive when it could leave the folder."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        raise UnsafeArchive(f"{name!r}: absolute or malformed path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise UnsafeArchive(f"{name!r}: a path with '..' or no name")
    return parts


def safe_extract(fileobj, dest: Path, *, limit_bytes: int, fsync: bool = False) -> list[str]:
    """Extract the uncompressed tar in FILEOBJ into DEST, which must not exist yet; return the files.

    Only regular files and folders are written, each at a path checked by :func:`member_parts`; a
    link, a device, a pipe, a name seen twice or more than ``limit_bytes`` refuses the whole archive
    (UnsafeArchive; DEST is left for the caller to remove). Nothing but this function writes into
    DEST while it runs and it creates no link, so plain paths below DEST cannot lead out of it.
    """
    dest.mkdir(mode=0o700)
    written, total = [], 0
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:")
    except tarfile.TarError as err:
        raise UnsafeArchive(f"not a tar archive ({err})") from None
    with tar:
        for count, member in enumerate(tar):
            if count >= MAX_MEMBERS:
                raise UnsafeArchive(f"more than {MAX_MEMBERS} entries")
            parts = member_parts(member.name)
            if member.isdir():
                try:
                    (dest.joinpath(*parts)).mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError):
                    raise UnsafeArchive(f"{member.name!r}: a folder where the archive already has a file") from None
                continue
            if not member.isreg():
                kind = "a link" if (member.issym() or member.islnk()) else "not a regular file"
                raise UnsafeArchive(f"{member.name!r}: {kind}; only regular files and folders are accepted")
            total += member.size
            if total > limit_bytes:
                raise UnsafeArchive(f"more than {limit_bytes} bytes of files")
            target = dest.joinpath(*parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise UnsafeArchive(f"{member.name!r}: listed twice, or a file and a folder of one name") from None
            try:
                source = tar.extractfile(member)
                while True:
                    chunk = source.read(1 << 20)
                    if not chunk:
                        break
                    os.write(out, chunk)
                if fsync:
                    os.fsync(out)
            finally:
                os.close(out)
            written.append("/".join(parts))
    return written


def tar_folder(src: Path, ignore=None, log=None) -> bytes:
    """An uncompressed tar of the regular files under SRC, links not followed (a link is skipped
    with a warning: the server would refuse the whole archive). ``ignore`` as shutil.copytree's."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder, dirs, files in os.walk(src, followlinks=False):
            skipped = set(ignore(folder, dirs + files)) if ignore else set()
            dirs[:] = sorted(d for d in dirs if d not in skipped and not os.path.islink(os.path.join(folder, d)))
            for name in sorted(files):
                if name in skipped:
                    continue
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, src).replace(os.sep, "/")
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode):
                    if log:
                        log.warning("Not submitted: %s is not a regular file (a link, a pipe...)", relative)
                    continue
                member = tarfile.TarInfo(relative)
                member.size, member.mtime, member.mode = info.st_size, int(info.st_mtime), 0o644
                with open(path, "rb") as handle:
                    tar.addfile(member, handle)
    return buffer.getvalue()


def read_token() -> tuple[str, str]:
    """(token, where it came from). The file must be readable by its owner alone, like an SSH key."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token, f"${TOKEN_ENV}"
    path = Path(TOKEN_FILE).expanduser()
    how = (f"ask the instructor for your exchange token (they run `python -m grading exchange add-student "
           f"YOUR_ID`), then: mkdir -p {path.parent} && (umask 077; cat > {path}) and paste it")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ExchangeError(f"no exchange token: {path} does not exist and ${TOKEN_ENV} is not set; {how}") from None
    if info.st_mode & 0o077:
        raise ExchangeError(f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}): anyone who reads "
                            f"it can submit as you. Run `chmod 600 {path}` (and ask for a new token if "
                            f"others may have read it)")
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ExchangeError(f"{path} is empty; {how}")
    return token, str(path)


class HttpExchange(ABCExchange):
    """What the four HTTP exchange classes share: the server's URL, the token, one request."""

    url = Unicode("", help="The course exchange server, e.g. http://127.0.0.1:8765 (through an SSH tunnel) "
                           "or https://course.example.org/exchange").tag(config=True)
    max_upload_mb = Float(100.0, help="The largest submission the client sends (the server has its own limit)"
                          ).tag(config=True)
    timeout_s = Float(120.0, help="Seconds to wait for the server").tag(config=True)

    def course_id(self) -> str:
        if not self.coursedir.course_id:
            self.fail("No course id specified. Re-run with --course flag.")
        return self.coursedir.course_id

    def tunnel_hint(self) -> str:
        parsed = urllib.parse.urlsplit(self.url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if parsed.hostname in ("127.0.0.1", "localhost", "::1"):
            return (f"; if the course server is reached through an SSH tunnel, open it first: "
                    f"ssh -N -L {port}:127.0.0.1:{port} YOU@COURSE-SERVER")
        return "; check the address and that the course's exchange server is running"

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """One request to ``<url>/api/v1/<course>/<path>``; any failure is an ExchangeError that says what to do."""
        if not self.url:
            self.fail("no exchange server configured (course.yml exchange_server.url)")
        try:
            token, token_source = read_token()
        except ExchangeError as err:
            self.fail(str(err))   # through fail: the list's own error type in JupyterLab
        address = f"{self.url.rstrip('/')}/{API}/{urllib.parse.quote(self.course_id())}/{path}"
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/x-tar"
        request = urllib.request.Request(address, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            try:
                detail = json.loads(err.read().decode("utf-8")).get("error", "")
            except (ValueError, OSError, AttributeError):
                detail = ""
            if err.code == 401:
                self.fail(f"the exchange server at {self.url} refused the token in {token_source} ({detail or 'unknown token'}); "
                          f"ask the instructor for a new one and write it to {TOKEN_FILE} (chmod 600)")
            if err.code == 413:
                self.fail(f"the submission is too large for the exchange server: {detail}")
            self.fail(f"{method} {address}: {err.code} {detail or err.reason}")
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            self.fail(f"cannot reach the course's exchange server at {self.url} ({reason}){self.tunnel_hint()}")
        raise AssertionError("unreachable")

    def call_json(self, method: str, path: str, body: bytes | None = None) -> dict:
        data = self.call(method, path, body)
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            self.fail(f"the exchange server at {self.url} answered {path} with something that is not JSON")
        raise AssertionError("unreachable")

    def local_dir(self, assignment_id: str) -> str:
        if self.path_includes_course:
            return os.path.join(self.assignment_dir, self.course_id(), assignment_id)
        return os.path.join(self.assignment_dir, assignment_id)

    # Where the default exchange has traits of its own (root, cache, path_includes_course), the HTTP
    # one needs only this one; it keeps the same meaning.
    path_includes_course = False


def _md5(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read()).hexdigest()


class ExchangeUnavailable(RuntimeError):
    """A list that failed inside JupyterLab (see HttpExchangeList.fail)."""


class HttpExchangeList(HttpExchange, ABCExchangeList):
    """``nbgrader list``: released assignments, or this student's submissions (--inbound / --cached,
    which is what the Assignment List asks). Returns the structures nbgrader's default ExchangeList
    returns, so the Assignment List shows them unchanged."""

    def fail(self, msg):
        """ExchangeError under ``nbgrader list``; in JupyterLab another error, because the Assignment
        List's handler replaces an ExchangeError of a list with "The exchange directory does not exist
        and could not be created" (nbgrader's assignment_list handlers), which would hide what to do."""
        from nbgrader.apps.listapp import ListApp

        self.log.fatal(msg)
        if ListApp.initialized():
            raise ExchangeError(msg)
        raise ExchangeUnavailable(msg)

    def init_src(self):
        pass

    def init_dest(self):
        pass

    def copy_files(self):
        pass

    def remove_files(self):
        self.fail("removing assignments is the instructor's job on the course server; the HTTP exchange cannot")

    def wanted(self, course_id: str, assignment_id: str) -> bool:
        if self.coursedir.course_id and course_id != self.coursedir.course_id:
            return False
        return not self.coursedir.assignment_id or assignment_id == self.coursedir.assignment_id

    def list_files(self):
        if self.inbound or self.cached:
            assignments = self.submitted()
            self.log.info("Submitted assignments:")
            for assignment in assignments:
                for info in assignment["submissions"]:
                    # nbgrader's own wording (default ExchangeList.format_inbound_assignment)
                    if info["has_local_feedback"] and not info["feedback_updated"]:
                        state = "feedback already fetched"
                    elif info["has_exchange_feedback"]:
                        state = "feedback ready to be fetched"
                    else:
                        state = "no feedback available"
                    self.log.info("%s %s %s %s (%s)", info["course_id"], info["student_id"], info["assignment_id"],
                                  info["timestamp"], state)
        else:
            assignments = self.released()
            self.log.info("Released assignments:")
            for info in assignments:
                fetched = " (already downloaded)" if info["status"] == "fetched" else ""
                self.log.info("%s %s%s", info["course_id"], info["assignment_id"], fetched)
        return assignments

    def released(self) -> list[dict]:
        course_id = self.course_id()
        remote = self.call_json("GET", "assignments")
        out = []
        for entry in remote["assignments"]:
            assignment_id = checked_id(entry["assignment_id"], "assignment id")
            if not self.wanted(course_id, assignment_id):
                continue
            local = self.local_dir(assignment_id)
            info = {"course_id": course_id, "assignment_id": assignment_id}
            if os.path.exists(local):
                info["status"], info["path"] = "fetched", os.path.abspath(local)
                names = sorted(n for n in os.listdir(local) if n.endswith(".ipynb"))
                info["notebooks"] = [{"notebook_id": n[:-len(".ipynb")], "path": os.path.join(info["path"], n)}
                                     for n in names]
            else:
                info["status"] = "released"
                info["path"] = f"{self.url.rstrip('/')}/{API}/{course_id}/assignments/{assignment_id}"
                info["notebooks"] = [{"notebook_id": nb, "path": f"{info['path']}/{nb}.ipynb"}
                                     for nb in entry["notebooks"]]
            out.append(info)
        return out

    def submitted(self) -> list[dict]:
        course_id = self.course_id()
        remote = self.call_json("GET", "submissions")
        student_id = checked_id(remote["student_id"], "student id")
        groups: dict[str, list[dict]] = {}
        for entry in remote["submissions"]:
            assignment_id = checked_id(entry["assignment_id"], "assignment id")
            if not self.wanted(course_id, assignment_id):
                continue
            timestamp = entry["timestamp"]
            if not SAFE_TIMESTAMP.match(timestamp):
                self.fail(f"the exchange server sent a malformed timestamp {timestamp!r}")
            local = self.local_dir(assignment_id)
            info = {"course_id": course_id, "student_id": student_id, "assignment_id": assignment_id,
                    "timestamp": timestamp, "status": "submitted",
                    "path": f"{self.url.rstrip('/')}/{API}/{course_id}/submissions/{assignment_id}"}
            if self.inbound:
                # nbgrader's inbound regexp keeps the '+' in this group
                info["random_string"] = f"+{entry['random_string']}" if entry.get("random_string") else None
            info["notebooks"] = []
            for notebook in entry["notebooks"]:
                notebook_id = checked_id(notebook["notebook_id"], "notebook id")
                local_page = os.path.join(local, "feedback", timestamp, f"{notebook_id}.html")
                has_local = os.path.isfile(local_page)
                remote_md5 = notebook.get("feedback_md5")
                info["notebooks"].append({
                    "notebook_id": notebook_id,
                    "path": f"{info['path']}/{notebook_id}.ipynb",
                    "has_local_feedback": has_local,
                    "has_exchange_feedback": remote_md5 is not None,
                    "local_feedback_path": local_page if has_local else None,
                    "feedback_updated": bool(has_local and remote_md5 and _md5(local_page) != remote_md5),
                })
            notebooks = info["notebooks"]
            info["has_local_feedback"] = bool(notebooks) and all(nb["has_local_feedback"] for nb in notebooks)
            info["has_exchange_feedback"] = bool(notebooks) and all(nb["has_exchange_feedback"] for nb in notebooks)
            info["feedback_updated"] = any(nb["feedback_updated"] for nb in notebooks)
            info["local_feedback_path"] = (os.path.join(os.path.abspath(local), "feedback", timestamp)
                                           if info["has_local_feedback"] else None)
            groups.setdefault(assignment_id, []).append(info)
        return [{"course_id": course_id, "student_id": student_id, "assignment_id": assignment_id,
                 "status": "submitted", "submissions": sorted(subs, key=lambda s: s["timestamp"])}
                for assignment_id, subs in sorted(groups.items())]


class HttpExchangeFetchAssignment(HttpExchange, ABCExchangeFetchAssignment):
    """``nbgrader fetch_assignment`` / the Fetch button: the released files, into the student's folder."""

    def init_src(self):
        self.assignment_id = checked_id(self.coursedir.assignment_id, "assignment id")

    def init_dest(self):
        self.dest_path = os.path.abspath(self.local_dir(self.assignment_id))
        if os.path.isdir(self.dest_path) and not self.replace_missing_files:
            self.fail(f"You already have a copy of the assignment in this directory: {self.assignment_id}")

    def copy_files(self):
        data = self.call("GET", f"assignments/{self.assignment_id}")
        dest = Path(self.dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".{dest.name}.fetching-{os.getpid()}"
        try:
            files = safe_extract(io.BytesIO(data), staging, limit_bytes=len(data))
        except UnsafeArchive as err:
            _remove_tree(staging)
            self.fail(f"the exchange server sent an archive that is not safe to unpack: {err}")
        ignore = list(self.coursedir.ignore)
        try:
            if not dest.exists():
                for relative in files:   # what CourseDirectory.ignore names stays out, as nbgrader's fetch does
                    if any(fnmatch.fnmatch(part, glob) for part in relative.split("/") for glob in ignore):
                        (staging / relative).unlink()
                os.chmod(staging, 0o755)
                os.rename(staging, dest)   # all or nothing
            else:   # replace_missing_files: only what the student deleted comes back
                for relative in files:
                    if any(fnmatch.fnmatch(part, glob) for part in relative.split("/") for glob in ignore):
                        continue
                    target = dest / relative
                    if not os.path.lexists(target):
                        self.log.warning("Replacing missing file '%s'", relative)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(staging / relative, target)
        finally:
            _remove_tree(staging)
        self.log.info("Fetched as: %s %s", self.course_id(), self.assignment_id)


class HttpExchangeSubmit(HttpExchange, ABCExchangeSubmit):
    """``nbgrader submit`` / the Submit button: the folder goes up as one archive; the server records
    it under the token's student, with its own time, all at once or not at all."""

    def init_src(self):
        self.assignment_id = checked_id(self.coursedir.assignment_id, "assignment id")
        self.src_path = os.path.abspath(self.local_dir(self.assignment_id))
        if not os.path.isdir(self.src_path):
            self.fail(f"Assignment not found: {self.src_path}; fetch it first")

    def init_dest(self):
        who = self.call_json("GET", "whoami")
        self.student_id = who["student_id"]
        self.server_limit_mb = float(who.get("max_upload_mb", self.max_upload_mb))
        claimed = self.coursedir.student_id
        if claimed and claimed != "*" and claimed != self.student_id:
            self.log.warning("Submitting as %s, the student of the exchange token, not as %s", self.student_id, claimed)

    def check_filename_diff(self):
        """nbgrader's check: notebooks released but not submitted (fatal when ``strict``), and extra ones."""
        released = self.call_json("GET", "assignments")["assignments"]
        expected = next((a["notebooks"] for a in released if a["assignment_id"] == self.assignment_id), None)
        if expected is None:
            self.fail(f"Assignment not found on the exchange server: {self.assignment_id}")
        present = sorted(n[:-len(".ipynb")] for n in os.listdir(self.src_path) if n.endswith(".ipynb"))
        missing = sorted(set(expected) - set(present))
        extra = sorted(set(present) - set(expected))
        if missing and self.strict:
            self.fail(f"Assignment {self.assignment_id} not submitted. There are missing notebooks for the "
                      f"submission: {', '.join(m + '.ipynb' for m in missing)}")
        if missing or extra:
            self.log.warning("Possible missing notebooks (%s) and/or extra notebooks (%s) submitted for assignment %s",
                             ", ".join(missing) or "none", ", ".join(extra) or "none", self.assignment_id)

    def copy_files(self):
        from nbgrader.utils import ignore_patterns

        self.check_filename_diff()
        ignore = ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include,
                                 max_file_size=self.coursedir.max_file_size, log=self.log)
        data = tar_folder(Path(self.src_path), ignore=ignore, log=self.log)
        limit_mb = min(self.max_upload_mb, self.server_limit_mb)
        if len(data) > limit_mb * 2**20:
            self.fail(f"{self.src_path} holds {len(data) / 2**20:.1f} MB to submit; the course accepts at most "
                      f"{limit_mb:g} MB: remove large outputs (checkpoints, datasets, images) and submit again")
        done = self.call_json("POST", f"submissions/{self.assignment_id}", data)
        self.log.info("Submitted as: %s %s %s (student %s)", self.course_id(), self.assignment_id,
                      done["timestamp"], done["student_id"])


class HttpExchangeFetchFeedback(HttpExchange, ABCExchangeFetchFeedback):
    """``nbgrader fetch_feedback`` / the Fetch Feedback button: the pages of this student's own
    submissions, into ``<assignment>/feedback/<timestamp>/<notebook>.html`` as nbgrader's default does."""

    def init_src(self):
        self.assignment_id = checked_id(self.coursedir.assignment_id, "assignment id")

    def init_dest(self):
        self.dest_path = os.path.abspath(os.path.join(self.local_dir(self.assignment_id), "feedback"))

    def copy_files(self):
        pages = self.call_json("GET", f"feedback/{self.assignment_id}")["feedback"]
        for page in pages:
            timestamp, notebook_id = page["timestamp"], checked_id(page["notebook_id"], "notebook id")
            if not SAFE_TIMESTAMP.match(timestamp):
                self.fail(f"the exchange server sent a malformed timestamp {timestamp!r}")
            folder = os.path.join(self.dest_path, timestamp)
            os.makedirs(folder, exist_ok=True)
            target = os.path.join(folder, f"{notebook_id}.html")
            partial = f"{target}.partial"
            with open(partial, "wb") as handle:
                handle.write(base64.b64decode(page["html"]))
            os.replace(partial, target)
            self.log.info("Fetched feedback: %s", target)
        if not pages:
            self.log.warning("No feedback available yet for %s", self.assignment_id)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


STUDENT_CLASSES = {
    "list": "grading.exchange_http.HttpExchangeList",
    "fetch_assignment": "grading.exchange_http.HttpExchangeFetchAssignment",
    "submit": "grading.exchange_http.HttpExchangeSubmit",
    "fetch_feedback": "grading.exchange_http.HttpExchangeFetchFeedback",
}


def probe(url: str, course_id: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(answers, one line): whether the exchange server at ``url`` knows this student's token, for
    `make lab` and `gankit doctor` on a student's server. Nothing is raised: the line says why not."""
    try:
        token, source = read_token()
    except ExchangeError as err:
        return False, str(err)
    address = f"{url.rstrip('/')}/{API}/{urllib.parse.quote(course_id)}/whoami"
    request = urllib.request.Request(address, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            who = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        if err.code == 401:
            return False, (f"the exchange server at {url} does not know the token in {source}: ask the instructor "
                           f"for a new one and write it to {TOKEN_FILE} (chmod 600)")
        return False, f"the exchange server at {url} answered {err.code} {err.reason}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        hint = HttpExchange(url=url).tunnel_hint()
        return False, f"cannot reach the course's exchange server at {url} ({getattr(err, 'reason', err)}){hint}"
    return True, f"the exchange server at {url} answers; you submit as {who.get('student_id')} (token in {source})"
