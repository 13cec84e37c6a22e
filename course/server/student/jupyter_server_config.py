# The Jupyter server of a student. grading/lab.py (`make lab`) puts this folder on
# JUPYTER_CONFIG_PATH; on a class server, put it there the same way (see README, "The student's
# server"). pip-installing nbgrader enables its four server extensions for everyone: a student
# keeps the assignment list (fetch, submit) and Validate; the formgrader and the course list are
# the instructor's tools (they read and write the gradebook).
c = get_config()  # noqa: F821 - provided by traitlets when Jupyter loads this file
c.ServerApp.jpserver_extensions = {
    "nbgrader.server_extensions.assignment_list": True,
    "nbgrader.server_extensions.validate_assignment": True,
    "nbgrader.server_extensions.formgrader": False,
    "nbgrader.server_extensions.course_list": False,
}
# The course pins its versions and a class server may be offline: no update check, no news feed
# (labconfig/page_config.json also turns off the plugin that asks about news).
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.news_url = None
# Markdown opens rendered (the landing page START.md, the syllabus), so its links open in this lab;
# *Open With > Editor* still edits. JupyterLab reads overrides.json from its app settings folder.
import pathlib  # noqa: E402

c.LabApp.app_settings_dir = str(pathlib.Path(__file__).resolve().parent / "lab-settings")
