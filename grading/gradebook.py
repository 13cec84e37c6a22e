"""The course's gradebook database: whether it exists, and a private SQLite copy of it for a job.

The gradebook is SQLite at ``<runtime>/gradebook.db`` unless course.yml or GANKIT_GRADEBOOK_URL
names another database (PostgreSQL; grading/course.py checks the URL). Only the coordinator of
`gankit grade` writes it (grading/batch.py). Each job grades against its own SQLite file copied
from it when the batch starts, so a job needs no database server, no password and no route to one.
"""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from grading.course import CourseError, mask_password

CHUNK_ROWS = 1000   # rows per INSERT when copying from a server: bounded memory on any class size


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for a database on a server."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" else None


def display(url: str) -> str:
    """How a message names the gradebook: its file, or its URL without the password."""
    path = sqlite_path(url)
    return str(path) if path is not None else mask_password(url)


def exists(url: str) -> bool:
    """Whether `generate` has created the gradebook yet.

    Asked without opening it through nbgrader, whose Gradebook creates an empty one on the spot.
    A server that cannot be reached is a CourseError naming it (password masked) and the reason.
    """
    path = sqlite_path(url)
    if path is not None:
        return path.is_file()
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return inspect(connection).has_table("assignment")   # one of nbgrader's own tables
    except OperationalError as err:
        reason = str(err.orig).strip().splitlines()[0] if err.orig is not None else str(err)
        raise CourseError(f"cannot open the gradebook {mask_password(url)}: {reason}. Check the server, "
                          f"the user's rights, and that the database exists (createdb -O USER DATABASE)") from None
    finally:
        engine.dispose()


def snapshot(url: str, target: str | Path) -> Path:
    """Copy the gradebook at ``url`` into a fresh SQLite file ``target``; return its path.

    SQLite: sqlite3's backup API, a consistent copy even while the coordinator writes. A server:
    every table is reflected (nbgrader's, ``gankit_graded``, and ``alembic_version``, so that
    nbgrader finds the copy at its schema version and does not migrate it), created in the copy
    with SQLAlchemy's generic types, and filled parents first (``MetaData.sorted_tables``, so
    foreign keys hold) in chunks of CHUNK_ROWS. All reads share one REPEATABLE READ transaction,
    so the copy shows the gradebook at one moment, as the backup API does.
    """
    from sqlalchemy import MetaData, create_engine, insert, select

    target = Path(target)
    target.unlink(missing_ok=True)
    path = sqlite_path(url)
    if path is not None:
        # mode=ro: a missing gradebook is an error here, not a new empty file
        with closing(sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)) as source, \
                closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
        return target

    source_engine = create_engine(url)
    copy_engine = create_engine(f"sqlite:///{target}")
    copied = False
    try:
        with source_engine.connect() as source:
            source = source.execution_options(isolation_level="REPEATABLE READ")
            with source.begin():
                tables = MetaData()
                tables.reflect(bind=source)
                copies = MetaData()
                for table in tables.sorted_tables:
                    _make_portable(table.to_metadata(copies))
                with copy_engine.begin() as copy:
                    copies.create_all(copy)
                    for table in tables.sorted_tables:
                        rows = source.execution_options(yield_per=CHUNK_ROWS).execute(select(table))
                        for chunk in rows.partitions():
                            copy.execute(insert(copies.tables[table.key]), [dict(row._mapping) for row in chunk])
        copied = True
    finally:
        source_engine.dispose()
        copy_engine.dispose()
        if not copied:   # no half-filled copy left for anyone to grade against
            target.unlink(missing_ok=True)
    return target


def _make_portable(table) -> None:
    """Strip what only the source database understands from a reflected table copied for SQLite."""
    from sqlalchemy import CheckConstraint

    for column in table.columns:
        try:
            column.type = column.type.as_generic()   # e.g. PostgreSQL's ENUM, INTERVAL, DOUBLE PRECISION
        except NotImplementedError:
            pass   # a type with no generic form keeps its own; SQLite stores it by affinity
        column.server_default = None   # written in the server's SQL dialect (nextval(), now(), ...)
    for constraint in [c for c in table.constraints if isinstance(c, CheckConstraint)]:
        table.constraints.remove(constraint)   # their text is the server's SQL too
