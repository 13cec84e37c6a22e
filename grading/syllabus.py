"""course/SYLLABUS.md, generated from course/course.yml (a test checks the committed copy is current)."""
from __future__ import annotations

from grading.course import Course


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
