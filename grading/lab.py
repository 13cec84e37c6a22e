"""`make lab`: JupyterLab with the course built in, for a student or an instructor.

A role is a folder of Jupyter configuration, ``course/server/<role>/``, put on
``JUPYTER_CONFIG_PATH``; every course fact in it comes from course.yml through
grading/nbgrader_setup.py:

* ``student``: the assignment list (fetch, submit) and Validate against the course's exchange; no
  formgrader, no course list, no create-assignment toolbar. The server is rooted at the repository,
  so the paper notebooks (notebooks/), training runs (runs/, notebooks/runs/) and the syllabus are
  in the same lab; fetched assignments land in the student's own folder,
  ``<runtime>/students/<student id>`` (nbgrader's ``Exchange.assignment_dir``), where the lab
  opens on a landing page, ``START.md`` (grading/syllabus.py ``render_start``).
* ``instructor``: all of nbgrader's extensions, the formgrader included, serving the course
  runtime folder (the formgrader wants the course root inside the server's notebook folder).

    python -m grading.lab [--role student|instructor] [--student ID] [--port N] [jupyter lab args]

On a class server (one JupyterLab per student, e.g. JupyterHub), start each student's server the
same way, or set ``JUPYTER_CONFIG_PATH=<repo>/course/server/student`` in its environment.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grading.course import REPO_ROOT, Course, CourseError, load_course
from grading.nbgrader_setup import ensure_local_exchange, ensure_runtime_layout
from grading.syllabus import render_start
from gankit.io import atomic_write_text

SERVER_CONFIG = REPO_ROOT / "course" / "server"
ROLES = ("student", "instructor")


def default_student_id() -> str:
    """The id nbgrader itself would submit under: the login name (JupyterHub's user for jovyan)."""
    from nbgrader.utils import get_username

    return get_username()


def student_dir(course: Course, student_id: str) -> Path:
    """The student's own folder: fetched assignments, their feedback, the landing page."""
    return course.runtime_dir / "students" / student_id


def notebook_root(course: Course, role: str, student_id: str) -> Path:
    """The folder the server shows: the instructor's course root; for a student the repository
    (notebooks/, runs/, the syllabus and their own folder), or their own folder alone when the
    course's runtime lies outside the repository (a server cannot show files outside its root)."""
    if role == "instructor":
        return course.runtime_dir
    own = student_dir(course, student_id)
    return REPO_ROOT if own.is_relative_to(REPO_ROOT) else own


def landing_page(course: Course, student_id: str) -> Path:
    """Where the student's lab opens: START.md in their folder (written by :func:`prepare_root`)."""
    return student_dir(course, student_id) / "START.md"


def exchange_state(course: Course) -> str | None:
    """None when students can fetch from the exchange now, else one line saying why not, with no
    instructor command in it (a student cannot run those)."""
    if course.exchange_server.url:   # no shared folder: ask the course's exchange server (README, "Separate servers")
        from grading.exchange_http import probe

        answers, line = probe(course.exchange_server.url, course.course_id)
        return None if answers else line
    exchange = course.exchange_dir
    if not exchange.is_dir():
        return (f"the exchange {exchange} does not exist on this server: if your course shares it from "
                f"the instructor's server, it is not mounted here; `gankit doctor --role student` says more")
    outbound = exchange / course.course_id / "outbound"
    if not outbound.is_dir() or not any(outbound.iterdir()):
        return f"nothing released yet by your instructor; the exchange is {exchange}"
    return None


def lab_command(course: Course, role: str, *, student_id: str | None = None, root: Path | None = None,
                ip: str = "127.0.0.1", port: int | None = None, token: str | None = None,
                extra_args: tuple[str, ...] = ()) -> tuple[list[str], dict, Path]:
    """The command line, environment and notebook folder of one role's JupyterLab.

    Parameters
    ----------
    course : Course
        The course (``load_course()``); its runtime folder is passed on to the server.
    role : str
        ``student`` or ``instructor``.
    student_id : str, optional
        The id submissions are recorded under; default: the login name, as nbgrader does.
    root : Path, optional
        Notebook folder; default: ``notebook_root(course, role, student_id)``.
    ip, port, token : optional
        Where the server listens (loopback by default) and its login token (default: Jupyter's,
        a random one printed in the log).
    extra_args : tuple of str
        Passed to ``jupyter lab`` as they are (e.g. ``--no-browser``).

    Returns
    -------
    (argv, env, root)
        Ready for ``subprocess.Popen(argv, env=env, cwd=root)`` or ``os.execve``.
    """
    if role not in ROLES:
        raise CourseError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    student_id = student_id or default_student_id()
    root = Path(root) if root is not None else notebook_root(course, role, student_id)
    env = dict(os.environ)
    # The role's folder comes first, ahead of anything the caller already had there.
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        p for p in (str(SERVER_CONFIG / role), os.environ.get("JUPYTER_CONFIG_PATH", "")) if p)
    # The config files in course/server/ load course.yml again; they must see this runtime folder.
    env["GANKIT_COURSE_RUNTIME"] = str(course.runtime_dir)
    if role == "student":
        env["GANKIT_STUDENT_ID"] = student_id
    # The Makefile's headless MPLBACKEND=Agg would hide every plot; kernels pick the inline backend.
    env.pop("MPLBACKEND", None)
    # Kernels and nbgrader's own `alembic` call must come from this interpreter's environment.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}", f"--ServerApp.ip={ip}"]
    if port is not None:
        argv += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    page = landing_page(course, student_id)
    if role == "student" and page.is_relative_to(root):
        # Open on the landing page; Jupyter prints this URL (with the token) and / redirects to it.
        argv.append(f"--LabApp.default_url=/lab/tree/{page.relative_to(root).as_posix()}")
    if os.geteuid() == 0:
        argv.append("--allow-root")  # containers and CI run as root; Jupyter refuses it otherwise
    argv += list(extra_args)
    return argv, env, root


def prepare_root(course: Course, role: str, root: Path, student_id: str | None = None) -> None:
    """Create what the server expects to exist: the course runtime layout for an instructor; for a
    student their folder (nbgrader's assignment list changes into it), its landing page, and an
    exchange kept in the runtime folder (one machine), so that the Assignment List shows an empty
    list before the first release instead of three errors about a missing exchange. A shared
    exchange elsewhere is never created here: a missing one is a missing mount."""
    if role == "instructor":
        ensure_runtime_layout(course)
    root.mkdir(parents=True, exist_ok=True)
    if role != "student":
        return
    student_id = student_id or default_student_id()
    own = student_dir(course, student_id)
    own.mkdir(parents=True, exist_ok=True)
    if not course.exchange_server.url:   # the Assignment List lists an empty exchange, not three errors
        ensure_local_exchange(course)
    atomic_write_text(landing_page(course, student_id), render_start(course, student_id, own))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=ROLES, default="student")
    parser.add_argument("--student", default=None, help="student id (default: your login name, as nbgrader uses it)")
    parser.add_argument("--root", default=None, help="notebook folder (default: see above)")
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=None)
    args, extra = parser.parse_known_args(argv)
    try:
        course = load_course()
        command, env, root = lab_command(course, args.role, student_id=args.student, root=args.root,
                                         ip=args.ip, port=args.port, extra_args=tuple(extra))
    except CourseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prepare_root(course, args.role, root, env.get("GANKIT_STUDENT_ID"))
    who = f"student {env['GANKIT_STUDENT_ID']}" if args.role == "student" else "instructor"
    exchange = course.exchange_server.url or course.exchange_dir
    print(f"JupyterLab for the {who} of {course.course_id}\n  notebooks: {root}\n"
          f"  exchange:  {exchange}\n  config:    {SERVER_CONFIG / args.role}", flush=True)
    if args.role == "student":
        print(f"  your work: {student_dir(course, env['GANKIT_STUDENT_ID'])} (the lab opens on START.md there)\n"
              + (f"  listening on {args.ip} only; from a laptop: ssh -N -L 8888:127.0.0.1:8888 this-server "
                 "(the port Jupyter prints; README, \"Two servers\")" if args.ip in ("127.0.0.1", "localhost", "::1")
                 else f"  listening on {args.ip}: anyone who reaches it needs the token"), flush=True)
        problem = exchange_state(course)
        if problem:
            print(f"  ({problem})", flush=True)
    os.chdir(root)  # nbgrader's extensions also read an nbgrader_config.py in the working folder
    os.execve(sys.executable, command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
