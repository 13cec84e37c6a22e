"""`gankit doctor`'s check of a shared nbgrader exchange, from either side of it.

An instructor's server and the students' servers share one folder, ``paths.exchange`` (an NFS or
sshfs mount at the same path everywhere). nbgrader's default exchange (nbgrader/exchange/default/)
needs, with its default ``groupshared = False``::

    <exchange>/                  1777 any owner     everyone: rwx (every nbgrader command checks
                                                    write+execute first); sticky, as /tmp
    <exchange>/<course>/         0755 instructor    students: r-x; made by the first release
    <exchange>/<course>/outbound 0755 instructor    students: r-x (list, fetch); released folders 0755, files 0644
    <exchange>/<course>/inbound  2733 instructor    students: -wx: submit without listing others' submissions
    <exchange>/<course>/feedback 0711 instructor    students: --x: read their own page by its secret hash name

The release and release_feedback commands refuse a course, outbound, inbound or feedback folder
that exists and is not owned by whoever releases ("You don't own the directory").

What is wrong differs by side, so the checks take a role. The instructor's side: the mount
missing (a local folder made in its place would receive releases nobody sees), wrong modes or
owners. The student's side: what this account can do there (fetch needs r-x on outbound; submit
-wx on inbound), and whether the exchange is a shared folder at all and not an empty folder in the
student's own clone, which no instructor on another server can ever release into.

Facts are gathered by :func:`gather_exchange` (stat and ``os.access`` as this user) and judged by
the pure :func:`diagnose_exchange`, so each verdict is tested with faked facts and, as another
Unix user, on real folders (tests/test_two_servers.py).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from gankit.doctor import Finding

ROLES = ("student", "instructor")
# What nbgrader's release makes (exchange/default/release_assignment.py, release_feedback.py).
WANTED = {"root": 0o1777, "course": 0o755, "outbound": 0o755, "inbound": 0o2733, "feedback": 0o711}
# Filesystems that another machine can share; anything else is this machine's own disk.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "ceph", "fuse.ceph", "lustre", "gpfs",
              "beegfs", "glusterfs", "fuse.glusterfs", "9p", "virtiofs", "afs", "fuse.rclone")


@dataclass
class PathFacts:
    """One folder of the exchange as this account sees it."""

    path: Path
    exists: bool = False
    is_dir: bool = False
    mode: int = 0                # stat.S_IMODE: permission bits with setgid and sticky
    uid: int = -1
    owner: str = ""              # the owner's login name, or "uid N" without a passwd entry
    can_read: bool = False       # os.access as this process: list the folder
    can_write: bool = False      # create entries (with can_enter)
    can_enter: bool = False      # x: reach what is inside


@dataclass
class ExchangeFacts:
    course_id: str
    where: str                   # "paths.exchange in <course.yml>", for messages
    root: PathFacts
    course: PathFacts
    outbound: PathFacts
    inbound: PathFacts
    feedback: PathFacts
    in_runtime: bool             # the exchange is a folder inside this clone's runtime folder
    runtime: Path
    uid: int                     # this process's
    user: str
    mount: tuple[str, str] | None = None   # (mount point, filesystem type) the exchange lies on
    released: list[str] = field(default_factory=list)   # assignment folders in outbound, when listable


def path_facts(path: Path) -> PathFacts:
    """stat and access of ``path`` for this process; a folder that cannot be reached reads as missing."""
    facts = PathFacts(path=path)
    try:
        st = path.stat()
    except OSError:
        return facts
    facts.exists, facts.is_dir = True, stat.S_ISDIR(st.st_mode)
    facts.mode, facts.uid, facts.owner = stat.S_IMODE(st.st_mode), st.st_uid, user_name(st.st_uid)
    facts.can_read = os.access(path, os.R_OK)
    facts.can_write = os.access(path, os.W_OK)
    facts.can_enter = os.access(path, os.X_OK)
    return facts


def user_name(uid: int) -> str:
    import pwd   # Unix only, as nbgrader's exchange

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def mount_of(path: Path) -> tuple[str, str] | None:
    """(mount point, filesystem type) of the longest mount point above ``path``, from /proc/self/mounts."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best = None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, parts[2])
    return best


def gather_exchange(course) -> ExchangeFacts:
    """The exchange of ``course`` (grading.course.Course) as this account sees it."""
    root = course.exchange_dir
    course_dir = root / course.course_id
    facts = ExchangeFacts(
        course_id=course.course_id, where=f"paths.exchange in {course.source_file}",
        root=path_facts(root), course=path_facts(course_dir), outbound=path_facts(course_dir / "outbound"),
        inbound=path_facts(course_dir / "inbound"), feedback=path_facts(course_dir / "feedback"),
        in_runtime=root.is_relative_to(course.runtime_dir), runtime=course.runtime_dir,
        uid=os.getuid(), user=user_name(os.getuid()), mount=mount_of(root) if root.exists() else None)
    if facts.outbound.can_read and facts.outbound.can_enter:
        try:
            facts.released = sorted(p.name for p in facts.outbound.path.iterdir() if p.is_dir())
        except OSError:
            pass
    return facts


def guess_role(course) -> tuple[str, str]:
    """(role, why): ``GANKIT_ROLE`` if set (`gankit doctor --role`), else guessed from what only an
    instructor's server has: a gradebook or generated student versions in the runtime folder."""
    chosen = os.environ.get("GANKIT_ROLE", "").strip()
    if chosen:
        if chosen not in ROLES:
            return "student", f"GANKIT_ROLE={chosen!r} is not student or instructor; checking as a student"
        return chosen, "given by --role (GANKIT_ROLE)"
    gradebook = course.runtime_dir / "gradebook.db"
    external = os.environ.get("GANKIT_GRADEBOOK_URL") or course.grading.gradebook_url
    if external or gradebook.exists() or (course.runtime_dir / "release").is_dir():
        what = "a gradebook URL" if external else (str(gradebook) if gradebook.exists() else
                                                   f"{course.runtime_dir / 'release'}")
        return "instructor", f"guessed from {what}; pass --role student to check a student's side"
    return "student", (f"guessed: no gradebook and no release/ in {course.runtime_dir}; "
                       "pass --role instructor on the instructor's server")


def _mode(facts: PathFacts) -> str:
    return f"{facts.mode:04o}"


def _lacks(facts: PathFacts, bits: int) -> bool:
    return facts.mode & bits != bits


def diagnose_exchange(facts: ExchangeFacts, role: str) -> list[Finding]:
    """Verdicts on the exchange for ``role`` ("student" or "instructor"), each naming the folder,
    what is wrong, who it hurts and the command that fixes it."""
    findings: list[Finding] = []
    root = facts.root
    shared_hint = (f"the folder every student's server shares with the instructor's (an NFS or sshfs mount at "
                   f"the same path on every server); fix {facts.where} if it names the wrong path")

    # --- the exchange folder itself -------------------------------------------------------------------
    if not root.exists:
        if role == "instructor" and facts.in_runtime:
            findings.append(Finding("warn", f"nbgrader exchange {root.path} does not exist yet (the first "
                                    "`make release` creates it in the runtime folder; only this machine sees it)"))
        elif facts.in_runtime:
            findings.append(Finding("warn", f"nbgrader exchange {root.path} is a folder inside this clone's runtime "
                                    f"({facts.runtime}) and does not exist yet (`make lab` creates it): an instructor "
                                    f"on another server can never release there. Point {facts.where} at the shared "
                                    "mount (e.g. /srv/nbgrader/exchange); fine if the instructor works in this clone"))
        elif role == "instructor":
            findings.append(Finding("error", f"nbgrader exchange {root.path} does not exist: the shared mount is "
                                    f"missing on this server. It is {shared_hint}. Mount it, or create it once: "
                                    f"`sudo mkdir -p {root.path} && sudo chmod 1777 {root.path}`"))
        else:
            findings.append(Finding("error", f"nbgrader exchange {root.path} does not exist on this server, so the "
                                    f"Assignment List has nothing to fetch from: it is {shared_hint}. Ask your "
                                    f"instructor or admin to mount it here (`findmnt -T {root.path.parent}`)"))
        return findings
    if not root.is_dir:
        return [Finding("error", f"nbgrader exchange {root.path} is not a folder; fix {facts.where}")]
    if role == "student" and facts.in_runtime and not facts.outbound.exists:
        findings.append(Finding("warn", f"nbgrader exchange {root.path} is a folder inside this clone's runtime "
                                f"({facts.runtime}), and nothing was ever released into it: an instructor on "
                                f"another server can never release there. Point {facts.where} at the shared "
                                "mount (e.g. /srv/nbgrader/exchange); fine if the instructor works in this clone"))
    if facts.mount is not None and not facts.in_runtime:
        point, fstype = facts.mount
        if fstype in NETWORK_FS or fstype.startswith("fuse.sshfs"):
            findings.append(Finding("ok", f"nbgrader exchange {root.path} is on the {fstype} mount {point}"))
        else:
            findings.append(Finding("warn", f"nbgrader exchange {root.path} is on this machine's own {fstype} "
                                    f"filesystem ({point}), not a network mount: only servers that are this "
                                    "machine see it. Mount the shared exchange there if students work elsewhere"))
    if _lacks(root, 0o777):
        hurt = "students cannot fetch or submit (nbgrader checks write access to it first)"
        findings.append(Finding("error", f"nbgrader exchange {root.path} has mode {_mode(root)} (owner "
                                f"{root.owner}): {hurt}. It needs 1777, like /tmp: "
                                f"`sudo chmod 1777 {root.path}`"))
    elif not root.can_write or not root.can_enter:
        findings.append(Finding("error", f"nbgrader exchange {root.path} has mode {_mode(root)} but is not "
                                f"writable from this account ({facts.user}): a read-only mount, or an NFS server "
                                f"mapping this user away (root_squash). Check `findmnt -T {root.path}`"))
    elif not root.mode & stat.S_ISVTX:
        findings.append(Finding("warn", f"nbgrader exchange {root.path} has mode {_mode(root)}, without the sticky "
                                f"bit: any user may delete or rename the course's folder. "
                                f"`sudo chmod 1777 {root.path}`"))
    else:
        findings.append(Finding("ok", f"nbgrader exchange {root.path} has mode {_mode(root)} (everyone may create, "
                                "nobody may delete another's entries)"))

    # --- the course's folders, made by the instructor's first release -----------------------------
    if not facts.course.exists:
        who = "your instructor's" if role == "student" else "your"
        findings.append(Finding("ok", f"nothing released yet in {root.path} for {facts.course_id} ({who} first "
                                f"release creates {facts.course.path.name}/outbound and inbound)"))
        return findings
    if role == "instructor":
        findings += _instructor_side(facts)
    else:
        findings += _student_side(facts)
    return findings


def _instructor_side(facts: ExchangeFacts) -> list[Finding]:
    findings = []
    for name in ("course", "outbound", "inbound", "feedback"):
        folder: PathFacts = getattr(facts, name)
        if not folder.exists:
            if name != "feedback":   # feedback/ appears with the first feedback release
                findings.append(Finding("error", f"{folder.path} is missing (the course folder exists): students "
                                        f"cannot {'fetch' if name == 'outbound' else 'submit'}; release again "
                                        f"(`make release`) to recreate it"))
            continue
        wanted = WANTED[name]
        if folder.uid != facts.uid:
            findings.append(Finding("error", f"{folder.path} belongs to {folder.owner}, not to you ({facts.user}): "
                                    "nbgrader refuses to release into it (\"You don't own the directory\"). "
                                    f"`sudo chown -R {facts.user} {folder.path}`, or release as {folder.owner}"))
        problem = None
        if name == "inbound" and _lacks(folder, 0o033):
            problem = "students cannot submit"
        elif name == "inbound" and folder.mode & 0o004:
            problem = "every student can list (and copy) the others' submissions"
        elif name in ("course", "outbound") and _lacks(folder, 0o005):
            problem = "students cannot " + ("see the course" if name == "course" else "list or fetch releases")
        elif name in ("course", "outbound") and folder.mode & 0o002:
            problem = "any student can replace what you released"
        elif name == "feedback" and _lacks(folder, 0o001):
            problem = "students cannot fetch their feedback"
        if problem:
            findings.append(Finding("error", f"{folder.path} has mode {_mode(folder)}: {problem}. nbgrader makes it "
                                    f"{wanted:04o}: `chmod {wanted:04o} {folder.path}`"))
    if not any(f.level == "error" for f in findings):
        modes = ", ".join(f"{n} {_mode(getattr(facts, n))}" for n in ("course", "outbound", "inbound", "feedback")
                          if getattr(facts, n).exists)
        findings.append(Finding("ok", f"the course folder {facts.course.path} is yours with nbgrader's modes ({modes})"))
    return findings


def _student_side(facts: ExchangeFacts) -> list[Finding]:
    findings = []
    course, outbound, inbound, feedback = facts.course, facts.outbound, facts.inbound, facts.feedback
    instructor = course.owner or "the instructor"
    if not (course.can_read and course.can_enter):
        findings.append(Finding("error", f"{course.path} (mode {_mode(course)}, owner {instructor}) cannot be read "
                                f"from this account: nothing can be fetched or submitted. The instructor runs "
                                f"`chmod 0755 {course.path}`"))
        return findings
    if not outbound.exists:
        findings.append(Finding("warn", f"{outbound.path} does not exist: nothing released yet"))
    elif not (outbound.can_read and outbound.can_enter):
        findings.append(Finding("error", f"{outbound.path} has mode {_mode(outbound)} (owner {outbound.owner}): you "
                                f"cannot list or fetch releases. The instructor runs `chmod 0755 {outbound.path}`"))
    else:
        released = ", ".join(facts.released) if facts.released else "nothing yet"
        findings.append(Finding("ok", f"you can fetch from {outbound.path} (released: {released})"))
    if not inbound.exists:
        findings.append(Finding("error", f"{inbound.path} does not exist: you cannot submit. The instructor "
                                f"releases again (`make release`), which recreates it with mode 2733"))
    elif not (inbound.can_write and inbound.can_enter):
        findings.append(Finding("error", f"{inbound.path} has mode {_mode(inbound)} (owner {inbound.owner}): you "
                                f"cannot submit. The instructor runs `chmod 2733 {inbound.path}` (students write "
                                "there but cannot list it)"))
    elif inbound.can_read and facts.uid != 0:
        findings.append(Finding("warn", f"{inbound.path} has mode {_mode(inbound)}: you can submit, but also list "
                                f"everyone's submissions there. The instructor runs `chmod 2733 {inbound.path}`"))
    else:
        findings.append(Finding("ok", f"you can submit into {inbound.path} (mode {_mode(inbound)}, not listable)"))
    if feedback.exists and not feedback.can_enter:
        findings.append(Finding("error", f"{feedback.path} has mode {_mode(feedback)}: you cannot fetch feedback. "
                                f"The instructor runs `chmod 0711 {feedback.path}`"))
    return findings
