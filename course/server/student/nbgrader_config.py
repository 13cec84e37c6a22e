# nbgrader reads this file on a student's server (this folder is on JUPYTER_CONFIG_PATH): the
# assignment list fetches from and submits to the course's exchange, and Validate runs cells under
# the grader's time limit. Everything comes from course.yml: change the course there, not here.
import os
import pathlib
import sys

# The repository root, so `grading` imports even where the kit is not pip-installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))

from grading.course import load_course  # noqa: E402
from grading.nbgrader_setup import configure_student  # noqa: E402

c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file
# grading/lab.py passes the student id it announced; unset, nbgrader uses the login name.
configure_student(c, load_course(), os.environ.get("GANKIT_STUDENT_ID") or None)
