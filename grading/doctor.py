"""The course's checks in `gankit doctor`: course.yml, the exchange, the Assignment List, and the
TAs' sandboxed grading.

gankit/doctor.py checks the machine (GPU, driver, torch build, data, disk, memory) and never
imports this package; pyproject.toml registers :func:`findings` in the ``gankit.doctor``
entry-point group, and gankit appends what it returns. Like gankit's checks, facts are gathered in
one place (:func:`gather`) and judged by a pure function (:func:`diagnose`), so every verdict is
tested with faked facts: a course.yml that does not load (a misspelt key), an exchange that does
not exist yet or is not writable (students cannot submit; grading/exchange_doctor.py checks it from the
side given by ``gankit doctor --role student|instructor``), no nbgrader JupyterLab extension, no
bubblewrap (TAs' sandboxed grading), no process limit for sandboxed kernels (a root grader without
a writable cgroup cannot stop a fork bomb).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gankit.doctor import Finding
from grading.exchange_doctor import ExchangeFacts, diagnose_exchange, gather_exchange, guess_role


@dataclass
class CourseFacts:
    course: str | None = None          # "<course id> (<course.yml path>)" when course.yml loads
    course_problem: str | None = None  # the CourseError when it does not
    exchange: Path | None = None
    nbgrader_lab: bool | None = None   # nbgrader's JupyterLab extension (assignment list) installed
    bubblewrap: str | None = None      # "ok", "missing", or why `bwrap` cannot make a sandbox here
    process_limit: tuple[str, str] | None = None  # (mechanism, detail): grading.sandbox.process_limit()
    role: tuple[str, str] | None = None            # (student|instructor, how it was decided)
    exchange_server: tuple[bool, str] | None = None  # a student's HTTP exchange: (answers, why) (grading/exchange_http.py)
    exchange_facts: ExchangeFacts | None = None    # the exchange seen from this account (grading/exchange_doctor.py)


def diagnose(facts: CourseFacts) -> list[Finding]:
    findings = []
    if facts.course_problem is not None:
        findings.append(Finding("error", facts.course_problem))
    elif facts.course is not None:
        findings.append(Finding("ok", f"course {facts.course} is valid"))
    if facts.role is not None:
        findings.append(Finding("ok", f"checked as the {facts.role[0]}'s server: {facts.role[1]}"))
    if facts.exchange_server is not None:
        answers, line = facts.exchange_server
        findings.append(Finding("ok" if answers else "error", line))
    elif facts.exchange_facts is not None and facts.role is not None:
        findings += diagnose_exchange(facts.exchange_facts, facts.role[0])
    elif facts.exchange is not None:
        if not facts.exchange.is_dir():
            findings.append(Finding("warn", f"nbgrader exchange {facts.exchange} does not exist yet "
                                    "(the instructor's first release creates it)"))
        elif not os.access(facts.exchange, os.W_OK):
            findings.append(Finding("error", f"nbgrader exchange {facts.exchange} is not writable: "
                                    "students cannot submit (ask the admin: chmod 1777)"))
        else:
            findings.append(Finding("ok", f"nbgrader exchange {facts.exchange} is writable"))
    if facts.nbgrader_lab is False:
        findings.append(Finding("error", "nbgrader's JupyterLab extension is missing: no Assignment List to "
                                "fetch and submit (`make setup` installs it with nbgrader)"))
    elif facts.nbgrader_lab:
        findings.append(Finding("ok", "nbgrader's JupyterLab extension (Assignment List, Validate) is installed"))
    if facts.bubblewrap == "missing":
        findings.append(Finding("warn", "bubblewrap is not installed: TAs cannot grade in a sandbox "
                                "(`apt-get install bubblewrap`; students do not need it)"))
    elif facts.bubblewrap not in (None, "ok"):
        findings.append(Finding("warn", f"bubblewrap cannot make a sandbox here: {facts.bubblewrap} (unprivileged "
                                "user namespaces may be off: sysctl kernel.unprivileged_userns_clone=1)"))
    elif facts.bubblewrap == "ok":
        findings.append(Finding("ok", "bubblewrap makes sandboxes (for grading)"))
    if facts.process_limit is not None:
        mechanism, detail = facts.process_limit
        if mechanism in ("cgroup2", "cgroup1", "nproc"):
            findings.append(Finding("ok", f"sandboxed kernels' processes are capped ({mechanism}): {detail}"))
        else:   # "none" says itself what to change; "unknown" says why it could not be checked
            findings.append(Finding("warn", f"sandboxed kernels' processes are not capped: {detail}"))
    return findings


def gather() -> CourseFacts:
    from grading.course import CourseError, load_course

    facts = CourseFacts()
    try:
        course = load_course()
        facts.course = f"{course.course_id} ({course.source_file})"
        facts.exchange = course.exchange_dir
        facts.role = guess_role(course)
        if course.exchange_server.url and facts.role[0] == "student":
            # No shared folder on a student's server: the exchange is the course server's, over HTTP.
            from grading.exchange_http import probe

            facts.exchange_server = probe(course.exchange_server.url, course.course_id)
        else:   # an instructor's server holds the folder the HTTP exchange serves: its modes still matter
            facts.exchange_facts = gather_exchange(course)
    except CourseError as err:
        facts.course_problem = str(err)
    facts.nbgrader_lab = (Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "@jupyter" / "nbgrader").is_dir()
    if importlib.util.find_spec("grading.sandbox") is None:
        return facts    # a student copy (grading/student_copy.py) has no grader: nothing of the TAs' to check
    facts.bubblewrap = bubblewrap_state()
    try:
        from grading.sandbox import process_limit
        limit = process_limit()
        facts.process_limit = (limit.mechanism, limit.detail)
    except Exception as err:  # a broken sandbox module must not hide the rest of the report
        facts.process_limit = ("unknown", f"could not check: {err}")
    return facts


def findings() -> list[Finding]:
    """The ``gankit.doctor`` entry point: this package's verdicts on this machine."""
    return diagnose(gather())


def bubblewrap_state() -> str:
    """"ok" when ``bwrap`` runs a command in a fresh namespace, else "missing" or its error."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "missing"
    try:
        result = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    return "ok" if result.returncode == 0 else (result.stderr.strip() or f"exit {result.returncode}")
