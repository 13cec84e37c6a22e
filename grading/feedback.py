"""Feedback that does not pretend: a written answer nobody has graded yet is not a 0.

nbgrader's GetGrades copies each cell's score from the gradebook into the notebook; the gradebook's
``score`` of a manually graded cell nobody has scored yet (no manual score, no auto score) is 0,
and nbgrader's feedback template prints it as "0.0 / 4.0", so a student reading feedback released before the TAs finished
thinks their essay earned nothing. ``MarkPendingGrades`` runs after GetGrades and marks those cells
``pending``, summing their points into ``resources['nbgrader']['pending_points']``; our template
(grading/templates/gankit_feedback, set by grading/nbgrader_setup.configure_feedback_template)
prints "waiting for grading" for them and "20 / 24 so far; 4 points waiting for grading" on top.
The total itself is nbgrader's (the gradebook counts a missing score as 0), labelled "so far".
"""
from __future__ import annotations

from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor


def pending_grade_ids(db_url: str, notebook: str, assignment: str, student: str) -> set[str]:
    """grade_ids of the submission's cells with neither a manual nor an automatic score."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        submitted = gb.find_submission_notebook(notebook, assignment, student)
        return {g.name for g in submitted.grades if g.manual_score is None and g.auto_score is None}


class MarkPendingGrades(NbGraderPreprocessor):
    """After GetGrades: mark the grade cells with no score yet (a manual grade to come) and sum their points."""

    def preprocess(self, nb, resources):
        info = resources.setdefault("nbgrader", {})
        pending_ids = pending_grade_ids(info["db_url"], info["notebook"], info["assignment"], info["student"])
        pending = 0.0
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if (utils.is_grade(cell) or utils.is_task(cell)) and meta.get("grade_id") in pending_ids:
                meta["pending"] = True
                pending += float(meta.get("points") or 0)
        info["pending_points"] = pending
        return nb, resources
