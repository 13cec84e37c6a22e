"""The HTTP exchange (grading/exchange_server.py + grading/exchange_http.py): the instructor's course
folder on one side, a student's folder (own HOME, own runtime, no access to the instructor's) on the
other, the server on 127.0.0.1 with a free port between them.

Most tests plant a released assignment in the exchange directly and drive the server with raw HTTP
or nbgrader's exchange classes in process (fast); the slow one runs the whole week: generate,
release, the student's own `nbgrader` commands, collect, autograde, feedback, fetch_feedback.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

import nbformat
import pytest
import yaml

from grading import exchange_server
from grading.course import REPO_ROOT, CourseError, load_course
from grading.exchange_http import (HttpExchangeFetchAssignment, HttpExchangeFetchFeedback, HttpExchangeList,
                                   HttpExchangeSubmit)

ASSIGNMENT = "a1"


def _notebook(path: Path, text: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(text))
    nbformat.write(nb, path)


@pytest.fixture
def instructor(course_runtime):
    """The course server: a released assignment in the course's exchange, two students with tokens."""
    course = course_runtime
    outbound = course.exchange_dir / course.course_id / "outbound" / ASSIGNMENT
    outbound.mkdir(parents=True)
    (course.exchange_dir / course.course_id / "inbound").mkdir()
    (course.exchange_dir / course.course_id / "feedback").mkdir()
    _notebook(outbound / "problem.ipynb", "x = 1")
    (outbound / "data.txt").write_text("released data")
    tokens = {s: exchange_server.add_student(course, s) for s in ("alice", "bob")}
    return course, tokens


def _start(course, max_upload_mb=1.0):
    server = exchange_server.make_server(course, "127.0.0.1:0", max_upload_mb)
    exchange_server.serve_in_thread(server)
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def served(instructor):
    course, tokens = instructor
    server, url = _start(course)
    yield course, tokens, url, server
    server.shutdown()
    server.server_close()


def _inbound(course) -> list[str]:
    return sorted(os.listdir(course.exchange_dir / course.course_id / "inbound"))


def _uploads_left(course) -> list[str]:
    folder = course.exchange_dir / course.course_id / exchange_server.UPLOADS
    return os.listdir(folder) if folder.exists() else []


def _exchange(cls, url, home: Path, token: str, monkeypatch, assignment=ASSIGNMENT, student_id=None, **traits):
    """One of our exchange classes as a student's server runs it (the Assignment List does this in process)."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    monkeypatch.setenv("GANKIT_EXCHANGE_TOKEN", token)
    cfg = Config()
    cfg.HttpExchange.url = url
    cfg.Exchange.assignment_dir = str(home)
    cfg.CourseDirectory.course_id = load_course().course_id
    cfg.CourseDirectory.root = str(home)
    cfg.CourseDirectory.assignment_id = assignment or ""
    if student_id:
        cfg.CourseDirectory.student_id = student_id
    for key, value in traits.items():   # e.g. {"ExchangeList.cached": True}, as the Assignment List sets it
        section, name = key.split(".")
        cfg[section][name] = value
    return cls(coursedir=CourseDirectory(config=cfg), authenticator=Authenticator(config=cfg), config=cfg)


def _tar(members: dict[str, bytes | tuple[str, str]]) -> bytes:
    """A tar whose values are file bytes, or ("symlink", target) / ("hardlink", target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, tuple):
                info.type = tarfile.SYMTYPE if value[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = value[1]
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return buffer.getvalue()


def _post(url, token, path, body: bytes, course_id=None, headers=None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    course_id = course_id or load_course().course_id
    conn.request("POST", f"/api/v1/{course_id}/{path}", body=body,
                 headers={"Authorization": f"Bearer {token}", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data or b"{}")


def _get(url, token, path):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", f"/api/v1/{load_course().course_id}/{path}", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def _plant_feedback(course, inbound_name: str, notebook_id: str, html: str) -> None:
    """What nbgrader's release_feedback leaves for one submission: feedback/<md5(secret+notebook)>.html."""
    from nbgrader.utils import notebook_hash

    secret = (course.exchange_dir / course.course_id / "inbound" / inbound_name / "submission_secret.txt").read_text()
    page = course.exchange_dir / course.course_id / "feedback" / f"{notebook_hash(secret=secret, notebook_id=notebook_id)}.html"
    page.write_text(html)


# --- who is who ---------------------------------------------------------------------------------


def test_wrong_or_missing_token_is_refused_and_nothing_is_written(served, tmp_path, monkeypatch):
    course, tokens, url, _ = served
    body = _tar({"problem.ipynb": b"{}"})
    for token in ("not-a-token", tokens["alice"] + "x", ""):
        status, answer = _post(url, token, f"submissions/{ASSIGNMENT}", body)
        assert status == 401, answer
    assert _get(url, "wrong", "assignments")[0] == 401
    assert _get(url, "wrong", f"assignments/{ASSIGNMENT}")[0] == 401
    assert _inbound(course) == [] and _uploads_left(course) == []
    lister = _exchange(HttpExchangeList, url, tmp_path, "wrong-token", monkeypatch)
    with pytest.raises(Exception, match="refused the token.*exchange-token"):
        lister.start()


def test_a_removed_student_token_stops_working(served):
    course, tokens, url, _ = served
    assert _get(url, tokens["bob"], "whoami")[0] == 200
    exchange_server.remove_student(course, "bob")
    assert _get(url, tokens["bob"], "whoami")[0] == 401
    assert "bob" not in exchange_server.read_tokens(course)
    stored = exchange_server.tokens_file(course)
    assert stored.stat().st_mode & 0o777 == 0o600 and tokens["alice"] not in stored.read_text()
    with pytest.raises(CourseError, match="not valid"):
        exchange_server.add_student(course, "eve+alice")


def test_a_claimed_student_id_is_ignored_the_token_decides(served, tmp_path, monkeypatch):
    course, tokens, url, _ = served
    home = tmp_path / "alice-home"
    home.mkdir()
    _exchange(HttpExchangeFetchAssignment, url, home, tokens["alice"], monkeypatch).start()
    # alice's server claims to be bob: the submission is alice's all the same
    _exchange(HttpExchangeSubmit, url, home, tokens["alice"], monkeypatch, student_id="bob").start()
    # raw requests with bob's id in the query and a header change nothing either
    status, answer = _post(url, tokens["alice"], f"submissions/{ASSIGNMENT}?student_id=bob",
                           _tar({"problem.ipynb": b"{}"}), headers={"X-Student-Id": "bob"})
    assert status == 201 and answer["student_id"] == "alice"
    names = _inbound(course)
    assert len(names) == 2 and all(n.startswith(f"alice+{ASSIGNMENT}+") for n in names), names
    status, data = _get(url, tokens["bob"], "submissions")
    assert status == 200 and json.loads(data)["submissions"] == []


def test_a_student_gets_only_their_own_feedback(served, tmp_path, monkeypatch):
    course, tokens, url, _ = served
    homes = {s: tmp_path / f"{s}-home" for s in tokens}
    for student, home in homes.items():
        home.mkdir()
        _exchange(HttpExchangeFetchAssignment, url, home, tokens[student], monkeypatch).start()
        _exchange(HttpExchangeSubmit, url, home, tokens[student], monkeypatch).start()
    names = {n.split("+")[0]: n for n in _inbound(course)}
    _plant_feedback(course, names["alice"], "problem", "<html>alice: 10/10</html>")
    # bob has a submission but no feedback yet: he sees none, and never alice's
    bob_fb = _exchange(HttpExchangeFetchFeedback, url, homes["bob"], tokens["bob"], monkeypatch)
    bob_fb.start()
    assert not (homes["bob"] / ASSIGNMENT / "feedback").exists() or \
        not list((homes["bob"] / ASSIGNMENT / "feedback").rglob("*.html"))
    status, data = _get(url, tokens["bob"], f"feedback/{ASSIGNMENT}")
    assert status == 200 and b"alice" not in data and json.loads(data)["feedback"] == []
    # alice: the list says feedback is ready, fetch_feedback brings the page
    listed = _exchange(HttpExchangeList, url, homes["alice"], tokens["alice"], monkeypatch,
                       **{"ExchangeList.cached": True}).start()
    submission = listed[0]["submissions"][0]
    assert submission["has_exchange_feedback"] and not submission["has_local_feedback"]
    _exchange(HttpExchangeFetchFeedback, url, homes["alice"], tokens["alice"], monkeypatch).start()
    pages = list((homes["alice"] / ASSIGNMENT / "feedback").rglob("problem.html"))
    assert len(pages) == 1 and pages[0].read_text() == "<html>alice: 10/10</html>"
    assert pages[0].parent.name == submission["timestamp"]
    listed = _exchange(HttpExchangeList, url, homes["alice"], tokens["alice"], monkeypatch,
                       **{"ExchangeList.cached": True}).start()
    submission = listed[0]["submissions"][0]
    assert submission["has_local_feedback"] and not submission["feedback_updated"]


# --- what reaches inbound -----------------------------------------------------------------------


def test_a_half_uploaded_submission_leaves_nothing(served):
    course, tokens, url, _ = served
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall((f"POST /api/v1/{course.course_id}/submissions/{ASSIGNMENT} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1\r\nAuthorization: Bearer {tokens['alice']}\r\n"
                      f"Content-Length: 500000\r\n\r\n").encode() + _tar({"problem.ipynb": b"{}" * 1000})[:4000])
        sock.shutdown(socket.SHUT_WR)          # the connection drops mid-upload
        assert sock.recv(1024) == b""          # the server closed it without an answer, its handler done
    assert _inbound(course) == []
    assert _uploads_left(course) == []
    # and the server still works
    status, answer = _post(url, tokens["alice"], f"submissions/{ASSIGNMENT}", _tar({"problem.ipynb": b"{}"}))
    assert status == 201 and len(_inbound(course)) == 1


@pytest.mark.parametrize("members, why", [
    ({"../escaped.txt": b"x", "problem.ipynb": b"{}"}, "'..'"),
    ({"sub/../../escaped.txt": b"x"}, "'..'"),
    ({"/tmp/escaped-abs.txt": b"x"}, "absolute"),
    ({"problem.ipynb": ("symlink", "../../../gradebook.db")}, "a link"),
    ({"problem.ipynb": ("hardlink", "/etc/passwd")}, "a link"),
    ({"timestamp.txt/x": b"forged"}, "nbgrader's file"),
    ({"problem.ipynb": b"{}", "problem.ipynb/x": b"{}"}, "a file and a folder"),
    ({"problem.ipynb": b"{}", "./problem.ipynb": b"{}"}, "listed twice"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "timestamp-folder", "file-folder-clash",
        "twice"])
def test_an_archive_with_links_or_escaping_paths_is_refused_whole(served, members, why):
    course, tokens, url, _ = served
    status, answer = _post(url, tokens["alice"], f"submissions/{ASSIGNMENT}", _tar(members))
    assert status == 400 and why in answer["error"], answer
    assert _inbound(course) == [] and _uploads_left(course) == []
    assert not (course.exchange_dir / course.course_id / "escaped.txt").exists()
    assert not Path("/tmp/escaped-abs.txt").exists()


def test_a_submission_over_the_limit_is_413_and_the_client_says_so(instructor, tmp_path, monkeypatch):
    course, tokens = instructor
    server, url = _start(course, max_upload_mb=0.05)
    try:
        status, answer = _post(url, tokens["alice"], f"submissions/{ASSIGNMENT}", b"\0" * 60_000)
        assert status == 413 and "0.05 MB" in answer["error"]
        assert _inbound(course) == []
        home = tmp_path / "home"
        home.mkdir()
        _exchange(HttpExchangeFetchAssignment, url, home, tokens["alice"], monkeypatch).start()
        (home / ASSIGNMENT / "weights.bin").write_bytes(os.urandom(80_000))
        with pytest.raises(Exception, match="at most 0.05 MB"):
            _exchange(HttpExchangeSubmit, url, home, tokens["alice"], monkeypatch).start()
        assert _inbound(course) == []
    finally:
        server.shutdown()
        server.server_close()


def test_submission_is_stored_as_nbgraders_own_submit_stores_it(served, tmp_path, monkeypatch):
    course, tokens, url, _ = served
    home = tmp_path / "home"
    home.mkdir()
    _exchange(HttpExchangeFetchAssignment, url, home, tokens["alice"], monkeypatch).start()
    (home / ASSIGNMENT / "timestamp.txt").write_text("1999-01-01 00:00:00.000000 UTC")   # a forged time
    _exchange(HttpExchangeSubmit, url, home, tokens["alice"], monkeypatch).start()
    [name] = _inbound(course)
    student, assignment, timestamp, random_str = name.split("+")
    assert (student, assignment) == ("alice", ASSIGNMENT) and len(random_str) == 12
    folder = course.exchange_dir / course.course_id / "inbound" / name
    assert (folder / "timestamp.txt").read_text() == timestamp and not timestamp.startswith("1999")
    assert len((folder / "submission_secret.txt").read_text()) == 128
    assert sorted(p.name for p in folder.iterdir()) == ["data.txt", "problem.ipynb", "submission_secret.txt",
                                                        "timestamp.txt"]
    # nbgrader's own list of inbound sees it as any shared-folder submission
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeList
    from traitlets.config import Config

    cfg = Config()
    cfg.Exchange.root = str(course.exchange_dir)
    cfg.CourseDirectory.course_id = course.course_id
    ours = _exchange(HttpExchangeList, url, home, tokens["alice"], monkeypatch, **{"ExchangeList.inbound": True}).start()
    default = ExchangeList(coursedir=CourseDirectory(config=cfg), authenticator=Authenticator(config=cfg),
                           config=cfg, inbound=True).start()
    assert [a["student_id"] for a in default] == ["alice"]
    ours_sub, default_sub = ours[0]["submissions"][0], default[0]["submissions"][0]
    assert set(ours[0]) == set(default[0]) and set(ours_sub) == set(default_sub)
    assert set(ours_sub["notebooks"][0]) == set(default_sub["notebooks"][0])
    for key in ("course_id", "student_id", "assignment_id", "timestamp", "status", "random_string",
                "has_exchange_feedback", "has_local_feedback"):
        assert ours_sub[key] == default_sub[key], key


def test_released_and_fetched_listing_matches_nbgraders_own(served, tmp_path, monkeypatch):
    """The Assignment List reads these dicts: same keys and statuses as the default exchange's."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeFetchAssignment, ExchangeList
    from traitlets.config import Config

    course, tokens, url, _ = served
    ours_home, default_home = tmp_path / "ours", tmp_path / "default"
    ours_home.mkdir()
    default_home.mkdir()
    cfg = Config()
    cfg.Exchange.root = str(course.exchange_dir)
    cfg.Exchange.assignment_dir = str(default_home)
    cfg.CourseDirectory.course_id = course.course_id
    cfg.CourseDirectory.assignment_id = ASSIGNMENT

    def default(cls):
        return cls(coursedir=CourseDirectory(config=cfg), authenticator=Authenticator(config=cfg), config=cfg)

    def ours(cls):
        return _exchange(cls, url, ours_home, tokens["alice"], monkeypatch)

    for step in ("released", "fetched"):
        mine, theirs = ours(HttpExchangeList).start(), default(ExchangeList).start()
        assert [a["status"] for a in mine] == [a["status"] for a in theirs] == [step]
        assert set(mine[0]) == set(theirs[0])
        assert [set(nb) for nb in mine[0]["notebooks"]] == [set(nb) for nb in theirs[0]["notebooks"]]
        assert [nb["notebook_id"] for nb in mine[0]["notebooks"]] == ["problem"]
        if step == "released":
            ours(HttpExchangeFetchAssignment).start()
            default(ExchangeFetchAssignment).start()
        else:
            assert mine[0]["path"] == str(ours_home / ASSIGNMENT)
    assert sorted(os.listdir(ours_home / ASSIGNMENT)) == sorted(os.listdir(default_home / ASSIGNMENT))


def test_the_assignment_list_extension_drives_the_http_exchange(served, tmp_path_factory):
    """What JupyterLab's Assignment List calls (nbgrader's server extension), in the student's
    process with the student's configuration: list, Fetch, Submit, list again."""
    course, tokens, url, _ = served
    home = _student_home(tmp_path_factory.mktemp("student-lab"))
    env = _student_env(home, _student_course_file(home, url), tokens["alice"])
    script = f"""
import json, os
from nbgrader.server_extensions.assignment_list.handlers import AssignmentList
lab = AssignmentList()
lab.root_dir = {str(home / "notebooks")!r}
steps = [lab.list_assignments({course.course_id!r}), lab.fetch_assignment({course.course_id!r}, {ASSIGNMENT!r}),
         lab.submit_assignment({course.course_id!r}, {ASSIGNMENT!r}), lab.list_assignments({course.course_id!r})]
os.environ["GANKIT_EXCHANGE_TOKEN"] = "revoked-or-mistyped"
steps.append(lab.list_assignments({course.course_id!r}))
del os.environ["GANKIT_EXCHANGE_TOKEN"]   # and no token file in this HOME
steps.append(lab.list_assignments({course.course_id!r}))
print(json.dumps(steps))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=home / "notebooks", env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    before, fetched, submitted, after, wrong_token, no_token = json.loads(done.stdout.strip().splitlines()[-1])
    assert not no_token["success"] and "add-student" in no_token["value"]
    # a refused token shows what to do, not nbgrader's "The exchange directory does not exist"
    assert not wrong_token["success"] and "refused the token" in wrong_token["value"]
    assert "exchange-token" in wrong_token["value"]
    assert all(step["success"] for step in (before, fetched, submitted, after)), done.stdout[-3000:]
    assert [a["status"] for a in before["value"]] == ["released"]
    statuses = sorted(a["status"] for a in after["value"])
    assert statuses == ["fetched", "submitted"]
    fetched_entry = next(a for a in after["value"] if a["status"] == "fetched")
    assert fetched_entry["path"] == ASSIGNMENT   # relative to the server's folder, as the extension expects
    submitted_entry = next(a for a in after["value"] if a["status"] == "submitted")
    assert submitted_entry["student_id"] == "alice" and len(submitted_entry["submissions"]) == 1
    assert [n.split("+")[0] for n in _inbound(course)] == ["alice"]


# --- what leaves the exchange -------------------------------------------------------------------


def test_a_symlink_planted_in_the_exchange_is_never_served(served, tmp_path, monkeypatch):
    course, tokens, url, _ = served
    gradebook = course.runtime_dir / "gradebook.db"
    gradebook.write_text("SECRET-GRADES")
    outbound = course.exchange_dir / course.course_id / "outbound"
    (outbound / ASSIGNMENT / "gradebook.ipynb").symlink_to(gradebook)
    (outbound / ASSIGNMENT / "runtime").symlink_to(course.runtime_dir, target_is_directory=True)
    (outbound / "a2").symlink_to(course.runtime_dir, target_is_directory=True)   # a whole "assignment"
    status, data = _get(url, tokens["alice"], f"assignments/{ASSIGNMENT}")
    assert status == 200 and b"SECRET-GRADES" not in data
    assert _get(url, tokens["alice"], "assignments/a2")[0] == 404
    released = json.loads(_get(url, tokens["alice"], "assignments")[1])["assignments"]
    assert released == [{"assignment_id": ASSIGNMENT, "notebooks": ["problem"]}]
    home = tmp_path / "home"
    home.mkdir()
    _exchange(HttpExchangeFetchAssignment, url, home, tokens["alice"], monkeypatch).start()
    assert sorted(p.name for p in (home / ASSIGNMENT).iterdir()) == ["data.txt", "problem.ipynb"]
    # a feedback page that is a link to the gradebook is not served either
    _exchange(HttpExchangeSubmit, url, home, tokens["alice"], monkeypatch).start()
    [name] = _inbound(course)
    from nbgrader.utils import notebook_hash
    secret = (course.exchange_dir / course.course_id / "inbound" / name / "submission_secret.txt").read_text()
    (course.exchange_dir / course.course_id / "feedback" /
     f"{notebook_hash(secret=secret, notebook_id='problem')}.html").symlink_to(gradebook)
    status, data = _get(url, tokens["alice"], f"feedback/{ASSIGNMENT}")
    assert status == 200 and json.loads(data)["feedback"] == []


# --- the student's side: token file, messages, configuration ---------------------------------


def test_the_token_file_must_be_private_and_errors_say_what_to_do(served, tmp_path, monkeypatch):
    course, tokens, url, _ = served
    home = tmp_path / "home"
    token_file = home / ".config" / "gankit" / "exchange-token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(tokens["alice"] + "\n")
    monkeypatch.setenv("HOME", str(home))
    lister = _exchange(HttpExchangeList, url, home, "", monkeypatch)
    monkeypatch.delenv("GANKIT_EXCHANGE_TOKEN")
    token_file.chmod(0o644)
    with pytest.raises(Exception, match="chmod 600"):
        lister.start()
    token_file.chmod(0o600)
    assert [a["assignment_id"] for a in lister.start()] == [ASSIGNMENT]
    token_file.unlink()
    with pytest.raises(Exception, match="add-student"):
        lister.start()
    # nobody listening: the message names the URL and the SSH tunnel
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    monkeypatch.setenv("GANKIT_EXCHANGE_TOKEN", tokens["alice"])
    lister.url = f"http://127.0.0.1:{free}"
    with pytest.raises(Exception, match=f"127.0.0.1:{free}.*ssh -N -L {free}:127.0.0.1:{free}"):
        lister.start()


def _student_course_file(folder: Path, url: str | None, **server) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "course" / "course.yml").read_text())
    raw["exchange_server"] = {"url": url, **server}
    path = folder / "course.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_course_yml_exchange_server_selects_the_http_classes(tmp_path):
    from traitlets.config import Config

    from grading.nbgrader_setup import configure_student

    course = load_course(_student_course_file(tmp_path, "http://127.0.0.1:8765", max_upload_mb=20))
    c = Config()
    configure_student(c, course)
    assert c.ExchangeFactory.submit == "grading.exchange_http.HttpExchangeSubmit"
    assert c.HttpExchange.url == "http://127.0.0.1:8765" and c.HttpExchange.max_upload_mb == 20
    shared = Config()
    configure_student(shared, load_course(_student_course_file(tmp_path, None)))
    assert "submit" not in shared.ExchangeFactory   # no url: the shared-folder exchange, as before
    with pytest.raises(CourseError, match="exchange_server.url"):
        load_course(_student_course_file(tmp_path, "course.example.org"))
    with pytest.raises(CourseError, match="did you mean 'exchange_server.max_upload_mb'"):
        load_course(_student_course_file(tmp_path, None, max_upload_md=3))


# --- the whole week, with nbgrader's own commands on the student's side ------------------------


def _student_env(home: Path, course_file: Path, token: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANKIT_", "JUPYTER"))}
    env.update(HOME=str(home), GANKIT_COURSE_FILE=str(course_file), GANKIT_COURSE_RUNTIME=str(home / "runtime"),
               GANKIT_EXCHANGE_TOKEN=token, JUPYTER_CONFIG_PATH=str(REPO_ROOT / "course" / "server" / "student"),
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return env


def _student_nbgrader(home: Path, env: dict, *args: str, hide: Path | None = None) -> str:
    """`nbgrader ARGS` as the student's server runs it; with HIDE, in a sandbox where that folder
    (the instructor's) is an empty tmpfs: proof that the student side needs none of its files."""
    command = [sys.executable, "-m", "nbgrader", *args]
    if hide is not None:
        command = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", str(hide),
                   "--bind", str(home), str(home), "--die-with-parent", "--"] + command
    done = subprocess.run(command, cwd=home / "notebooks", env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "Exception while loading config" not in log, log[-3000:]
    return log


def _student_home(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    return root


@pytest.mark.needs_bwrap
def test_the_student_side_needs_no_file_of_the_instructor(served, tmp_path_factory):
    course, tokens, url, _ = served
    home = _student_home(tmp_path_factory.mktemp("student-alice"))
    env = _student_env(home, _student_course_file(home, url), tokens["alice"])
    instructor_root = course.runtime_dir.parent
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--tmpfs", str(instructor_root), "--",
                            sys.executable, "-c", f"import os; print(os.path.exists({str(course.exchange_dir)!r}))"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False", probe.stderr
    assert "a1" in _student_nbgrader(home, env, "list", hide=instructor_root)
    _student_nbgrader(home, env, "fetch_assignment", ASSIGNMENT, hide=instructor_root)
    _student_nbgrader(home, env, "submit", ASSIGNMENT, hide=instructor_root)
    assert [n.split("+")[0] for n in _inbound(course)] == ["alice"]
    # nbgrader's own command line with a wrong token: one clear message, no traceback
    wrong = subprocess.run([sys.executable, "-m", "nbgrader", "list"], cwd=home / "notebooks", capture_output=True,
                           text=True, timeout=300, env={**env, "GANKIT_EXCHANGE_TOKEN": "mistyped"})
    assert wrong.returncode != 0 and "refused the token" in wrong.stderr and "Traceback" not in wrong.stderr


def _interpreter_for(uid: int) -> tuple[str, dict] | None:
    """(python, extra env) that uid can run with this project's packages, or None.

    The project's venv may sit under a folder only root enters (/root/.pyenv): then the system's
    Python of the same version, with the venv's site-packages on PYTHONPATH, serves as well.
    """
    extra = {"PYTHONPATH": sysconfig.get_paths()["purelib"] + os.pathsep + str(REPO_ROOT)}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in dict.fromkeys([sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"]):
        try:
            probe = subprocess.run([python, "-c", "import nbgrader, grading.exchange_http"], user=uid, group=uid,
                                   capture_output=True, cwd="/", env={"PATH": "/usr/bin:/bin", "HOME": "/", **extra},
                                   timeout=120)
        except OSError:
            continue
        if probe.returncode == 0:
            return python, extra
    return None


@pytest.mark.needs_root
def test_the_student_side_runs_as_another_unix_user(served, grant_traverse):
    """bob's server runs as a uid without a passwd entry, in a folder of its own: the instructor's
    (under pytest's root-only temp folder) is out of its reach, the exchange server is not."""
    course, tokens, url, _ = served
    uid = 54321
    for path in (sys.executable, REPO_ROOT / "grading"):   # a venv under /root, a clone under a 0700 folder
        grant_traverse(path)
    found = _interpreter_for(uid)
    if found is None:
        pytest.skip(f"uid {uid} can run neither {sys.executable} nor a system Python "
                    f"{sys.version_info.major}.{sys.version_info.minor} with this project's packages")
    python, extra = found
    outer = Path(tempfile.mkdtemp(prefix="gankit-student-"))
    try:
        os.chmod(outer, 0o711)
        home = _student_home(outer / "bob")
        _student_course_file(home, url)
        for path in [home, *home.rglob("*")]:
            os.chown(path, uid, uid)
        env = {**_student_env(home, home / "course.yml", tokens["bob"]), **extra}
        peek = subprocess.run([python, "-c", f"import os; print(os.access({str(course.exchange_dir)!r}, os.R_OK))"],
                              user=uid, group=uid, env=env, capture_output=True, text=True, timeout=60)
        assert peek.stdout.strip() == "False", peek.stderr   # no shared folder to fall back on
        for args in (["list"], ["fetch_assignment", ASSIGNMENT], ["submit", ASSIGNMENT]):
            done = subprocess.run([python, "-m", "nbgrader", *args], cwd=home / "notebooks", env=env, user=uid,
                                  group=uid, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0 and "Exception while loading config" not in done.stderr, \
                (done.stdout + done.stderr)[-3000:]
        assert (home / "notebooks" / ASSIGNMENT / "problem.ipynb").stat().st_uid == uid
        assert [n.split("+")[0] for n in _inbound(course)] == ["bob"]
    finally:
        shutil.rmtree(outer, ignore_errors=True)


@pytest.mark.slow
def test_a_whole_week_between_two_servers(course_runtime, tmp_path_factory):
    """Instructor: generate, release (nbgrader's own), serve. Student, in another folder with its own
    HOME and runtime, through nbgrader's commands only: list, fetch, submit. Instructor: collect,
    autograde, feedback. Student: the list says feedback is ready; fetch_feedback brings the page."""
    from grading import pipeline

    course = course_runtime
    week = course.available_assignments()[0]
    pipeline.generate(course, week.assignment)
    pipeline.release(course, week.assignment)
    token = exchange_server.add_student(course, "carol")
    server, url = _start(course, max_upload_mb=course.exchange_server.max_upload_mb)
    try:
        home = _student_home(tmp_path_factory.mktemp("student-carol"))
        env = _student_env(home, _student_course_file(home, url), token)
        assert f"{course.course_id} {week.assignment}" in _student_nbgrader(home, env, "list")
        _student_nbgrader(home, env, "fetch_assignment", week.assignment)
        assert list((home / "notebooks" / week.assignment).glob("*.ipynb"))
        _student_nbgrader(home, env, "submit", week.assignment)
        assert "(no feedback available)" in _student_nbgrader(home, env, "list", "--cached")
        pipeline.collect(course, week.assignment)
        assert (course.runtime_dir / "submitted" / "carol" / week.assignment / "timestamp.txt").is_file()
        pipeline.autograde(course, week.assignment)
        done = pipeline.feedback(course, week.assignment)
        assert done.released == ("carol",)
        assert "(feedback ready to be fetched)" in _student_nbgrader(home, env, "list", "--cached")
        _student_nbgrader(home, env, "fetch_feedback", week.assignment)
        pages = list((home / "notebooks" / week.assignment / "feedback").rglob("*.html"))
        assert len(pages) == 1 and "carol" not in pages[0].name
        assert "Comments" in pages[0].read_text() or "score" in pages[0].read_text().lower()
    finally:
        server.shutdown()
        server.server_close()
    # nothing of the student's folder was ever needed on the instructor's side, and vice versa
    assert not any(course.runtime_dir.rglob("exchange-token"))
    shutil.rmtree(home, ignore_errors=True)
