"""course/SYLLABUS.md, generated from course/course.yml (a test checks the committed copy is current), and
the landing page a student's lab opens on (:func:`render_start`)."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from grading.course import REPO_ROOT, Course, Week


def render(course: Course) -> str:
    lines = [
        f"# {course.title}",
        "",
        f"{course.term} · course id `{course.course_id}` · generated from `course/course.yml` by "
        "`make syllabus`; edit that file, not this one.",
        "",
        "## Schedule",
        "",
        "| week | topic | released | due | points | notebook | assignment |",
        "| ---: | --- | --- | --- | ---: | --- | --- |",
    ]
    for w in course.weeks:
        notebook = f"[{w.notebook}](../{w.notebook})" if w.notebook_path().exists() else f"{w.notebook} (coming)"
        assignment = w.assignment if w.assignment_dir().is_dir() else f"{w.assignment} (coming)"
        lines.append(f"| {w.week} | {w.title} | {w.release:%a %d %b} | {w.due:%a %d %b %H:%M} | "
                     f"{w.points:g} | {notebook} | {assignment} |")
    lines += ["", "## Reading", ""]
    for w in course.weeks:
        lines.append(f"### Week {w.week}: {w.title}")
        lines.append("")
        for p in w.papers:
            lines.append(f"- {p.authors}, [{p.title}]({p.link}), {p.venue} {p.year}.")
        lines.append("")
    late = course.late_policy
    lines += [
        "## Policies",
        "",
        f"- Late work: {late.penalty_per_day:.0%} of the score off per started day late, for up to "
        f"{late.max_days} days; later submissions score 0. The exchange's submission time counts.",
        f"- Autograding runs your notebook headless on CPU in smoke mode: each cell may take "
        f"{course.grading.cell_timeout_s} s and the whole notebook {course.grading.notebook_timeout_s} s. "
        "Test cells that never run score 0.",
        f"- Total points: {sum(w.points for w in course.weeks):g}.",
        "",
    ]
    return "\n".join(lines)


# --- the student's landing page ---------------------------------------------------------------
def course_now(course: Course, now: dt.datetime | None = None) -> dt.datetime:
    """``now`` (default: the clock) as a naive time in the course's timezone, as course.yml's dates are written."""
    try:
        zone = ZoneInfo(course.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.timezone.utc   # an unknown zone name: nbgrader refuses it too; UTC is the closest guess
    if now is None:
        now = dt.datetime.now(dt.timezone.utc)
    elif now.tzinfo is None:
        return now
    return now.astimezone(zone).replace(tzinfo=None)


def current_week(course: Course, now: dt.datetime) -> Week | None:
    """The week a student works on at ``now`` (course time): the released one due next; None
    before the first release and after the last due date."""
    open_weeks = [w for w in course.weeks if w.release <= now.date() and now <= w.due]
    return min(open_weeks, key=lambda w: w.due) if open_weeks else None


def render_start(course: Course, student_id: str, student_dir: Path, now: dt.datetime | None = None) -> str:
    """The Markdown page a student's lab opens on (``<student folder>/START.md``).

    This week's assignment and its due date (by ``now`` in the course's timezone), every week with
    its dates and a link to its paper notebook, where fetched assignments and training runs go, how
    to validate before submitting, and how to reach the lab from a laptop. Links are relative to
    ``student_dir`` so that JupyterLab opens them in the same lab (the server is rooted at the
    repository, which holds both that folder and notebooks/).
    """
    now = course_now(course, now)
    tz = course.timezone

    def link(target: Path, text: str) -> str:
        return f"[{text}]({os.path.relpath(target, student_dir)})"

    here = os.path.relpath(student_dir, REPO_ROOT) if student_dir.is_relative_to(REPO_ROOT) else str(student_dir)
    lines = [f"# {course.title}", "",
             f"{course.term} · course `{course.course_id}` · student `{student_id}` · written by `make lab` from "
             f"`course/course.yml` on {now:%a %d %b %Y %H:%M} ({tz}); it is rewritten each time the lab starts.", "",
             "## This week", ""]
    week = current_week(course, now)
    if week is not None:
        lines.append(f"**Week {week.week}: {week.title}.** Assignment `{week.assignment}`, released "
                     f"{week.release:%a %d %b}, **due {week.due:%a %d %b %Y %H:%M} ({tz})**.")
    elif now.date() < course.weeks[0].release:
        first = course.weeks[0]
        lines.append(f"The course has not started: week 1 ({first.title}) is released on {first.release:%a %d %b %Y} "
                     f"and due **{first.due:%a %d %b %Y %H:%M} ({tz})**.")
    else:
        lines.append("Every week's due date has passed; late work follows the late policy in the syllabus.")
    lines += ["",
              f"Fetch it from the menu *Nbgrader > Assignment List*: it lands in this folder, `{here}/<assignment>/`. "
              "Work in the `YOUR CODE HERE` / `YOUR ANSWER HERE` cells, then *Validate* and *Submit* there. "
              f"Nothing listed there yet means your instructor has released nothing yet (the exchange is "
              f"`{course.exchange_dir}`).", "",
              "## Schedule", "",
              f"Due dates are in {tz}.", "",
              "| week | topic | released | due | assignment | paper notebook |",
              "| ---: | --- | --- | --- | --- | --- |"]
    for w in course.weeks:
        notebook = link(w.notebook_path(), w.notebook) if w.notebook_path().exists() else f"{w.notebook} (coming)"
        mark = " **(this week)**" if week is not None and w.week == week.week else ""
        lines.append(f"| {w.week} | {w.title}{mark} | {w.release:%a %d %b} | {w.due:%a %d %b %H:%M} | "
                     f"`{w.assignment}` | {notebook} |")
    syllabus = REPO_ROOT / "course" / "SYLLABUS.md"
    lines += ["", f"Papers, points and the late policy: {link(syllabus, 'the syllabus')}.", "",
              "## Your training runs", "",
              "- The paper notebooks write their runs next to themselves, under "
              "`notebooks/runs/` (their paths are relative to the notebook's folder).",
              "- `gankit train ... --run-dir runs/NAME` from a terminal in the repository root writes under `runs/`; "
              "both folders show in the file browser on the left.",
              "- `gankit runs` lists background runs (`--background`) wherever they write; "
              "`gankit runs --attach ID` follows one.",
              "", "## Check your work offline", "",
              "- The grader runs your notebook on the CPU with `SMOKE = True` (a few steps on small embedded data). "
              "Add a cell `SMOKE = True` below the `parameters` cell and *Run All*: what the tests call must stay fast.",
              f"- The *Validate* button (notebook toolbar, and in the Assignment List) runs every cell under the "
              f"grader's limit of {course.grading.cell_timeout_s} s per cell and runs the visible tests; it needs no network.",
              "", "## Reaching this lab from your laptop", "",
              "The lab listens on 127.0.0.1 of the GPU server only, so nobody else on the network can reach it. "
              "Forward its port over SSH and open the URL `make lab` printed (with its token) on your laptop:", "",
              "    ssh -N -L 8888:127.0.0.1:8888 gpu-server", "",
              "Start the lab inside `tmux` (`tmux new -s lab make lab`; `tmux attach -t lab` later) so that it "
              "survives a dropped SSH connection; the README (\"Two servers\") also shows a systemd user service.", ""]
    return "\n".join(lines)
