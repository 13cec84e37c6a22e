"""`gankit doctor`'s shared-exchange verdicts (grading/exchange_doctor.py) on faked folders, from the
instructor's side and the student's (tests/test_two_servers.py checks real folders as another uid)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from grading.exchange_doctor import ExchangeFacts, PathFacts, diagnose_exchange, guess_role

EXCHANGE = Path("/srv/nbgrader/exchange")
INSTRUCTOR, STUDENT = 1000, 2001


def folder(name: str, mode: int, *, uid=INSTRUCTOR, r=True, w=False, x=True) -> PathFacts:
    path = EXCHANGE if name == "root" else EXCHANGE / "gan-course" / ("" if name == "course" else name)
    return PathFacts(path=Path(str(path).rstrip("/")), exists=True, is_dir=True, mode=mode, uid=uid,
                     owner="prof" if uid == INSTRUCTOR else f"uid {uid}", can_read=r, can_write=w, can_enter=x)


def healthy(me: int, **changes) -> ExchangeFacts:
    """A shared exchange as nbgrader's release leaves it, seen by uid ``me`` (access bits follow the modes)."""
    student = me != INSTRUCTOR
    facts = ExchangeFacts(
        course_id="gan-course", where="paths.exchange in course.yml",
        root=folder("root", 0o1777, uid=0, w=True),
        course=folder("course", 0o755, w=not student), outbound=folder("outbound", 0o755, w=not student),
        inbound=folder("inbound", 0o2733, r=not student, w=True), feedback=folder("feedback", 0o711, r=not student,
                                                                                  w=not student),
        in_runtime=False, runtime=Path("/home/ada/gankit/runtime"), uid=me, user="prof" if not student else "ada",
        mount=("/srv/nbgrader", "nfs4"), released=["week01_gan_foundations"])
    return dataclasses.replace(facts, **changes)


def levels(findings, level):
    return [f.message for f in findings if f.level == level]


@pytest.mark.parametrize("me,role", [(INSTRUCTOR, "instructor"), (STUDENT, "student")])
def test_a_healthy_shared_exchange_is_fine_from_both_sides(me, role):
    findings = diagnose_exchange(healthy(me), role)
    assert not levels(findings, "error") and not levels(findings, "warn"), findings
    assert any("nfs4 mount /srv/nbgrader" in m for m in levels(findings, "ok"))


def test_a_missing_mount_is_an_error_on_either_side_and_never_says_run_release():
    missing = healthy(INSTRUCTOR, root=PathFacts(path=EXCHANGE))
    [error] = levels(diagnose_exchange(missing, "instructor"), "error")
    assert "mount is missing" in error and f"sudo chmod 1777 {EXCHANGE}" in error
    [error] = levels(diagnose_exchange(dataclasses.replace(missing, uid=STUDENT), "student"), "error")
    assert "does not exist on this server" in error and "mount it here" in error and "make" not in error


def test_an_exchange_in_a_students_own_clone_is_named():
    local = healthy(STUDENT, in_runtime=True, root=folder("root", 0o1777, uid=STUDENT, w=True),
                    course=PathFacts(path=EXCHANGE / "gan-course"), outbound=PathFacts(path=EXCHANGE / "o"),
                    inbound=PathFacts(path=EXCHANGE / "i"), feedback=PathFacts(path=EXCHANGE / "f"), mount=None)
    [warning] = levels(diagnose_exchange(local, "student"), "warn")
    assert "inside this clone's runtime" in warning and "can never release there" in warning
    absent = dataclasses.replace(local, root=PathFacts(path=EXCHANGE))
    [warning] = levels(diagnose_exchange(absent, "student"), "warn")
    assert "inside this clone's runtime" in warning and not levels(diagnose_exchange(absent, "student"), "error")


def test_a_local_disk_where_a_mount_should_be_is_a_warning():
    [warning] = levels(diagnose_exchange(healthy(STUDENT, mount=("/", "ext4")), "student"), "warn")
    assert "own ext4 filesystem" in warning and "not a network mount" in warning


def test_an_inbound_students_cannot_write_fails_on_both_sides_with_the_chmod():
    instructor = healthy(INSTRUCTOR, inbound=folder("inbound", 0o755, w=True))
    [error] = levels(diagnose_exchange(instructor, "instructor"), "error")
    assert "inbound has mode 0755: students cannot submit" in error and "chmod 2733" in error
    student = healthy(STUDENT, inbound=folder("inbound", 0o755, w=False))
    [error] = levels(diagnose_exchange(student, "student"), "error")
    assert "you cannot submit" in error and f"chmod 2733 {EXCHANGE}/gan-course/inbound" in error


def test_a_listable_inbound_and_a_locked_outbound_are_named():
    listable = healthy(STUDENT, inbound=folder("inbound", 0o2777, r=True, w=True))
    assert any("list everyone's submissions" in m for m in levels(diagnose_exchange(listable, "student"), "warn"))
    assert any("list (and copy) the others' submissions" in m
               for m in levels(diagnose_exchange(dataclasses.replace(listable, uid=INSTRUCTOR), "instructor"), "error"))
    locked = healthy(STUDENT, outbound=folder("outbound", 0o700, r=False, x=False))
    [error] = levels(diagnose_exchange(locked, "student"), "error")
    assert "cannot list or fetch" in error and "chmod 0755" in error


def test_folders_owned_by_someone_else_block_the_instructors_release():
    facts = healthy(INSTRUCTOR, outbound=folder("outbound", 0o755, uid=STUDENT))
    [error] = levels(diagnose_exchange(facts, "instructor"), "error")
    assert "belongs to uid 2001, not to you (prof)" in error and "chown" in error


def test_an_exchange_without_world_write_or_sticky_bit():
    closed = healthy(STUDENT, root=folder("root", 0o755, uid=0, w=False))
    [error] = levels(diagnose_exchange(closed, "student"), "error")
    assert "mode 0755" in error and "sudo chmod 1777" in error
    no_sticky = healthy(INSTRUCTOR, root=folder("root", 0o777, uid=0, w=True))
    assert any("sticky" in m for m in levels(diagnose_exchange(no_sticky, "instructor"), "warn"))


def test_before_the_first_release_both_sides_are_told_so():
    empty = healthy(STUDENT, course=PathFacts(path=EXCHANGE / "gan-course"))
    findings = diagnose_exchange(empty, "student")
    assert not levels(findings, "error") and any("nothing released yet" in m and "instructor's first release" in m
                                                 for m in levels(findings, "ok"))


def test_the_role_is_given_or_guessed_from_what_only_an_instructor_has(course_runtime, monkeypatch):
    monkeypatch.delenv("GANKIT_ROLE", raising=False)
    monkeypatch.delenv("GANKIT_GRADEBOOK_URL", raising=False)
    role, why = guess_role(course_runtime)
    assert role == "student" and "--role instructor" in why
    (course_runtime.runtime_dir / "release").mkdir(parents=True)
    role, why = guess_role(course_runtime)
    assert role == "instructor" and "release" in why
    monkeypatch.setenv("GANKIT_ROLE", "student")
    assert guess_role(course_runtime)[0] == "student"


def test_gankit_doctor_role_reaches_the_course_checks(course_runtime, monkeypatch, capsys):
    from gankit import cli, doctor
    from gankit.doctor import Facts

    monkeypatch.setenv("GANKIT_ROLE", "")   # recorded, so the variable main() sets is undone after the test
    monkeypatch.setattr(doctor, "gather", lambda: Facts(python="3.11.7", torch="2.14.1+cu130", torch_cuda="13.0",
                                                        arch_list=["sm_80"], driver="580.65"))
    cli.main(["doctor", "--role", "instructor"])
    out = capsys.readouterr().out
    assert "checked as the instructor's server: given by --role" in out
