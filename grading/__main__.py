"""python -m grading COMMAND: the instructor's and TA's steps, and the demo (see `make help`)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grading import pipeline
from grading.course import REPO_ROOT, CourseError, load_course


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole pipeline on embedded data with a simulated class")
    demo.add_argument("--runtime", default=None, help="runtime folder for the demo (default: runtime/demo)")
    sub.add_parser("data", help="build the embedded datasets under the runtime folder")
    sub.add_parser("syllabus", help="write course/SYLLABUS.md from course.yml")
    for name in ("generate", "release", "collect"):
        sub.add_parser(name).add_argument("assignment")
    fb = sub.add_parser("feedback", help="write feedback pages and release them to students who used the exchange")
    fb.add_argument("assignment")
    fb.add_argument("--course", default=None, metavar="DIR",
                    help="another nbgrader course folder (graded with `gankit grade ASSIGNMENT --course DIR`)")
    zc = sub.add_parser("zip_collect", help="collect submissions downloaded from an LMS (Canvas/Moodle archives)")
    zc.add_argument("assignment")
    zc.add_argument("archives", nargs="+", type=Path)
    zc.add_argument("--pattern", default=None, help="regex for a file name with (?P<student_id>...) and "
                    "(?P<file_id>...) [(?P<timestamp>...)]; default <student id>_<anything>_<notebook>.ipynb")
    auto = sub.add_parser("autograde", help="autograde collected submissions headless")
    auto.add_argument("assignment")
    auto.add_argument("--student", default=None)
    keys = sub.add_parser("keys", help="build the answer keys of an assignment's hidden checks")
    keys.add_argument("assignment")
    keys.add_argument("--force", action="store_true", help="rebuild even when the source is unchanged")
    sub.add_parser("grades", help="export grades to CSV and print them")
    sc = sub.add_parser("student_copy", help="write the repository students clone (no solutions) into DEST, a git repo")
    sc.add_argument("dest", type=Path)
    ex = sub.add_parser("exchange", help="the HTTP exchange for students' servers that share no folder")
    ex_sub = ex.add_subparsers(dest="exchange_command", required=True)
    ex_serve = ex_sub.add_parser("serve", help="serve the course's exchange folder over HTTP")
    ex_serve.add_argument("--listen", default=None, metavar="HOST:PORT",
                          help="default: course.yml exchange_server.listen (127.0.0.1:8765)")
    ex_sub.add_parser("add-student", help="print a new token for a student (shown once)").add_argument("student_id")
    ex_sub.add_parser("remove-student", help="revoke a student's token").add_argument("student_id")
    ex_sub.add_parser("list-students", help="the students who hold a token")
    args = parser.parse_args(argv)

    try:
        if args.command == "demo":
            os.environ["GANKIT_COURSE_RUNTIME"] = str(Path(args.runtime or REPO_ROOT / "runtime" / "demo").resolve())
            import shutil
            course = load_course()
            shutil.rmtree(course.runtime_dir, ignore_errors=True)  # the demo always starts clean
            from grading import demo as demo_module
            return 1 if demo_module.run(course) else 0
        if args.command == "feedback":
            from grading.target import foreign_target
            done = pipeline.feedback(foreign_target(args.course) if args.course else load_course(), args.assignment)
            print(f"feedback released through the exchange to {len(done.released)} student(s)")
            if done.to_return:
                print(f"{len(done.to_return)} submission(s) came from an LMS, not the exchange, so nbgrader cannot "
                      f"release their feedback: return each student's pages from "
                      f"{done.folder}/<student>/{args.assignment}/ through the LMS ({', '.join(done.to_return)})")
            return 0
        if args.command == "student_copy":
            from grading.student_copy import build_student_copy
            build_student_copy(args.dest)
            return 0
        course = load_course()
        if args.command == "data":
            from gankit.data import prepare
            for name in ("mnist",):
                print(name, "->", prepare(name, course.data_dir, smoke=True))
        elif args.command == "syllabus":
            from grading.syllabus import render
            target = REPO_ROOT / "course" / "SYLLABUS.md"
            pipeline.write_text(target, render(course))
            print("wrote", target)
        elif args.command == "generate":
            print("student version in", pipeline.generate(course, args.assignment))
        elif args.command == "release":
            from grading import intake
            intake.check_exchange(course)
            pipeline.release(course, args.assignment)
        elif args.command == "collect":
            from grading import intake
            for student, stamp in intake.collect(course, args.assignment).items():
                print(student, stamp or "-")
        elif args.command == "zip_collect":
            from grading import intake
            students = intake.zip_collect(course, args.assignment, args.archives, pattern=args.pattern)
            print(f"collected {len(students)}: {', '.join(students)}")
        elif args.command == "autograde":
            pipeline.autograde(course, args.assignment, args.student)
        elif args.command == "keys":
            from grading.checks import build_keys
            built = build_keys(course, args.assignment, force=args.force)
            for notebook, path in built.items():
                print(f"{notebook}: {path}")
            if not built:
                print(f"{args.assignment} has no hidden checks (gankit.checks.hidden_check)")
        elif args.command == "exchange":
            from grading import exchange_server
            if args.exchange_command == "serve":
                exchange_server.serve(course, args.listen or course.exchange_server.listen,
                                      course.exchange_server.max_upload_mb)
            elif args.exchange_command == "add-student":
                token = exchange_server.add_student(course, args.student_id)
                print(f"token for {args.student_id} (shown once; only its hash is kept in "
                      f"{exchange_server.tokens_file(course)}):\n{token}\n"
                      f"The student writes it to ~/.config/gankit/exchange-token with mode 600.")
            elif args.exchange_command == "remove-student":
                exchange_server.remove_student(course, args.student_id)
                print(f"{args.student_id}'s token no longer works")
            else:
                print("\n".join(sorted(exchange_server.read_tokens(course))) or "no students hold a token yet")
        elif args.command == "grades":
            path = pipeline.export_grades(course)
            rows = pipeline.read_grades_csv(path)
            keys = ["assignment", "student_id", "score", "max_score"]
            print(pipeline.format_table([keys] + [[r.get(k, "") for k in keys] for r in rows]) if rows else "no grades yet")
            print("written to", path)
    except (CourseError, pipeline.PipelineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
