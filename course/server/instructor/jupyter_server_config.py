# The Jupyter server of an instructor or TA. grading/lab.py (`make lab ROLE=instructor`) puts this
# folder on JUPYTER_CONFIG_PATH and serves the course runtime folder, so the formgrader finds the
# course root and the gradebook below its notebook folder, as it requires.
c = get_config()  # noqa: F821 - provided by traitlets when Jupyter loads this file
# All four nbgrader server extensions, even where a system-wide config turned them off for students.
c.ServerApp.jpserver_extensions = {
    "nbgrader.server_extensions.assignment_list": True,
    "nbgrader.server_extensions.validate_assignment": True,
    "nbgrader.server_extensions.formgrader": True,
    "nbgrader.server_extensions.course_list": True,
}
# The course pins its versions and a class server may be offline: no update check, no news feed
# (labconfig/page_config.json also turns off the plugin that asks about news).
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.news_url = None
