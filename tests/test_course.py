"""course.yml is the single source of truth: it parses, and everything derived from it agrees."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import pytest
from traitlets.config import Config

from grading.course import REPO_ROOT, CourseError, LatePolicy, load_course
from grading.nbgrader_setup import configure
from grading.syllabus import render


def test_course_has_twelve_weeks_with_three_or_four_papers():
    course = load_course()
    assert [w.week for w in course.weeks] == list(range(1, 13))
    for week in course.weeks:
        assert 3 <= len(week.papers) <= 4
        assert all(p.link.startswith("https://") and 2010 <= p.year <= 2030 for p in week.papers)
    titles = " ".join(w.title for w in course.weeks)
    for must in ("CycleGAN", "StarGAN", "compression", "foundations"):
        assert must in titles


def test_committed_syllabus_is_generated_from_course_yml():
    committed = (REPO_ROOT / "course" / "SYLLABUS.md").read_text()
    assert committed == render(load_course()), "run `make syllabus` and commit course/SYLLABUS.md"


def test_assignment_points_match_the_notebooks():
    course = load_course()
    assert course.available_assignments(), "at least week 1 has an assignment"
    for week in course.available_assignments():
        total = 0.0
        for path in week.assignment_dir().glob("*.ipynb"):
            for cell in nbformat.read(path, as_version=4).cells:
                meta = cell.metadata.get("nbgrader", {})
                if meta.get("grade") or meta.get("task"):
                    total += float(meta.get("points", 0))
        assert total == week.points, f"course.yml says {week.points} points for {week.assignment}, notebooks sum to {total}"


def test_every_available_week_has_its_paper_notebook():
    for week in load_course().available_assignments():
        assert week.notebook_path().exists(), f"{week.notebook} is listed in course.yml but missing"


def test_nbgrader_config_comes_from_course_yml(course_runtime):
    c = Config()
    configure(c, course_runtime)
    assert c.CourseDirectory.course_id == "gan-course"
    assert c.CourseDirectory.root == str(course_runtime.runtime_dir)
    assert c.Exchange.root == str(course_runtime.exchange_dir)
    assert c.GradingExecute.timeout == course_runtime.grading.cell_timeout_s
    assert c.InjectGradingParameters.parameters["DATA_DIR"] == str(course_runtime.data_dir)
    assert c.OverwriteCells.add_missing_cells is True
    assert c.ExchangeFactory.collect == "grading.safe_collect.SafeExchangeCollect"   # no link followed at collect
    assert (course_runtime.runtime_dir / "source").resolve() == (REPO_ROOT / "assignments").resolve()
    # The config file nbgrader itself reads is the same function applied to the same file.
    text = (REPO_ROOT / "course" / "nbgrader_config.py").read_text()
    assert "configure(c, load_course())" in text


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("course_id: gan-course\n", ""), "lacks the key 'course_id'"),
    (lambda t: t.replace("  - week: 2\n", "  - week: 3\n", 1), "numbered 1..12"),
    (lambda t: t.replace("    due: 2027-01-18T23:59:00", "    due: 2027-01-01T23:59:00"), "before it is released"),
    (lambda t: t.replace("weeks:", "weeks: [\n"), "not valid YAML at line "),
    (lambda t: t.replace("  max_submission_output_mb: 1024 ", "  max_submission_output_mb: -1 "),
     "grading.max_submission_output_mb must be a positive number"),
])
def test_malformed_course_file_names_the_problem(tmp_path, edit, message):
    broken = tmp_path / "course.yml"
    broken.write_text(edit((REPO_ROOT / "course" / "course.yml").read_text()))
    with pytest.raises(CourseError, match=re.escape(message)) as info:
        load_course(broken)
    assert str(broken) in str(info.value) and "\n" not in str(info.value), "one line for the CLI"


def test_runtime_folder_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(tmp_path / "elsewhere"))
    course = load_course()
    assert course.runtime_dir == (tmp_path / "elsewhere").resolve()
    assert course.exchange_dir == course.runtime_dir / "exchange"


def test_the_course_file_can_be_named_by_the_environment(tmp_path, monkeypatch):
    """GANKIT_COURSE_FILE is how nbgrader's own process (course/nbgrader_config.py) finds another course."""
    other = tmp_path / "course" / "course.yml"
    other.parent.mkdir()
    text = (REPO_ROOT / "course" / "course.yml").read_text()
    other.write_text(text.replace("  exchange: exchange\n", "  exchange: /srv/nbgrader/exchange\n"))
    monkeypatch.setenv("GANKIT_COURSE_FILE", str(other))
    monkeypatch.delenv("GANKIT_COURSE_RUNTIME", raising=False)
    course = load_course()
    assert course.source_file == other.resolve()
    assert course.runtime_dir == (tmp_path / "runtime").resolve(), "a relative runtime sits beside course/"
    assert str(course.exchange_dir) == "/srv/nbgrader/exchange"
    monkeypatch.setenv("GANKIT_COURSE_FILE", str(tmp_path / "missing.yml"))
    with pytest.raises(CourseError, match="named by GANKIT_COURSE_FILE"):
        load_course()


def test_the_gradebook_is_sqlite_in_the_runtime_unless_named(tmp_path, monkeypatch):
    """course.yml's grading.gradebook_url names another database; GANKIT_GRADEBOOK_URL overrides both."""
    monkeypatch.delenv("GANKIT_GRADEBOOK_URL", raising=False)
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(tmp_path / "runtime"))
    course = load_course()
    assert course.gradebook_url == f"sqlite:///{course.runtime_dir / 'gradebook.db'}"
    c = Config()
    configure(c, course)
    assert c.CourseDirectory.db_url == course.gradebook_url, "nbgrader opens the same gradebook"
    other = tmp_path / "course.yml"
    other.write_text((REPO_ROOT / "course" / "course.yml").read_text().replace(
        "\ngrading:\n", "\ngrading:\n  gradebook_url: postgresql://grader@dbhost/gan_course\n", 1))
    assert load_course(other).gradebook_url == "postgresql+psycopg://grader@dbhost/gan_course", \
        "plain postgresql:// means psycopg2 to SQLAlchemy; the kit installs psycopg 3"
    monkeypatch.setenv("GANKIT_GRADEBOOK_URL", "postgresql+psycopg://ta@elsewhere/gan_course")
    assert load_course(other).gradebook_url == "postgresql+psycopg://ta@elsewhere/gan_course"


@pytest.mark.parametrize("url, message", [
    ("mysql://grader:s3cret@dbhost/gan_course", "is not a supported gradebook URL; write SQLite or PostgreSQL"),
    ("postgres://grader:s3cret@dbhost/gan_course", "e.g. postgresql+psycopg://grader@dbhost/gan_course"),
    ("sqlite:///gradebook.db", "needs an absolute path, four slashes in all"),
])
def test_a_wrong_gradebook_url_says_what_to_write_and_hides_the_password(tmp_path, monkeypatch, url, message):
    monkeypatch.setenv("GANKIT_GRADEBOOK_URL", url)
    with pytest.raises(CourseError, match=re.escape(message)) as info:
        load_course().gradebook_url
    assert "GANKIT_GRADEBOOK_URL" in str(info.value) and "s3cret" not in str(info.value)
    monkeypatch.delenv("GANKIT_GRADEBOOK_URL")
    broken = tmp_path / "course.yml"
    broken.write_text((REPO_ROOT / "course" / "course.yml").read_text().replace(
        "\ngrading:\n", f"\ngrading:\n  gradebook_url: {url}\n", 1))
    with pytest.raises(CourseError, match=re.escape(message)) as info:
        load_course(broken)
    assert f"{broken}: grading.gradebook_url" in str(info.value) and "s3cret" not in str(info.value)


def test_mask_password():
    from grading.course import mask_password

    assert mask_password("postgresql+psycopg://grader:p@ss:w0rd@dbhost:5432/gan?password=x&sslmode=require") == \
        "postgresql+psycopg://grader:***@dbhost:5432/gan?password=***&sslmode=require"
    assert mask_password("postgresql+psycopg://grader@dbhost/gan") == "postgresql+psycopg://grader@dbhost/gan"


def _course_text() -> str:
    return (REPO_ROOT / "course" / "course.yml").read_text()


@pytest.mark.parametrize("old, new, message", [
    ("\nlate_policy:\n", "\nlate_polcy:\n", "unknown key 'late_polcy' at the top level; did you mean 'late_policy'?"),
    ("  cell_timeout_s: 120", "  cell_timout_s: 120",
     "unknown key 'grading.cell_timout_s'; did you mean 'grading.cell_timeout_s'?"),
    ("  exchange: exchange\n", "  exchnge: exchange\n", "unknown key 'paths.exchnge'; did you mean 'paths.exchange'?"),
    ("  max_days: 3", "  max_day: 3", "unknown key 'late_policy.max_day'; did you mean 'late_policy.max_days'?"),
    ("    due: 2027-01-25T23:59:00", "    dew: 2027-01-25T23:59:00",
     "unknown key 'weeks[1].dew'; did you mean 'weeks[1].due'?"),
    ('authors: "Goodfellow et al."', 'author: "Goodfellow et al."',
     "unknown key 'weeks[0].papers[0].author'; did you mean 'weeks[0].papers[0].authors'?"),
    ("\ntimezone:", "\ncolour: blue\ntimezone:", "unknown key 'colour' at the top level; the keys at the top level "
     "are: course_id, title, term, instructors, timezone, paths, grading, late_policy, weeks, exchange_server"),
])
def test_an_unknown_key_is_an_error_naming_it_and_the_file(tmp_path, old, new, message):
    """A misspelt key used to be ignored: `late_polcy:` meant no late penalty at all."""
    text = _course_text()
    assert text.count(old) == 1, old
    broken = tmp_path / "course.yml"
    broken.write_text(text.replace(old, new))
    with pytest.raises(CourseError) as info:
        load_course(broken)
    assert str(info.value) == f"{broken}: {message}"


def _replace_once(old: str, new: str):
    def edit(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda t: re.sub(r"\nlate_policy:\n(  .*\n)+", "\nlate_policy: 10%\n", t),
     "late_policy must be a mapping of keys, got '10%'"),
    (_replace_once("  cell_timeout_s: 120", "  cell_timeout_s: 2 min"),
     "grading.cell_timeout_s must be a whole number of at least 1"),
    (_replace_once("  max_kernel_restarts: 2", "  max_kernel_restarts: -1"),
     "grading.max_kernel_restarts must be a whole number"),
    (_replace_once("  penalty_per_day: 0.10", "  penalty_per_day: 10"),
     "late_policy.penalty_per_day must be a number between 0 and 1"),
    (_replace_once("  max_days: 3", "  max_days: three"), "late_policy.max_days must be a whole number of at least 0"),
    (_replace_once("    SMOKE: true", "    SMOKE MODE: true"), "grading.parameters: 'SMOKE MODE' is not a Python name"),
    (_replace_once("  exchange: exchange\n", "  exchange: [a, b]\n"), "paths.exchange must be text"),
    (_replace_once('timezone: "UTC"', "timezone: 0"), "timezone must be text"),
    (_replace_once('instructors: ["Course staff"]', "instructors: Course staff"), "instructors must be a list of names"),
    (_replace_once("\nweeks:\n", "\nweeks:\n  - week zero\n"), "weeks[0] must be a mapping"),
])
def test_a_known_key_of_the_wrong_kind_says_what_to_write(tmp_path, edit, message):
    broken = tmp_path / "course.yml"
    broken.write_text(edit(_course_text()))
    with pytest.raises(CourseError, match=re.escape(message)) as info:
        load_course(broken)
    assert str(info.value).startswith(f"{broken}: ")


def test_an_empty_section_takes_its_defaults(tmp_path):
    empty = tmp_path / "course.yml"
    empty.write_text(re.sub(r"\nlate_policy:\n(  .*\n)+", "\nlate_policy:\n", _course_text()))
    assert load_course(empty).late_policy == LatePolicy(penalty_per_day=0.0, max_days=0)


def test_the_course_commands_print_one_line_for_a_misspelt_key(tmp_path):
    broken = tmp_path / "course.yml"
    broken.write_text(_course_text().replace("\nlate_policy:\n", "\nlate_polcy:\n"))
    env = {**os.environ, "GANKIT_COURSE_FILE": str(broken)}
    for command in (["-m", "grading", "syllabus"], ["-m", "gankit", "grade", "week01_gan_foundations"]):
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=120,
                                cwd=REPO_ROOT)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{broken}: unknown key 'late_polcy'" in result.stderr and "did you mean 'late_policy'?" in result.stderr
