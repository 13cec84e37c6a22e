"""How the course application plugs into the `gankit` command, so that gankit never imports grading.

pyproject.toml registers these under entry-point groups that gankit reads:

* ``gankit.commands``: ``grade`` -> :func:`add_grade_command` (`gankit grade ASSIGNMENT ...`);
* ``gankit.doctor``: ``grading`` -> :func:`grading.doctor.findings` (the course's and the
  grader's checks in `gankit doctor`).

gankit loads this module to build its parser for every command, `gankit runs` included, which
must answer at once: nothing heavy (nbgrader, torch, grading.batch) is imported here until the
command being run is `grade`.
"""
from __future__ import annotations

GRADE_HELP = ("TA: grade every collected submission of an assignment in parallel "
              "(one GPU per job, resumable; Dask with --scheduler)")


def add_grade_command(subparsers, full: bool):
    """Add `grade` to gankit's subcommands; its options and what it runs only when ``full``
    (the command being run is `grade`, or the whole parser is wanted)."""
    grade = subparsers.add_parser("grade", help=GRADE_HELP)
    if full:
        from grading.batch import add_arguments, run_command
        add_arguments(grade)
        grade.set_defaults(func=run_command)
    return grade
