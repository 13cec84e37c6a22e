"""How much faster is `gankit grade` than nbgrader's serial autograde, and what does the sandbox cost?

One class of N week-1 submissions (answer keys and untouched notebooks, alternating), with its
hidden checks' answer keys built, is graded three times in one run, each in a fresh copy of the
same course: nbgrader's own serial autograde, `gankit grade` with W workers and the sandbox, and
`gankit grade` with W workers without it.
Printed: the wall times, the speed-up over nbgrader, the ratio to the limit (the sum of the jobs'
own times divided by W: 1.0 is perfect parallel use) and the sandbox's cost per notebook.
Goals from the issue: within 1.15x of the limit; >= 1.8x nbgrader on 2 cores; sandbox <= 0.3 s.

    .venv/bin/python benchmarks/grading.py [--students 8] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `grading` package: look in the repository root instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)
# nbgrader shells out to `alembic` when it creates a gradebook: the one of this environment.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


def build_class(root: Path, students: int) -> Path:
    """A runtime with N collected week-1 submissions, nobody graded."""
    from grading import pipeline
    from grading.checks import build_keys
    from grading.course import load_course
    from grading.demo import ASSIGNMENT, NOTEBOOK, solutions

    os.environ["GANKIT_COURSE_RUNTIME"] = str(root / "class")
    course = load_course()
    pipeline.generate(course, ASSIGNMENT)
    pipeline.release(course, ASSIGNMENT)
    key = solutions(course)
    for i in range(students):
        student = f"student{i:02d}"
        folder = pipeline.fetch(course, ASSIGNMENT, root / "homes" / student)
        if i % 2 == 0:   # every other student hands in the answer key, the rest hand in the stubs
            nb = nbformat.read(folder / NOTEBOOK, as_version=4)
            for cell in nb.cells:
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
                if grade_id in key:
                    cell.source = key[grade_id]
            nbformat.write(nb, folder / NOTEBOOK)
        pipeline.submit(course, ASSIGNMENT, student, root / "homes" / student)
    pipeline.collect(course, ASSIGNMENT)
    # The answer keys, built once here, outside the timed runs: each copy of this runtime finds them
    # up to date, where nbgrader's run and `gankit grade` would each build them first.
    build_keys(course, ASSIGNMENT)
    return root / "class"


def fresh_course(template: Path, target: Path):
    from grading.course import load_course

    shutil.copytree(template, target, symlinks=True)
    os.environ["GANKIT_COURSE_RUNTIME"] = str(target)
    return load_course()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from grading import batch, pipeline
    from grading.demo import ASSIGNMENT

    with tempfile.TemporaryDirectory(prefix="gankit-bench-grading-") as tmp:
        root = Path(tmp)
        template = build_class(root, args.students)

        course = fresh_course(template, root / "serial")
        start = time.perf_counter()
        pipeline.autograde(course, ASSIGNMENT)
        serial = time.perf_counter() - start

        timings = {}
        for label, sandbox in (("sandboxed", True), ("unsandboxed", False)):
            course = fresh_course(template, root / label)
            start = time.perf_counter()
            results = batch.grade(course, ASSIGNMENT, workers=args.workers, gpus="none", progress=False,
                                  sandbox=sandbox)
            wall = time.perf_counter() - start
            failed = [s for s, r in results.items() if r.status != "graded"]
            assert not failed, f"{label}: {failed} failed"
            timings[label] = (wall, [r.duration_s for r in results.values()])

    wall, jobs = timings["sandboxed"]
    limit = sum(jobs) / args.workers
    per_notebook = statistics.mean(jobs) - statistics.mean(timings["unsandboxed"][1])
    print(f"{args.students} submissions, {args.workers} workers, {os.cpu_count()} cores")
    print(f"nbgrader autograde, serial:        {serial:7.1f} s")
    print(f"gankit grade, sandboxed:           {wall:7.1f} s   ({serial / wall:.2f}x nbgrader; goal >= 1.8)")
    print(f"  limit (sum of job times / W):    {limit:7.1f} s   (wall / limit {wall / limit:.2f}; goal <= 1.15)")
    print(f"gankit grade, no sandbox:          {timings['unsandboxed'][0]:7.1f} s")
    print(f"  sandbox cost per notebook:       {per_notebook:+7.2f} s   (goal <= 0.3)")


if __name__ == "__main__":
    main()
