# nbgrader reads this file on the instructor's server (this folder is on JUPYTER_CONFIG_PATH): the
# formgrader and the assignment list see the course exactly as `cd course && nbgrader ...` does,
# through the same function on the same course.yml as course/nbgrader_config.py.
import pathlib
import sys

# The repository root, so `grading` imports even where the kit is not pip-installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))

from grading.course import load_course  # noqa: E402
from grading.nbgrader_setup import configure  # noqa: E402

c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file
configure(c, load_course())
