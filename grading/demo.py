"""`make demo`: one course week end to end on embedded data, with a simulated class.

Every student below is a situation TAs meet every term. Each one says what it deserves per test
cell; the demo exits non-zero when nbgrader + our preprocessors give anything else. The demo works
in its own runtime folder (runtime/demo by default) and never touches a real class's gradebook.
"""
from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

import nbformat

from grading import pipeline
from grading.course import Course

ASSIGNMENT = "week01_gan_foundations"
NOTEBOOK = "gan_foundations.ipynb"
AUTOGRADED = {  # grade_id: points, in notebook order
    "test_discriminator_loss": 3, "test_generator_losses": 3, "test_blocks": 4,
    "test_networks": 4, "test_train_step": 4, "test_training_ran": 2,
}
WRITTEN = "written_saturation"
DEMO_CELL_TIMEOUT_S = 20   # the infinite loop costs this twice; real grading uses course.yml's


def solutions(course: Course) -> dict[str, str]:
    """{grade_id: the instructor's solution code} from the source notebook, markers removed."""
    source = nbformat.read(course.week_of(ASSIGNMENT).assignment_dir() / NOTEBOOK, as_version=4)
    found = {}
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            lines = [ln for ln in cell.source.splitlines() if "### BEGIN SOLUTION" not in ln
                     and "### END SOLUTION" not in ln]
            found[meta["grade_id"]] = "\n".join(lines)
    return found


def _cells(nb) -> dict[str, nbformat.NotebookNode]:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if "nbgrader" in c.metadata}


def _solve(nb, sol, *grade_ids):
    cells = _cells(nb)
    for gid in grade_ids:
        cells[gid].source = sol[gid]


def _replace(nb, grade_id, old, new):
    cell = _cells(nb)[grade_id]
    if old not in cell.source:
        raise AssertionError(f"demo persona edit: {old!r} not found in cell {grade_id}")
    cell.source = cell.source.replace(old, new, 1)


ALL_CODE = ("losses", "dcgan", "train_step")


def full(nb, sol, course=None):
    _solve(nb, sol, *ALL_CODE, WRITTEN)


def untouched(nb, sol, course=None):
    pass


def partial(nb, sol, course=None):
    # Right losses but a sign error in the minimax loss, BatchNorm on D's input layer, no train_step.
    _solve(nb, sol, "losses", "dcgan")
    _replace(nb, "losses", "return -F.softplus(fake_logits).mean()", "return F.softplus(fake_logits).mean()")
    _replace(nb, "dcgan", "discriminator_block(channels, ndf, batch_norm=False)", "discriminator_block(channels, ndf)")
    _cells(nb)[WRITTEN].source = "The minimax loss saturates when D wins, so G learns slowly."


def in_train_step(code: str) -> Callable:
    """A persona: correct work, except that train_step first runs ``code`` (indented for its body)."""
    def edit(nb, sol, course=None):
        full(nb, sol)
        _replace(nb, "train_step", "fake = G(z)", code + "\n    fake = G(z)")
    return edit


# A segfault inside train_step (think: a broken CUDA extension).
kernel_crash = in_train_step("import ctypes; ctypes.string_at(0)  # segfaults")
infinite_loop = in_train_step("while True:  # waits for a condition that never comes\n        pass")


def tampered(nb, sol, course=None):
    # Wrong minimax loss, "fixed" by editing its test to `pass`; deletes the block tests too.
    full(nb, sol)
    _replace(nb, "losses", "return -F.softplus(fake_logits).mean()", "return torch.zeros(())")
    _cells(nb)["test_generator_losses"].source = "pass"
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_blocks"]


def forger(nb, sol, course=None):
    # The textbook log(sigmoid) loss (right on the visible logits, inf on large ones) and a minimax
    # loss with the wrong sign, "passing" its visible test because torch.allclose now always says
    # yes; hidden_check is wrapped to claim a huge tolerance. The grader compares outside the
    # kernel, with the answer key's tolerance: both loss tests score 0, the rest is graded as usual.
    full(nb, sol)
    _replace(nb, "losses", "return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()",
             "return -torch.log(torch.sigmoid(real_logits)).mean() - torch.log(1 - torch.sigmoid(fake_logits)).mean()")
    _replace(nb, "losses", "return -F.softplus(fake_logits).mean()", "return F.softplus(fake_logits).mean()")
    _cells(nb)["losses"].source = (
        "import math, torch, gankit.checks\n"
        "torch.allclose = lambda *args, **kwargs: True\n"
        "math.isclose = lambda *args, **kwargs: True\n"
        "_report = gankit.checks.hidden_check\n"
        "gankit.checks.hidden_check = lambda name, **outputs: _report(name, **{**outputs, 'rtol': 1e9, 'atol': 1e9})\n"
        + _cells(nb)["losses"].source)


def copycat(nb, sol, course=None):
    # Correct work, except that discriminator_loss hands over to gankit's own reference of it: the
    # grader runs the losses cell as released (grading/reference_check.py), so everything using
    # those losses fails, and the feedback says why.
    full(nb, sol)
    _replace(nb, "losses", "return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()",
             "from gankit.models import dcgan\n    return dcgan.discriminator_loss(real_logits, fake_logits)")


def noisy(nb, sol, course=None):
    # Correct code that warns on stderr (as torch often does): nbgrader alone would score it 0.
    full(nb, sol)
    _replace(nb, "losses", "return F.softplus(-real_logits)",
             'import warnings; warnings.warn("logits are not clamped", UserWarning)\n'
             "    return F.softplus(-real_logits)")
    _replace(nb, "train_step", "fake = G(z)", "import sys; print('step', file=sys.stderr)\n    fake = G(z)")


def snoop(nb, sol, course: Course | None = None):
    # Correct work, plus a look around: the gradebook, the answer keys, another student's
    # submission, and a write over the gradebook. In the sandbox none of it is there, so the cell
    # runs and scores full marks; any leak raises and costs the loss tests.
    full(nb, sol)
    secrets = [course.runtime_dir / "gradebook.db", course.runtime_dir / "source" / ASSIGNMENT / NOTEBOOK,
               course.runtime_dir / "grading" / "keys",
               course.runtime_dir / "submitted" / "ada" / ASSIGNMENT / NOTEBOOK, "../../../gradebook.db"]
    probe = (f"import os\nfor secret in {[str(p) for p in secrets]!r}:\n"
             "    assert not os.path.exists(secret), f'sandbox leak: {secret}'\n"
             f"try:\n    open({str(course.runtime_dir / 'gradebook.db')!r}, 'w').write('overwritten')\n"
             "except OSError:\n    pass\nelse:\n    raise AssertionError('wrote over the gradebook')\n")
    _cells(nb)["losses"].source = probe + _cells(nb)["losses"].source


quitter = in_train_step("import sys; sys.exit('giving up')")
memory_bomb = in_train_step("hog = bytearray(64 * 2**30)  # 64 GiB")


def flood(nb, sol, course=None):
    # A million lines of output while defining the losses: graded as usual, the output trimmed.
    full(nb, sol)
    _cells(nb)["losses"].source = "for i in range(10**6):\n    print(i)\n" + _cells(nb)["losses"].source


@dataclass(frozen=True)
class Student:
    student_id: str
    situation: str
    edit: Callable
    lost: dict = field(default_factory=dict)   # grade_id -> points lost (0 elsewhere)
    manual: float | None = None                # the instructor's score for the written answer
    days_late: float = 0.0

    def expected(self, late_penalty_per_day: float) -> dict:
        auto = {gid: pts - self.lost.get(gid, 0) for gid, pts in AUTOGRADED.items()}
        written = self.manual if self.manual is not None else 0.0
        penalty = 0.0
        if self.days_late > 0:
            import math
            penalty = round(sum(auto.values()) * late_penalty_per_day * math.ceil(self.days_late), 6)
        return {"auto": auto, "written": written, "penalty": penalty,
                "total": sum(auto.values()) + written - penalty}


CLASS = [
    Student("ada", "complete and correct", full, manual=4.0),
    Student("blank", "submitted the release version untouched", untouched, lost=dict(AUTOGRADED)),
    Student("pat", "partly right: minimax sign, BN on D's input, no train_step", partial,
            lost={"test_generator_losses": 3, "test_networks": 4, "test_train_step": 4, "test_training_ran": 2},
            manual=2.0),
    Student("seg", "train_step segfaults the kernel", kernel_crash,
            lost={"test_train_step": 4, "test_training_ran": 2}, manual=4.0),
    Student("loop", "train_step never returns", infinite_loop,
            lost={"test_train_step": 4, "test_training_ran": 2}, manual=4.0),
    Student("tam", "edited a test cell to `pass`, deleted another", tampered,
            lost={"test_generator_losses": 3}, manual=3.0),
    Student("forge", "wrong losses; monkeypatches torch.allclose and hidden_check", forger,
            lost={"test_discriminator_loss": 3, "test_generator_losses": 3}, manual=4.0),
    Student("noisy", "correct, but warns on stderr", noisy, manual=4.0),
    Student("copy", "discriminator_loss calls gankit's own reference", copycat,
            lost={"test_discriminator_loss": 3, "test_generator_losses": 3, "test_train_step": 4,
                  "test_training_ran": 2}, manual=4.0),
    Student("late", "correct, two days late", full, manual=None, days_late=1.5),
]
# Hostile submissions, graded in the sandbox (`gankit grade`); without bubblewrap they are left out.
HOSTILE = [
    Student("snoop", "reads the gradebook, answer keys, others' work; writes over the gradebook", snoop, manual=4.0),
    Student("quit", "calls sys.exit() in train_step", quitter,
            lost={"test_train_step": 4, "test_training_ran": 2}, manual=4.0),
    Student("bomb", "allocates 64 GiB in train_step", memory_bomb,
            lost={"test_train_step": 4, "test_training_ran": 2}, manual=4.0),
    Student("flood", "prints a million lines", flood, manual=4.0),
]


def simulate_submissions(course: Course, students=CLASS) -> None:
    sol = solutions(course)
    for student in students:
        home = course.runtime_dir / "students" / student.student_id
        shutil.rmtree(home, ignore_errors=True)
        folder = pipeline.fetch(course, ASSIGNMENT, home)
        path = folder / NOTEBOOK
        nb = nbformat.read(path, as_version=4)
        student.edit(nb, sol, course)
        nbformat.write(nb, path)
        pipeline.submit(course, ASSIGNMENT, student.student_id, home)


def backdate_late_submissions(course: Course, students=CLASS) -> None:
    """Rewrite the collected timestamp of late students (the exchange stamps 'now')."""
    due = course.week_of(ASSIGNMENT).due
    for student in students:
        if student.days_late:
            stamp = course.runtime_dir / "submitted" / student.student_id / ASSIGNMENT / "timestamp.txt"
            when = due + dt.timedelta(days=student.days_late)
            stamp.write_text(when.strftime("%Y-%m-%d %H:%M:%S.%f %Z").strip())


def late_penalties(course: Course) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(course.gradebook_url, course.course_id) as gb:
        return {s.student.id: float(s.late_submission_penalty or 0)
                for s in gb.find_assignment(ASSIGNMENT).submissions}


def run(course: Course, students=None, cell_timeout: int = DEMO_CELL_TIMEOUT_S) -> int:
    """The whole week; returns the number of students whose scores differ from what they deserve.

    Grading is `gankit grade` (grading/batch.py): parallel, with each kernel in the bubblewrap
    sandbox, where the hostile students join the class; without bubblewrap, the plain class only.
    """
    from gankit.data import prepare
    from grading import batch
    from grading.sandbox import SandboxError, check_sandbox

    try:
        check_sandbox()
        sandbox = True
    except SandboxError as err:
        sandbox = False
        print(f"demo: no sandbox ({err}); grading the plain class without it", flush=True)
    students = list(students if students is not None else CLASS + (HOSTILE if sandbox else []))

    t0 = time.monotonic()
    step = lambda text: print(f"[{time.monotonic() - t0:6.1f}s] {text}", flush=True)
    step(f"runtime folder: {course.runtime_dir}")
    step("building the embedded data (synthetic MNIST in the official IDX layout)")
    prepare("mnist", course.data_dir, smoke=True, seed=0)
    step(f"generate_assignment {ASSIGNMENT} (student version: solutions and hidden tests removed)")
    pipeline.generate(course, ASSIGNMENT)
    step("release_assignment to the exchange")
    pipeline.release(course, ASSIGNMENT)
    step(f"{len(students)} students fetch, work and submit")
    simulate_submissions(course, students)
    step("collect")
    pipeline.collect(course, ASSIGNMENT)
    backdate_late_submissions(course, students)
    step(f"gankit grade: in parallel, {'sandboxed' if sandbox else 'no sandbox'} "
         f"(papermill parameters injected; cell timeout {cell_timeout} s)")
    results = batch.grade(course, ASSIGNMENT, gpus="none", progress=False, sandbox=sandbox,
                          nbgrader_args=(f"--GradingExecute.timeout={cell_timeout}",))
    for result in results.values():
        if result.status != "graded":
            print(f"  {result.student}: not graded: {result.reason}")
    step("instructor grades the written answers")
    for student in students:
        if student.manual is not None:
            pipeline.set_manual_grade(course, ASSIGNMENT, student.student_id, WRITTEN, student.manual)
    step("generate_feedback + release_feedback")
    pipeline.feedback(course, ASSIGNMENT)
    step("export grades")
    csv_path = pipeline.export_grades(course)
    step(f"grades written to {csv_path}")
    return report(course, students)


def report(course: Course, students) -> int:
    scores = pipeline.cell_scores(course, ASSIGNMENT)
    penalties = late_penalties(course)
    exported = {row["student_id"]: float(row["score"]) for row in pipeline.read_grades_csv(
        course.runtime_dir / "reports" / "grades.csv") if row["assignment"] == ASSIGNMENT}
    short = {gid: re.sub(r"^test_", "", gid)[:10] for gid in AUTOGRADED}
    rows = [["student", *short.values(), "written", "late", "total", "expected", "", "situation"]]
    wrong = 0
    for student in students:
        want = student.expected(course.late_policy.penalty_per_day)
        got = scores.get(student.student_id, {})
        auto = {gid: (got[gid].score if gid in got else None) for gid in AUTOGRADED}
        written = got.get(WRITTEN).score if WRITTEN in got else None
        penalty = penalties.get(student.student_id, 0.0)
        total = exported.get(student.student_id)
        ok = (auto == want["auto"] and (written or 0.0) == want["written"]
              and abs(penalty - want["penalty"]) < 1e-6 and total is not None
              and abs(total - want["total"]) < 1e-6)
        wrong += not ok
        fmt = lambda v: "-" if v is None else f"{v:g}"
        rows.append([student.student_id, *(fmt(auto[g]) for g in AUTOGRADED), fmt(written),
                     fmt(-penalty if penalty else 0), fmt(total), f"{want['total']:g}",
                     "ok" if ok else "WRONG", student.situation])
    print()
    print(pipeline.format_table(rows))
    print()
    if wrong:
        print(f"{wrong} student(s) got a score they do not deserve (see WRONG rows)")
    else:
        print(f"all {len(students)} students got exactly the scores they deserve")
    return wrong
