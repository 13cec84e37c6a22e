"""What a TA reads after an assignment is graded: a CSV with one row per (student, graded cell)
and one self-contained HTML page for the class.

Two sources, read only: nbgrader's gradebook (points, max points, manual grades) and the
autograded notebooks (what happened in each cell). Our preprocessors (grading/preprocessors.py)
write every trap into the cell's outputs as an error named ``CellTimeoutError``, ``NotRun`` or
``KernelDied``; nbclient stamps each executed cell with ``metadata.execution`` timestamps. The
batch grader may add ``runs``: ``{student: {"gpu", "duration_s", "status", "reason"}}``, one
entry per submission.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import re
import statistics
from pathlib import Path

import nbformat

from gankit.io import atomic_write, atomic_write_text
from grading import gradebook
from grading.course import Course

COLUMNS = ("student", "notebook", "cell", "points", "max", "status", "reason", "duration_s", "gpu")
STATUSES = ("passed", "partial", "failed", "timeout", "not run", "needs manual grade", "error")
FAILURES = ("failed", "timeout", "not run", "error")   # the rows of the report's failure table
TRAPS = {"CellTimeoutError": "timeout", "NotRun": "not run", "KernelDied": "error"}
REASON_CHARS = 240          # one line in a spreadsheet cell; the feedback HTML has the rest
NO_SCORE = "no score in the gradebook"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ARROW = re.compile(r"^-+>\s*\d+\s?(.*)$", re.M)  # IPython marks the failing line "----> 12 code"


class ReportError(RuntimeError):
    """The gradebook or the assignment to report on does not exist."""


def _one_line(text: str) -> str:
    text = " ".join(ANSI.sub("", text).split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def error_reason(output: dict) -> str:
    """Return one readable line for an ``error`` output: 'ename: evalue', or for our traps (whose
    evalue may be empty) the text they put in the traceback, or for a bare ``assert`` the line
    that failed."""
    ename, evalue = output.get("ename", "Error"), output.get("evalue", "")
    traceback = ANSI.sub("", "\n".join(output.get("traceback", [])))
    if ename in TRAPS:
        text = evalue or traceback.rsplit(f"{ename}:", 1)[-1]
        return _one_line(text)
    if evalue.strip():
        return _one_line(f"{ename}: {evalue}")
    failing = ARROW.findall(traceback)
    return _one_line(f"{ename} at `{failing[-1].strip()}`" if failing else ename)


def _unanswered(cell: dict) -> bool:
    """True for a solution cell left exactly as released (nbgrader scores it 0, 'No response.')."""
    from nbgrader import utils

    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("solution")) and meta.get("checksum") == utils.compute_checksum(cell)


def cell_status(cell: dict | None, points: float | None, max_points: float,
                needs_manual: bool = False, after: str = "") -> tuple[str, str]:
    """Return ``(status, reason)`` of one graded cell, status one of STATUSES.

    ``cell`` is the cell of the autograded notebook (None when there is none), ``points`` the
    gradebook's score (manual if given, else auto; None while a manual grade is pending) and
    ``after`` a note on an earlier trap in the notebook, appended to the reason of a failure.
    """
    errors = [o for o in (cell or {}).get("outputs", []) if o.get("output_type") == "error"]
    trapped = [o for o in errors if o.get("ename") in TRAPS]
    if points is None:
        if needs_manual:
            return "needs manual grade", "waiting for a grade in formgrader"
        if trapped:
            return "error", error_reason(trapped[-1])
        return "error", NO_SCORE
    if points >= max_points:
        return "passed", ""         # also a TA's manual override of a cell that failed
    if trapped:                     # a timeout wins over the KeyboardInterrupt it causes
        return TRAPS[trapped[-1]["ename"]], error_reason(trapped[-1])
    if points > 0:
        return "partial", f"{points:g} of {max_points:g} points"
    plain = [o for o in errors if o.get("ename") != "KeyboardInterrupt"] or errors
    if plain:
        return "failed", error_reason(plain[-1]) + after
    if cell is not None and _unanswered(cell):
        return "failed", "no answer: the cell is as it was released"
    return "failed", f"0 of {max_points:g} points"


def _timestamp(text: str) -> dt.datetime:
    # nbclient writes '2027-01-12T10:00:00.123456Z'; Python 3.10's fromisoformat takes neither
    # the 'Z' nor fractions other than 3 or 6 digits.
    head, _, frac = text.strip().replace("Z", "+00:00").partition(".")
    if frac:
        digits = re.match(r"\d*", frac).group()
        head += "." + digits[:6].ljust(6, "0") + frac[len(digits):]
    return dt.datetime.fromisoformat(head)


def cell_duration(cell: dict) -> float | None:
    """Return the seconds a cell ran (nbclient's 'iopub.execute_input' to 'shell.execute_reply'),
    or None when it was not run or the kernel died before replying."""
    stamps = cell.get("metadata", {}).get("execution", {})
    try:
        start = _timestamp(stamps["iopub.execute_input"])
        end = _timestamp(stamps["shell.execute_reply"])
    except (KeyError, ValueError, AttributeError):
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def _read_autograded(course: Course, assignment_id: str, student: str, notebook: str):
    """Return ``({grade_id: (cell, after)}, runtime_s)`` of one autograded notebook, or None.

    ``after`` names the last earlier cell that timed out, killed the kernel or (not being a test)
    raised, so a NameError in a test cell reads as the consequence it is; ``runtime_s`` sums every
    code cell's duration.
    """
    path = course.runtime_dir / "autograded" / student / assignment_id / f"{notebook}.ipynb"
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):     # missing (nbgrader removes a failed one) or unreadable
        return None
    cells, runtime, after = {}, 0.0, ""
    for cell in nb.cells:
        if cell.cell_type != "code" and "nbgrader" not in cell.metadata:
            continue
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if grade_id:
            cells[grade_id] = (cell, after)
        runtime += cell_duration(cell) or 0.0
        names = [o.get("ename") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        is_test = meta.get("grade") and not meta.get("solution")
        name = grade_id or f"In[{cell.get('execution_count') or '?'}]"   # as tracebacks name it
        if "CellTimeoutError" in names:
            after = f"; earlier, cell {name} timed out"
        elif "KernelDied" in names:
            after = f"; earlier, cell {name} killed the kernel"
        elif names and not is_test and "NotRun" not in names:
            # A solution or setup cell that raised leaves names undefined for the tests below.
            after = f"; earlier, cell {name} raised {names[-1]}"
    return cells, round(runtime, 3)


def _score(grade) -> float | None:
    """The gradebook's points of one Grade: a manual score overrides the autograder's."""
    score = grade.manual_score if grade.manual_score is not None else grade.auto_score
    return None if score is None else float(score)


def _collect(course: Course, assignment_id: str, runs: dict | None):
    """Return ``(rows, runtimes, students)``: cell_rows' rows, {notebook: {student: seconds}} and
    the students that have a submission in the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    runs = runs or {}
    url = course.gradebook_url
    if not gradebook.exists(url):      # opening it would create an empty gradebook
        raise ReportError(f"{gradebook.display(url)} does not exist: generate and autograde {assignment_id} first")
    graded: dict[str, list[tuple]] = {}   # student -> [(notebook, grade_id, points, max, manual)]
    with Gradebook(url, course.course_id) as gb:
        try:
            assignment = gb.find_assignment(assignment_id)
        except MissingEntry:
            raise ReportError(f"{assignment_id} is not in the gradebook {gradebook.display(url)}") from None
        expected = [(nb.name, c.name, float(c.max_score)) for nb in assignment.notebooks
                    for c in list(nb.grade_cells) + list(nb.task_cells)]
        for submission in assignment.submissions:
            graded[submission.student.id] = [
                (nb.name, g.name, _score(g), float(g.max_score), bool(g.needs_manual_grade))
                for nb in submission.notebooks for g in nb.grades]
    in_gradebook = sorted(graded)
    # A submission the batch grader saw fail may have left nothing in the gradebook at all.
    for student in runs:
        graded.setdefault(student, [(nb, gid, None, mx, False) for nb, gid, mx in expected])

    rows, runtimes = [], {}
    for student in sorted(graded):
        run = runs.get(student) or {}
        run_failed = run.get("status") == "failed"
        notebooks = {}
        for notebook, grade_id, points, max_points, manual in graded[student]:
            if notebook not in notebooks:
                notebooks[notebook] = _read_autograded(course, assignment_id, student, notebook)
                if notebooks[notebook] is not None:
                    runtimes.setdefault(notebook, {})[student] = notebooks[notebook][1]
            autograded = notebooks[notebook]
            cell, after = (autograded[0] if autograded else {}).get(grade_id, (None, ""))
            status, reason = cell_status(cell, points, max_points, manual, after)
            # The gradebook has nothing better: no autograded notebook, or no score and no trap.
            if run_failed and (autograded is None or reason == NO_SCORE):
                status, reason = "error", _one_line(run.get("reason") or "the batch grader failed")
            elif autograded is None and status not in ("passed", "needs manual grade"):
                reason = (reason + "; " if reason else "") + "no autograded notebook"
            rows.append({"student": student, "notebook": notebook, "cell": grade_id,
                         "points": points, "max": max_points, "status": status, "reason": reason,
                         "duration_s": None if cell is None else cell_duration(cell),
                         "gpu": run.get("gpu")})
    return rows, runtimes, in_gradebook


def cell_rows(course: Course, assignment_id: str, runs: dict | None = None) -> list[dict]:
    """Return one dict per (student, graded cell) of every submission of ``assignment_id``, keys
    COLUMNS; points None while a manual grade is pending, duration_s None for a cell not run."""
    return _collect(course, assignment_id, runs)[0]


def _csv_value(value) -> str:
    """Return the CSV text of a value: '' for None, 3 rather than 3.0."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def write_cell_csv(course: Course, assignment_id: str, runs: dict | None = None) -> Path:
    """Write ``<runtime>/reports/<assignment>_cells.csv`` (columns COLUMNS) atomically; return its path."""
    target = course.runtime_dir / "reports" / f"{assignment_id}_cells.csv"
    rows = cell_rows(course, assignment_id, runs)
    # "\n" whatever the platform: text mode must not turn csv's "\r\n" into "\r\r\n" on Windows.
    with atomic_write(target, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_value(row[k]) for k in COLUMNS} for row in rows)
    return target


def _figure(width: float, height: float):
    """Return ``(figure, axes)``: a bare Figure on the Agg canvas (no pyplot, so no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> str:
    """Return the figure as base64 PNG text, for a data: URL."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _score_histogram(title: str, points: list[float], max_points: float, pending: int) -> str:
    """Return a base64 PNG: how many students got each score."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(4.0, 2.6)
    top = max_points if max_points > 0 else 1.0
    # Scores are mostly whole points: one bar centred on each, else ten bins.
    bins = [k - 0.5 for k in range(int(top) + 2)] if top == int(top) and top <= 20 else 10
    ax.hist(points, bins=bins, range=(0.0, top), color="#4c72b0", edgecolor="white")
    ax.set_xlabel(f"points (of {max_points:g})")
    ax.set_ylabel("students")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title + (f"  ({pending} waiting for a manual grade)" if pending else ""), fontsize=9)
    return _png(fig)


def _runtime_chart(title: str, seconds: dict[str, float]) -> str:
    """Return a base64 PNG: a bar per submission, slowest on top (a histogram for a large class)."""
    if len(seconds) > 40:
        fig, ax = _figure(5.5, 3.0)
        ax.hist(list(seconds.values()), bins=20, color="#55a868", edgecolor="white")
        ax.set_xlabel("seconds")
        ax.set_ylabel("submissions")
    else:
        ordered = sorted(seconds.items(), key=lambda item: item[1])
        fig, ax = _figure(5.5, 0.8 + 0.25 * len(ordered))
        ax.barh([name for name, _ in ordered], [value for _, value in ordered], color="#55a868")
        ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def write_class_report(course: Course, assignment_id: str, runs: dict | None = None) -> Path:
    """Write ``<runtime>/reports/<assignment>_report.html`` atomically and return its path: a
    summary, a score histogram per question, runtime per notebook and a table of every failure.
    Everything from a submission (ids, error messages) is HTML-escaped."""
    rows, runtimes, in_gradebook = _collect(course, assignment_id, runs)
    runs = runs or {}
    esc = lambda value: html.escape(str(value), quote=True)
    questions: dict[tuple, list[dict]] = {}
    for row in rows:
        questions.setdefault((row["notebook"], row["cell"]), []).append(row)
    several = len({notebook for notebook, _ in questions}) > 1
    label = lambda notebook, cell: f"{notebook}: {cell}" if several else cell

    totals = [sum(r["points"] or 0.0 for r in rows if r["student"] == s) for s in in_gradebook]
    max_total = sum(group[0]["max"] for group in questions.values())
    pending = sum(r["status"] == "needs manual grade" for r in rows)
    failed_runs = sorted(s for s, run in runs.items() if (run or {}).get("status") == "failed")
    summary = [f"{len(in_gradebook)} students graded; max points {max_total:g}"]
    if totals:
        summary.append(f"total: mean {statistics.mean(totals):.2f}, median {statistics.median(totals):g} "
                       f"(before late penalties; cells waiting for a manual grade count 0)")
    summary.append(f"cells waiting for a manual grade: {pending}")
    if failed_runs:
        summary.append("the batch grader failed on: " + ", ".join(failed_runs))
    # graded, with a note: files of the submission left out at intake (links, pipes, hard links)
    summary += [f"{s}: {run['reason']}" for s, run in sorted(runs.items())
                if (run or {}).get("status") == "graded" and (run or {}).get("reason")]

    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
             f"<title>{esc(assignment_id)}: class report</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:70em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
             "img{margin:.3em}</style></head><body>",
             f"<h1>{esc(course.title)}</h1><h2>{esc(assignment_id)}: class report</h2>",
             "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in summary) + "</ul>",
             "<h3>Scores per question</h3><div>"]
    for (notebook, cell), group in questions.items():
        scored = [r["points"] for r in group if r["points"] is not None]
        waiting = sum(r["status"] == "needs manual grade" for r in group)
        image = _score_histogram(label(notebook, cell), scored, group[0]["max"], waiting)
        parts.append(f"<img class='score-hist' alt='scores of {esc(label(notebook, cell))}' "
                     f"src='data:image/png;base64,{image}'>")
    parts.append("</div><h3>Runtime</h3><div>")
    charts = {f"{notebook}: sum of cell run times": seconds for notebook, seconds in runtimes.items()}
    timed = {s: float(run["duration_s"]) for s, run in runs.items() if (run or {}).get("duration_s") is not None}
    if timed:
        charts["whole submission, as timed by the batch grader"] = timed
    for title, seconds in charts.items():
        parts.append(f"<img class='runtime' alt='{esc(title)}' src='data:image/png;base64,"
                     f"{_runtime_chart(title, seconds)}'>")
    failures = [r for r in rows if r["status"] in FAILURES]
    parts.append(f"</div><h3>Failures ({len(failures)})</h3>")
    parts.append("<table class='failures'><tr><th>student</th><th>cell</th><th>status</th><th>reason</th></tr>")
    parts += [f"<tr><td>{esc(r['student'])}</td><td>{esc(label(r['notebook'], r['cell']))}</td>"
              f"<td>{esc(r['status'])}</td><td>{esc(r['reason'])}</td></tr>" for r in failures]
    parts.append("</table></body></html>\n")
    target = course.runtime_dir / "reports" / f"{assignment_id}_report.html"
    atomic_write_text(target, "\n".join(parts))
    return target
