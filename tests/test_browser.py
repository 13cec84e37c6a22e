"""A student on their own server, in a real browser, and the instructor on another: the two share
only the exchange, over each supported route (a shared folder; the HTTP exchange server). The
student's lab opens on their landing page (week 1's due date, links to the paper notebooks), a
paper notebook opens from it, then week 1 is fetched, solved, run, validated and submitted in
JupyterLab (headless Chromium driven by Playwright); the instructor collects, autogrades and
releases feedback, which the student fetches and reads in the same lab; the instructor's
formgrader shows the score. Screenshots of every step, and both servers' logs, go to
runtime/test-output/browser/<route>/ (`make test-browser` runs this test alone).

Needs Debian's Chromium (`apt-get install chromium chromium-driver`; another binary with
GANKIT_CHROMIUM=/path): Playwright's own browser download cannot run here. Without it the test
skips, except under CI (CI=true), where it fails (the needs_chromium marker, tests/conftest.py).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from grading import pipeline
from grading.course import REPO_ROOT
from grading.lab import landing_page, lab_command, prepare_root, student_dir

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.needs_chromium]

ASSIGNMENT = "week01_gan_foundations"
STUDENT = "ada-browser"   # passed as the student id; nbgrader would otherwise use the login name
SHOTS = REPO_ROOT / "runtime" / "test-output" / "browser"   # git-ignored with runtime/
# The student's own parameters cell trains on full MNIST; the notebook tells students to override
# it in a new cell below. The grader injects SMOKE=True anyway, so this changes no score.
SMOKE_CELL = "SMOKE = True   # a few steps on the small embedded data, as the grader runs it"
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)


def answer_key(assignment_dir: Path) -> dict[str, list[tuple[int, str, str]]]:
    """{notebook name: [(cell index, cell type, the instructor's solution)]}, markers removed."""
    key = {}
    for path in sorted(assignment_dir.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        key[path.name] = [(i, c.cell_type, MARKERS.sub("", c.source).rstrip("\n"))
                          for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")]
    return key


def points(assignment_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """({grade_id: points} of autograded test cells, {grade_id: points} of hand-graded answers)."""
    auto, manual = {}, {}
    for path in sorted(assignment_dir.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade"):
                hand_graded = cell.cell_type == "markdown" or meta.get("solution")
                (manual if hand_graded else auto)[meta["grade_id"]] = float(meta["points"])
    return auto, manual


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_lab(course, role: str, home: Path, log: Path, extra_env: dict | None = None):
    """Start `python -m grading.lab`'s server for ROLE; yield its base URL and token; always stop it.

    HOME (hence ~/.jupyter, nbgrader's submission cache, the kernel's caches) and GANKIT_DATA are
    folders of the test, so nothing of the machine's own Jupyter set-up leaks in or out.
    """
    token = os.urandom(12).hex()
    port = _free_port()
    argv, env, root = lab_command(course, role, student_id=STUDENT, port=port, token=token,
                                  extra_args=("--no-browser",))
    prepare_root(course, role, root, STUDENT)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env.pop(var, None)
    env.update(HOME=str(home), GANKIT_DATA=str(home / "gankit-data"), GANKIT_COURSE_FILE=str(course.source_file),
               **(extra_env or {}))
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        # Its own process group: the kernels it starts are stopped with it.
        proc = subprocess.Popen(argv, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab ({role}) exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab ({role}) did not answer within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base, token, root
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)   # Jupyter shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)   # whatever is left of the group
        proc.wait(timeout=15)


ROUTES = ("shared-folder", "http")


@pytest.fixture(params=ROUTES)
def two_servers(request, monkeypatch, tmp_path):
    """(route, instructor's course, student's course, what the student's server adds to its environment).

    Two "servers" on this machine that share nothing but the exchange: each has its own course.yml,
    runtime folder and HOME. ``shared-folder``: both course.yml name one exchange folder (what an NFS
    or sshfs mount gives each server). ``http``: the instructor's exchange folder is served by
    `python -m grading exchange serve` on loopback, and the student's course.yml names its URL and the
    student holds a token (README, "Separate servers"). The student's runtime lies inside the
    repository (git-ignored runtime/test-output/), as a clone's runtime/ does: the student's lab is
    rooted at the repository and shows their folder there next to notebooks/.
    """
    from grading import exchange_server
    from grading.course import COURSE_FILE, load_course

    route = request.param
    exchange = tmp_path / "srv" / "nbgrader" / "exchange"
    exchange.mkdir(parents=True)
    os.chmod(exchange, 0o1777)
    text = re.sub(r"(?m)^(\s*)exchange: .*$", rf"\1exchange: {exchange}", COURSE_FILE.read_text(), count=1)
    (tmp_path / "instructor").mkdir()
    instructor_file = tmp_path / "instructor" / "course.yml"
    instructor_file.write_text(text)
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(tmp_path / "instructor" / "runtime"))
    instructor = load_course(instructor_file)

    student_home = tmp_path / "home-student"
    student_env: dict[str, str] = {}
    server = None
    if route == "http":
        server = exchange_server.make_server(instructor, "127.0.0.1:0", 100.0)
        exchange_server.serve_in_thread(server)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        # The student's server knows only the URL: its own exchange folder stays in its own runtime.
        text = COURSE_FILE.read_text() + f"\nexchange_server:\n  url: {url}\n"
        token_file = student_home / ".config" / "gankit" / "exchange-token"
        token_file.parent.mkdir(parents=True)
        token_file.write_text(exchange_server.add_student(instructor, STUDENT) + "\n")
        os.chmod(token_file, 0o600)
    student_file = tmp_path / "student-course.yml"
    student_file.write_text(text)
    runtime = REPO_ROOT / "runtime" / "test-output" / f"browser-student-{os.getpid()}-{route}"
    shutil.rmtree(runtime, ignore_errors=True)
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(runtime))
    student = load_course(student_file)
    monkeypatch.setenv("GANKIT_COURSE_RUNTIME", str(instructor.runtime_dir))
    if route == "http":
        assert student.exchange_server.url and not student.exchange_dir.exists()
    else:
        assert student.exchange_dir == instructor.exchange_dir == exchange
    try:
        yield route, instructor, student, student_home, student_env
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def browser(chromium_executable):
    from playwright.sync_api import sync_playwright   # a dev dependency (pyproject.toml)

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(chromium_executable), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def shots(capsys, two_servers):
    """The route's screenshot folder, emptied; its path is printed even when pytest captures output."""
    folder = SHOTS / two_servers[0]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with capsys.disabled():
        print(f"\n[browser] screenshots in {folder}")
    return folder


class Student:
    """The clicks and keys of one student in JupyterLab, each step leaving a screenshot."""

    def __init__(self, page, shots: Path):
        self.page, self.shots, self.step = page, shots, 0

    def leave_evidence(self, log: Path) -> None:
        """On a failure: a screenshot of where it happened and the end of the server's log."""
        self.page.screenshot(path=str(self.shots / "failed.png"))
        print(f"JupyterLab log ({log}):\n{log.read_text()[-4000:]}")

    def shot(self, name: str) -> None:
        self.step += 1
        self.page.screenshot(path=str(self.shots / f"{self.step:02d}-{name}.png"))

    def menu(self, menu: str) -> list[str]:
        """Open a menu of the menu bar; return the labels of its visible items."""
        self.page.locator(".lm-MenuBar-item", has_text=menu).click()
        items = self.page.locator(".lm-Menu .lm-Menu-item:not(.lm-mod-hidden) .lm-Menu-itemLabel")
        items.first.wait_for()
        return [t.strip() for t in items.all_inner_texts() if t.strip()]

    def menu_item(self, label: str) -> None:
        self.page.locator(".lm-Menu .lm-Menu-item", has_text=label).first.click()

    def cells(self):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")

    def replace_cell_text(self, index: int, cell_type: str, text: str) -> None:
        """Type TEXT into cell INDEX through its CodeMirror editor, replacing what was there."""
        cell = self.cells().nth(index)
        cell.scroll_into_view_if_needed()
        if cell_type == "markdown":
            cell.locator(".jp-MarkdownOutput").dblclick()   # a rendered answer opens its editor
        editor = cell.locator(".cm-content")
        editor.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.insert_text(text)

    def save(self) -> None:
        """Ctrl+S; wait until the notebook's tab no longer shows unsaved changes."""
        from playwright.sync_api import expect

        dirty = self.page.locator(".lm-TabBar-tab.lm-mod-current.jp-mod-dirty")
        expect(dirty).to_have_count(1)
        self.page.keyboard.press("Control+S")
        expect(dirty).to_have_count(0)

    def run_all(self, timeout_s: float) -> None:
        """Run > Run All Cells; wait until no cell is queued or running, then demand each ran."""
        self.menu("Run")
        self.menu_item("Run All Cells")
        prompts = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt"
        # Queued cells show [*] at once; done means no [*] left and at least one cell numbered.
        self.page.wait_for_function(
            """sel => { const p = [...document.querySelectorAll(sel)].map(e => e.textContent.trim());
                        return !p.some(t => t.includes('*')) && p.some(t => /\\[\\d+\\]/.test(t)); }""",
            arg=prompts, timeout=timeout_s * 1000)
        # textContent, not innerText: cells scrolled out of view render no text (content-visibility).
        texts = self.page.locator(prompts).evaluate_all("els => els.map(e => e.textContent.trim())")
        if not all(re.search(r"\[\d+\]", t) for t in texts):
            errors = self.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            pytest.fail(f"Run All stopped early (prompts {texts}):\n" + "\n".join(errors.all_inner_texts())[-3000:])


def test_a_student_on_their_own_server_submits_week1_and_reads_the_feedback(browser, shots, two_servers, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)   # Playwright's 5 s is short for JupyterLab on 2 cores
    route, course, student_course, student_home, student_env = two_servers
    week = course.week_of(ASSIGNMENT)
    pipeline.generate(course, ASSIGNMENT)
    pipeline.release(course, ASSIGNMENT)
    key = answer_key(week.assignment_dir())
    [(name, solutions)] = key.items()   # week 1 is one notebook; the clicks below assume one
    auto_points, manual_points = points(week.assignment_dir())
    # course.yml's points are what the notebook's graded cells add up to (test_course checks it).
    assert sum(auto_points.values()) + sum(manual_points.values()) == week.points

    log = shots / "jupyterlab-student.log"
    with running_lab(student_course, "student", student_home, log, student_env) as (base, token, root):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        me = Student(page, shots)
        own = student_dir(student_course, STUDENT)
        assert root == REPO_ROOT and own.is_relative_to(root), "one lab: the repository, the student's folder in it"
        try:
            # The server's front page is the student's landing page, rendered: week 1 and its due date.
            page.goto(f"{base}/?token={token}")
            start_page = landing_page(student_course, STUDENT).relative_to(root).as_posix()
            assert page.url.split("?")[0].endswith("/lab/tree/" + start_page)
            landing = page.locator(".jp-RenderedMarkdown", has_text="Schedule")
            expect(landing).to_contain_text(f"{week.due:%a %d %b} {week.due:%H:%M}")
            expect(landing).to_contain_text(ASSIGNMENT)
            me.shot("landing-page")
            # A paper notebook opens from its link there, in the same lab.
            landing.get_by_role("link", name=week.notebook).click()
            paper = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedMarkdown h1",
                                 has_text="Week 1 — GAN foundations")
            expect(paper).to_be_visible()
            me.shot("paper-notebook")
            me.menu("File")
            me.menu_item("Close and Shut Down Notebook")
            page.locator(".jp-Dialog .jp-mod-accept").click()   # "Shut down the notebook?"
            expect(paper).to_have_count(0)

            # The student's Nbgrader menu: the assignment list, no formgrader or course list.
            labels = me.menu("Nbgrader")
            me.shot("nbgrader-menu")
            assert labels == ["Assignment List"], labels
            me.menu_item("Assignment List")

            released = page.locator("#released_assignments_list .list_item", has_text=ASSIGNMENT)
            expect(released).to_be_visible()
            expect(page.locator(".item_course", has_text=course.course_id).first).to_be_visible()
            me.shot("assignment-list")
            released.get_by_role("button", name="Fetch").click()

            fetched = page.locator("#fetched_assignments_list .list_item", has_text=ASSIGNMENT).first
            expect(fetched).to_be_visible()
            fetched.locator(".assignment-notebooks-link").click()
            expect(fetched.get_by_role("link", name=Path(name).stem)).to_be_visible()
            me.shot("fetched")
            assert (own / ASSIGNMENT / name).is_file(), "fetched into the student's own folder"

            student_nb = nbformat.read(own / ASSIGNMENT / name, as_version=4)   # the release, as fetched
            fetched.get_by_role("link", name=Path(name).stem).click()
            expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_visible()
            expect(me.cells()).to_have_count(len(student_nb.cells))
            me.shot("opened")

            for index, cell_type, text in solutions:
                stub = "YOUR CODE HERE" if cell_type == "code" else "YOUR ANSWER HERE"
                assert stub in student_nb.cells[index].source, f"cell {index} of the release is not a stub"
                me.replace_cell_text(index, cell_type, text)
            parameters = next(i for i, c in enumerate(student_nb.cells) if "parameters" in c.metadata.get("tags", []))
            me.cells().nth(parameters).locator(".jp-InputPrompt").click()   # select it, command mode
            page.keyboard.press("b")                                        # a new cell below
            me.replace_cell_text(parameters + 1, "code", SMOKE_CELL)
            me.save()
            me.shot("solved")
            # What the browser typed is exactly the answer key (no auto-indent, no closed brackets).
            saved = nbformat.read(own / ASSIGNMENT / name, as_version=4).cells
            for index, _, text in solutions:
                shift = 1 if index > parameters else 0
                assert saved[index + shift].source == text, f"cell {index} was not typed as given"

            me.run_all(timeout_s=180)
            plots = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img")
            if plots.count():   # the training's losses on top, its samples below
                plots.first.evaluate("img => img.scrollIntoView({block: 'start'})")
            me.shot("ran-all")

            page.locator(".validate-button").click()   # nbgrader's toolbar button: saves, then validates
            dialog = page.locator(".jp-Dialog")
            expect(dialog).to_contain_text("Validation Results", timeout=180_000)
            expect(dialog).to_contain_text("Success! Your notebook passes all the tests.")
            me.shot("validated")
            dialog.get_by_role("button", name="Ok").click()

            me.menu("Nbgrader")
            me.menu_item("Assignment List")
            fetched.get_by_role("button", name="Submit").click()
            submitted = page.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT)
            expect(submitted).to_be_visible()
            me.shot("submitted")
            # The student's server serves no formgrader at all, not just no menu entry for it.
            assert page.request.get(f"{base}/formgrader?token={token}").status == 404

            # The instructor's server, meanwhile: `make collect autograde feedback`.
            pipeline.collect(course, ASSIGNMENT)
            pipeline.autograde(course, ASSIGNMENT, STUDENT)
            scores = pipeline.cell_scores(course, ASSIGNMENT)[STUDENT]
            assert {g: s.score for g, s in scores.items() if g in auto_points} == auto_points
            for grade_id in manual_points:   # the written answer waits for the TA, as typed
                assert scores[grade_id].needs_manual_grade and scores[grade_id].score is None
            collected = course.runtime_dir / "submitted" / STUDENT / ASSIGNMENT / name
            sources = [c.source for c in nbformat.read(collected, as_version=4).cells]
            assert all(text in sources for _, _, text in solutions), "the submission holds what was typed"
            assert pipeline.feedback(course, ASSIGNMENT).released == (STUDENT,)

            # Back on the student's server: the Assignment List offers the feedback; it is fetched and read.
            page.reload()
            me.menu("Nbgrader")
            me.menu_item("Assignment List")
            submitted = page.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT).first
            expect(submitted).to_contain_text("feedback available to fetch")
            me.shot("feedback-available")
            submitted.get_by_role("button", name="Fetch Feedback").click()
            # The list is drawn again once the feedback is here (the button back from "Fetching
            # Feedback..."); a click on the link of the list being replaced goes nowhere.
            expect(submitted.get_by_role("button", name="Fetch Feedback")).to_be_enabled()
            view = page.locator("#submitted_assignments_list a", has_text="view feedback").first
            expect(view).to_be_visible()
            [html] = sorted((own / ASSIGNMENT / "feedback").glob("*/*.html"))
            page_item = page.locator(".jp-DirListing-item", has_text=html.name)
            for attempt in range(3):
                view.click()   # the file browser goes to the feedback folder
                try:
                    expect(page_item).to_be_visible(timeout=10_000)
                    break
                except AssertionError:
                    if attempt == 2:
                        raise
            page_item.dblclick()
            feedback = page.frame_locator(".jp-HTMLViewer iframe").locator("body")
            auto_total = sum(auto_points.values())
            expect(feedback).to_contain_text(Path(name).stem)
            expect(feedback).to_contain_text(re.compile(rf"\b{auto_total:g}(\.0)?\b"))
            # The written answer nobody graded yet is pending, not a zero (grading/feedback.py).
            expect(feedback).to_contain_text("waiting for grading")
            expect(feedback).not_to_contain_text(f"0.0 / {sum(manual_points.values()):.1f}")
            me.shot("feedback")
        except Exception:
            me.leave_evidence(log)
            raise
        finally:
            context.close()

    # The instructor's server: its formgrader reads the same gradebook and shows the same score.
    log = shots / "jupyterlab-instructor.log"
    with running_lab(course, "instructor", tmp_path / "home-instructor", log) as (base, token, _):
        me.page = page = browser.new_page(viewport={"width": 1400, "height": 700})
        try:
            page.goto(f"{base}/lab?token={token}")   # also leaves the login cookie the formgrader needs
            labels = me.menu("Nbgrader")
            me.shot("instructor-nbgrader-menu")
            assert {"Assignment List", "Formgrader"} <= set(labels), labels
            page.keyboard.press("Escape")
            page.goto(f"{base}/formgrader/manage_students/{STUDENT}")
            row = page.locator("tr", has_text=ASSIGNMENT)
            expect(row).to_contain_text(f"{sum(auto_points.values()):g} / {week.points:g}")
            me.shot("instructor-formgrader")
        except Exception:
            me.leave_evidence(log)
            raise
        finally:
            page.close()
