"""The course's grading package: nbgrader stays the source of truth for assignments, checksums,
the gradebook and feedback; this package configures it from course/course.yml, adds the
preprocessors that run papermill's parameter injection inside nbgrader's autograde pass and
fix nbgrader's known traps, and drives the whole pipeline (``python -m grading ...``)."""
