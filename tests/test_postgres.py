"""The gradebook in PostgreSQL: `gankit grade` records a class there, its jobs grade on SQLite copies.

Runs where a PostgreSQL server can be had; elsewhere it skips saying so (under CI it fails):

* GANKIT_TEST_POSTGRES_URL names a server, e.g. ``postgresql+psycopg://me@localhost/postgres``,
  whose role may create databases: each test gets a database of its own there, dropped after;
* else PostgreSQL's initdb and pg_ctl (on PATH, or Debian's /usr/lib/postgresql/<version>/bin):
  a throw-away cluster in a temporary folder, reachable only through a unix socket in that folder,
  stopped at teardown. initdb and postgres refuse to run as root, so as root they run as nobody.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from grading import batch, demo, gradebook, pipeline
from grading.demo import ASSIGNMENT, CLASS

pytestmark = pytest.mark.needs_postgres   # tests/conftest.py: skips, or fails under CI, without a server
SERVER_USER = "nobody"   # who runs the throw-away cluster when the tests run as root


def _as_server_user(command: list) -> list:
    if os.geteuid() != 0:
        return [str(part) for part in command]
    if shutil.which("runuser"):
        prefix = ["runuser", "-u", SERVER_USER, "--"]
    else:
        prefix = ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--clear-groups"]
    return prefix + [str(part) for part in command]


def _run(command: list, folder: Path) -> None:
    done = subprocess.run(_as_server_user(command), cwd=folder, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        log = folder / "server.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{' '.join(map(str, command))} failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}{tail}")


@pytest.fixture(scope="module")
def postgres_server(postgres_bin_dir):
    """The URL of a PostgreSQL server whose role may create databases."""
    named = os.environ.get("GANKIT_TEST_POSTGRES_URL")
    if named:
        yield named
        return
    bin_dir = postgres_bin_dir
    # Short, in /tmp: a unix socket's path must stay under about 100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="gankit-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(folder, user=SERVER_USER)
    data = folder / "data"
    try:
        _run([bin_dir / "initdb", "-D", data, "-U", "gankit", "--auth=trust", "-E", "UTF8", "--no-sync"], folder)
        # No TCP at all (listen_addresses=''), only the socket in our folder; fsync off: it is thrown away.
        options = f"-c listen_addresses='' -k {folder} -c fsync=off -c full_page_writes=off"
        _run([bin_dir / "pg_ctl", "-D", data, "-l", folder / "server.log", "-w", "-t", "60", "-o", options,
              "start"], folder)
        try:
            yield f"postgresql+psycopg://gankit@/postgres?host={folder}"
        finally:
            _run([bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def gradebook_url(postgres_server, monkeypatch):
    """A new, empty database on the server, made the course's gradebook by GANKIT_GRADEBOOK_URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"gankit_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")   # CREATE DATABASE refuses a transaction
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("GANKIT_GRADEBOOK_URL", url)
    try:
        yield url
    finally:
        with admin.connect() as connection:   # FORCE: a connection nbgrader left open does not block it
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _rows(url: str) -> dict[str, list[tuple]]:
    """{table: its rows, sorted} of a whole database."""
    from sqlalchemy import MetaData, create_engine, select

    engine = create_engine(url)
    try:
        tables = MetaData()
        tables.reflect(bind=engine)
        with engine.connect() as connection:
            return {name: sorted((tuple(row) for row in connection.execute(select(table))), key=repr)
                    for name, table in tables.tables.items()}
    finally:
        engine.dispose()


def test_a_snapshot_copies_every_table_and_row(gradebook_url, course_runtime, tmp_path):
    """The SQLite copy a job grades against holds exactly what PostgreSQL holds, schema version too."""
    from nbgrader.api import Gradebook

    course = course_runtime
    assert course.gradebook_url == gradebook_url
    assert not gradebook.exists(gradebook_url), "an empty database is no gradebook yet"
    pipeline.generate(course, ASSIGNMENT)   # the assignment, its notebook and cells, in PostgreSQL
    batch.ledger(course, ASSIGNMENT)        # creates gankit_graded
    assert gradebook.exists(gradebook_url)
    assert not (course.runtime_dir / "gradebook.db").exists(), "nothing was written to SQLite"

    copy = gradebook.snapshot(gradebook_url, tmp_path / "copy.db")
    source, copied = _rows(gradebook_url), _rows(f"sqlite:///{copy}")
    assert {"alembic_version", "assignment", "grade_cells", batch.LEDGER} <= set(source)
    assert copied == source
    with Gradebook(f"sqlite:///{copy}", course.course_id) as gb:   # nbgrader opens it as it is
        assert gb.find_assignment(ASSIGNMENT).duedate == course.week_of(ASSIGNMENT).due
    assert _rows(f"sqlite:///{copy}") == source, "and did not migrate or change it"


@pytest.mark.slow
@pytest.mark.needs_bwrap
def test_a_class_graded_into_postgresql_gets_the_scores_it_deserves(gradebook_url, course_runtime, capsys):
    """The demo's expectations (the same the SQLite gradebook meets), read back from PostgreSQL."""
    from sqlalchemy import create_engine, select

    course = course_runtime
    students = [s for s in CLASS if s.student_id in ("pat", "late")]   # partly right; right but late
    pipeline.generate(course, ASSIGNMENT)
    pipeline.release(course, ASSIGNMENT)
    demo.simulate_submissions(course, students)
    pipeline.collect(course, ASSIGNMENT)
    demo.backdate_late_submissions(course, students)

    results = batch.grade(course, ASSIGNMENT, gpus="none", progress=False)
    assert {name: r.status for name, r in results.items()} == {"late": "graded", "pat": "graded"}, \
        {name: r.reason for name, r in results.items()}
    assert not (course.runtime_dir / "gradebook.db").exists(), "the coordinator wrote PostgreSQL only"
    assert not list((course.runtime_dir / "grading").glob("gradebook-snapshot-*")), "the snapshot is removed"
    engine = create_engine(gradebook_url)
    try:
        ledger = batch._ledger_table()
        with engine.connect() as connection:
            rows = connection.execute(select(ledger.c.student, ledger.c.status)).all()
    finally:
        engine.dispose()
    assert sorted(rows) == [("late", "graded"), ("pat", "graded")]

    for student in students:
        if student.manual is not None:
            pipeline.set_manual_grade(course, ASSIGNMENT, student.student_id, demo.WRITTEN, student.manual)
    exported = pipeline.export_grades(course)   # nbgrader's own CSV export, reading PostgreSQL
    assert {row["student_id"] for row in pipeline.read_grades_csv(exported)} == {"late", "pat"}
    # Every autograded cell, the written answer, the late penalty and the exported total.
    assert demo.report(course, students) == 0, capsys.readouterr().out

    capsys.readouterr()
    assert batch.grade(course, ASSIGNMENT, gpus="none", progress=False) == {}, "a rerun grades nobody again"
    assert "2 submission(s) already graded at the same timestamp" in capsys.readouterr().err
