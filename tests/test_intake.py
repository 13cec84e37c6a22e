"""Submissions reach the instructor two ways: a shared exchange folder (course.yml's
paths.exchange, an NFS mount on a class server) or archives downloaded from an LMS."""
from __future__ import annotations

import dataclasses

import re
import stat
import zipfile
from pathlib import Path

import nbformat
import pytest

from grading import intake, pipeline
from grading.course import COURSE_FILE, load_course
from grading.pipeline import PipelineError

ASSIGNMENT = "week01_gan_foundations"
NOTEBOOK = "gan_foundations.ipynb"
WRITTEN = "written_saturation"   # the markdown answer cell: where students leave their mark here


def _course_file(folder: Path, exchange: Path) -> Path:
    """A copy of course.yml whose exchange is ``exchange`` (absolute: a class server's shared folder)."""
    text = COURSE_FILE.read_text(encoding="utf-8")
    assert "\n  exchange: exchange\n" in text
    target = folder / "course" / "course.yml"
    target.parent.mkdir(parents=True)
    target.write_text(text.replace("\n  exchange: exchange\n", f"\n  exchange: {exchange}\n"), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def shared_course(tmp_path_factory):
    """A class server's course: its own course.yml, the exchange a shared folder outside the runtime
    made by an administrator (mode 1777), week 1 generated once for every test here."""
    root = tmp_path_factory.mktemp("class-server")
    exchange = root / "nfs" / "exchange"
    exchange.mkdir(parents=True)
    exchange.chmod(0o1777)
    with pytest.MonkeyPatch.context() as env:
        # nbgrader runs in its own process: these tell it which course file and runtime to read.
        env.setenv("GANKIT_COURSE_FILE", str(_course_file(root, exchange)))
        env.setenv("GANKIT_COURSE_RUNTIME", str(root / "runtime"))
        # nbgrader's submit also keeps a copy in $JUPYTER_DATA_DIR/nbgrader_cache: not in our home.
        env.setenv("JUPYTER_DATA_DIR", str(root / "jupyter-data"))
        course = load_course()
        pipeline.generate(course, ASSIGNMENT)
        yield course


def _student_notebook(course, text: str) -> nbformat.NotebookNode:
    nb = nbformat.read(course.runtime_dir / "release" / ASSIGNMENT / NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == WRITTEN)
    cell.source = text
    return nb


def _inbound_stamps(course, student: str) -> list:
    """Submission times of one student in the exchange, oldest first (nbgrader's own record names)."""
    from nbgrader.utils import parse_utc

    inbound = course.exchange_dir / course.course_id / "inbound"
    return sorted(parse_utc(p.name.split("+")[2]) for p in inbound.glob(f"{student}+{ASSIGNMENT}+*"))


# --- the shared exchange ------------------------------------------------------------------------
def test_three_students_submit_through_a_shared_exchange_and_the_latest_submission_wins(shared_course):
    from nbgrader.utils import parse_utc

    course = shared_course
    shared = course.exchange_dir
    assert not shared.is_relative_to(course.runtime_dir), "the exchange lies outside the runtime"
    assert intake.check_exchange(course) == shared
    pipeline.release(course, ASSIGNMENT)
    # nbgrader (another process) read the same course file: the release is in the shared folder.
    assert (shared / course.course_id / "outbound" / ASSIGNMENT / NOTEBOOK).is_file()

    homes = course.runtime_dir.parent / "homes"
    answers = {"ada": "ada's answer", "bob": "bob's second answer", "cy": "cy's answer"}
    for student in answers:
        folder = pipeline.fetch(course, ASSIGNMENT, homes / student)
        text = "bob's first answer" if student == "bob" else answers[student]
        nbformat.write(_student_notebook(course, text), folder / NOTEBOOK)
        pipeline.submit(course, ASSIGNMENT, student, homes / student)
    nbformat.write(_student_notebook(course, answers["bob"]), homes / "bob" / ASSIGNMENT / NOTEBOOK)
    pipeline.submit(course, ASSIGNMENT, "bob", homes / "bob")
    assert len(_inbound_stamps(course, "bob")) == 2

    collected = intake.collect(course, ASSIGNMENT)
    assert set(answers) <= set(collected)
    for student, answer in answers.items():
        folder = course.runtime_dir / "submitted" / student / ASSIGNMENT
        assert {NOTEBOOK, "submission_secret.txt", "timestamp.txt"} <= {p.name for p in folder.iterdir()}
        assert answer in (folder / NOTEBOOK).read_text(encoding="utf-8"), student
        stamp = parse_utc((folder / "timestamp.txt").read_text(encoding="utf-8"))
        assert stamp == _inbound_stamps(course, student)[-1], f"{student}: the newest submission is collected"
        assert collected[student] == (folder / "timestamp.txt").read_text(encoding="utf-8").strip()
    first, second = _inbound_stamps(course, "bob")
    assert first < second
    # What nbgrader needs of the shared folders: the exchange like /tmp, inbound writable by all
    # but not listable (students do not see each other's submissions), outbound readable by all.
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    inbound = stat.S_IMODE((shared / course.course_id / "inbound").stat().st_mode)
    assert inbound & 0o733 == 0o733 and not inbound & 0o004
    outbound = stat.S_IMODE((shared / course.course_id / "outbound" / ASSIGNMENT).stat().st_mode)
    assert outbound & 0o555 == 0o555


def _shared_exchange_course(tmp_path, make) -> tuple:
    exchange = tmp_path / "nfs" / "exchange"
    make(exchange)
    course = load_course(_course_file(tmp_path, exchange))
    return course, exchange


def test_a_missing_shared_exchange_names_the_path_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(tmp_path / "runtime"))
    course, exchange = _shared_exchange_course(tmp_path, lambda path: None)
    with pytest.raises(PipelineError) as info:
        intake.check_exchange(course)
    message = str(info.value)
    assert str(exchange) in message and "does not exist" in message
    assert f"chmod 1777 {exchange}" in message and str(course.source_file) in message
    assert not exchange.exists(), "a shared exchange is never created in place of a missing mount"


def test_a_shared_exchange_students_cannot_write_into_names_the_path_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(tmp_path / "runtime"))
    course, exchange = _shared_exchange_course(tmp_path, lambda path: path.mkdir(parents=True, mode=0o755))
    exchange.chmod(0o755)  # mkdir's mode is filtered by the umask
    with pytest.raises(PipelineError) as info:
        intake.check_exchange(course)
    message = str(info.value)
    assert str(exchange) in message and "mode 0755" in message and f"sudo chmod 1777 {exchange}" in message


def test_an_exchange_this_account_cannot_write_into_names_the_path(tmp_path, monkeypatch):
    # A read-only mount (or NFS squashing this user): the mode is right, writing still fails.
    # Tests may run as root, whom permissions never stop, so os.access is made to answer as there.
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(tmp_path / "runtime"))
    course, exchange = _shared_exchange_course(tmp_path, lambda path: path.mkdir(parents=True))
    exchange.chmod(0o1777)
    monkeypatch.setattr(intake.os, "access", lambda path, mode: Path(path) != exchange)
    with pytest.raises(PipelineError, match="not writable from this account") as info:
        intake.check_exchange(course)
    assert str(exchange) in str(info.value)


def test_a_configuration_nbgrader_would_drop_is_reported_with_its_reason(tmp_path, monkeypatch):
    # The runtime's exchange cannot be created (a file is in the way). Inside nbgrader this error
    # would be logged and nbgrader would go on with its defaults; here it names the path.
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(tmp_path / "runtime"))
    course = load_course(COURSE_FILE)
    course.runtime_dir.mkdir(parents=True)
    course.exchange_dir.write_text("not a folder")
    with pytest.raises(PipelineError, match="nbgrader's configuration for this course fails") as info:
        intake.check_exchange(course)
    assert str(course.exchange_dir) in str(info.value)


def test_the_exchange_inside_the_runtime_is_made_as_nbgrader_needs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(tmp_path / "runtime"))
    course = load_course(COURSE_FILE)
    path = intake.check_exchange(course)
    assert path == course.runtime_dir / "exchange"
    assert stat.S_IMODE(path.stat().st_mode) == 0o1777


# --- archives downloaded from an LMS ------------------------------------------------------------
def test_the_default_pattern_reads_canvas_and_moodle_names():
    regexp = intake._named_regexp(intake.lms_pattern([NOTEBOOK]))
    names = {
        "ada_1001_5001_gan_foundations.ipynb": "ada",                 # Canvas
        "bob_LATE_1002_5002_gan_foundations-1.ipynb": "bob",          # Canvas: late, resubmitted
        "cy_assignsubmission_file_gan_foundations.ipynb": "cy",       # Moodle, by user name
        "dan_gan_foundations.ipynb": "dan",
        "eve_1005_5005_Copy of gan_foundations.ipynb": None,          # not the released name
        "gan_foundations.ipynb": None,                                # no student id
        "__MACOSX/._ada_1001_5001_gan_foundations.ipynb": None,      # macOS metadata in a zip
    }
    for name, student in names.items():
        match = re.match(regexp, f"/x/extracted/submissions/{name}")
        assert (match.group("student_id") if match else None) == student, name
        if match:
            assert match.group("file_id") == "gan_foundations"


def _lms_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"submissions/{name}", data)
    return path


def test_zip_collect_maps_file_names_to_students_and_reports_the_rest(shared_course, tmp_path, capsys):
    course = shared_course
    notebooks = {student: nbformat.writes(_student_notebook(course, f"{student} from the LMS"))
                 for student in ("kim", "lee", "max")}
    archive = _lms_zip(tmp_path / "submissions.zip", {
        "kim_2001_7001_gan_foundations.ipynb": notebooks["kim"].encode(),
        "lee_LATE_2002_7002_gan_foundations-1.ipynb": notebooks["lee"].encode(),
        "max_2003_7003_Copy of gan_foundations.ipynb": notebooks["max"].encode(),
        "kim_2001_7001_notes.txt": b"my notes",
    })
    students = intake.zip_collect(course, ASSIGNMENT, [archive])
    assert students == ["kim", "lee"]
    for student in students:
        folder = course.runtime_dir / "submitted" / student / ASSIGNMENT
        assert (folder / NOTEBOOK).read_text(encoding="utf-8") == notebooks[student]
        assert not (folder / "timestamp.txt").exists(), "Canvas names carry no time: none is made up"
    assert not (course.runtime_dir / "submitted" / "max").exists()
    report = capsys.readouterr().err
    assert "2 file(s)" in report
    assert "max_2003_7003_Copy of gan_foundations.ipynb: the name does not match" in report
    assert "kim_2001_7001_notes.txt: not a notebook" in report
    assert archive.is_file(), "the downloaded archive stays where it was"


def test_a_pattern_of_ones_own_maps_moodle_names_and_reports_unreleased_notebooks(tmp_path):
    # Moodle by numeric id: "<full name>_<id>_assignsubmission_file_<file>"; decided as nbgrader decides.
    extracted = tmp_path / "extracted" / "moodle" / "submissions"
    extracted.mkdir(parents=True)
    for name in ("Kim Park_2001_assignsubmission_file_gan_foundations.ipynb",
                 "Lee Chan_2002_assignsubmission_file_gan_foundation.ipynb"):
        (extracted / name).write_text("{}")
    pattern = r"[^_]+_(?P<student_id>\d+)_assignsubmission_file_(?P<file_id>[^/]+)\.ipynb$"
    plan, skipped, twice = intake._plan(tmp_path / "extracted", intake._named_regexp(pattern), [NOTEBOOK])
    assert plan == {"2001": [NOTEBOOK]} and twice == []
    assert [(p.name, why) for p, why in skipped] == [
        ("Lee Chan_2002_assignsubmission_file_gan_foundation.ipynb",
         f"gan_foundation.ipynb is not a released notebook ({NOTEBOOK})")]


def test_zip_collect_refuses_what_it_cannot_collect(shared_course, tmp_path):
    course = shared_course
    with pytest.raises(PipelineError, match="archive not found"):
        intake.zip_collect(course, ASSIGNMENT, [tmp_path / "nowhere.zip"])
    archive = _lms_zip(tmp_path / "a.zip", {"x_gan_foundations.ipynb": b"{}"})
    with pytest.raises(PipelineError, match=r"named groups \(\?P<student_id>"):
        intake.zip_collect(course, ASSIGNMENT, [archive], pattern=r"(?P<student_id>\w+)\.ipynb")
    with pytest.raises(PipelineError, match="no student version"):
        intake.zip_collect(course, "week05_cyclegan", [archive])


def test_zip_collect_fails_loudly_when_nbgrader_would_ignore_the_course(shared_course, tmp_path, monkeypatch):
    # nbgrader exits 0 after a config file that raised, having worked in course/ with its defaults:
    # here its course.yml vanished between our reading it and nbgrader's.
    gone = dataclasses.replace(shared_course, source_file=tmp_path / "gone.yml")
    archive = _lms_zip(tmp_path / "b.zip", {"nia_gan_foundations.ipynb": b"{}"})
    with pytest.raises(PipelineError, match="could not load course/nbgrader_config.py") as info:
        intake.zip_collect(gone, ASSIGNMENT, [archive])
    assert "gone.yml" in str(info.value)


@pytest.mark.slow
def test_a_zip_collected_submission_is_autograded_into_the_gradebook(shared_course, tmp_path):
    from grading.demo import solutions

    course = shared_course
    nb = _student_notebook(course, "ola's answer")
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "losses")
    cell.source = solutions(course)["losses"]   # both loss tests pass, nothing else does
    archive = _lms_zip(tmp_path / "c.zip", {"ola_3001_9001_gan_foundations.ipynb": nbformat.writes(nb).encode()})
    assert intake.zip_collect(course, ASSIGNMENT, [archive]) == ["ola"]
    pipeline.autograde(course, ASSIGNMENT, "ola")
    scores = pipeline.cell_scores(course, ASSIGNMENT)["ola"]
    assert scores["test_discriminator_loss"].score == 3 and scores["test_generator_losses"].score == 3
    assert scores["test_blocks"].score == 0 and scores["test_train_step"].score == 0
    assert (course.runtime_dir / "autograded" / "ola" / ASSIGNMENT / NOTEBOOK).is_file()
