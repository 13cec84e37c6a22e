"""The course's late policy (course.yml ``late_policy``) as an nbgrader plugin."""
from __future__ import annotations

import math

from nbgrader.plugins import LateSubmissionPlugin
from traitlets import Float, Integer


class CourseLatePolicy(LateSubmissionPlugin):
    """``penalty_per_day`` of the score off per started day late; after ``max_days``, everything."""

    penalty_per_day = Float(0.0).tag(config=True)
    max_days = Integer(0).tag(config=True)

    def late_submission_penalty(self, student_id, score, total_seconds):
        if total_seconds <= 0 or not score:
            return 0
        days = math.ceil(total_seconds / 86400)
        if days > self.max_days:
            self.log.warning("%s is %d day(s) late, past the %d allowed: scores 0", student_id, days, self.max_days)
            return score
        return round(score * min(1.0, self.penalty_per_day * days), 6)
