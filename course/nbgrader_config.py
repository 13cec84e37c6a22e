# nbgrader reads this file when run from course/ (`cd course && nbgrader autograde ...`) and the
# grading package loads it for every step of `make demo` / `python -m grading ...`. Everything in
# it comes from course.yml: change the course there, not here.
import pathlib
import sys

# The repository root, so `grading` imports even where the kit is not pip-installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from grading.course import load_course  # noqa: E402
from grading.nbgrader_setup import configure  # noqa: E402

c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file
configure(c, load_course())
