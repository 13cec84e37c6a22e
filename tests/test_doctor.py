"""`gankit doctor` verdicts, on faked machines: gankit's machine checks and the course's (grading/doctor.py)."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from types import SimpleNamespace

from gankit import doctor
from gankit.doctor import GPU, Facts, Finding, arch_supported, diagnose
from grading import doctor as course_doctor
from grading.course import REPO_ROOT
from grading.doctor import CourseFacts

CUDA13_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
CUDA12_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "compute_90"]


def _facts(**kw) -> Facts:
    base = dict(python="3.11.7", torch="2.14.1+cu130", torch_cuda="13.0", arch_list=CUDA13_ARCHS,
                driver="580.65")
    return Facts(**{**base, **kw})


def _levels(findings, level):
    return [f.message for f in findings if f.level == level]


def test_arch_support_follows_sass_and_ptx_rules():
    assert arch_supported((8, 0), CUDA13_ARCHS)                  # A100: exact SASS
    assert arch_supported((8, 9), CUDA13_ARCHS)                  # L40: sm_86 SASS runs on 8.9
    assert not arch_supported((7, 0), CUDA13_ARCHS)              # V100 on a CUDA-13 build
    assert arch_supported((7, 0), CUDA12_ARCHS)
    assert arch_supported((12, 1), ["sm_80", "compute_120"])     # PTX JIT to a newer GPU
    assert not arch_supported((9, 0), ["sm_80", "sm_86"])        # SASS does not cross majors
    assert arch_supported((9, 0), ["sm_90a"])


def test_v100_on_a_cuda13_build_is_an_error_with_the_fix():
    findings = diagnose(_facts(gpus=[GPU(0, "Tesla V100-SXM2-32GB", (7, 0), 32.0)]))
    errors = _levels(findings, "error")
    assert len(errors) == 1 and "sm_70" in errors[0] and "TORCH_INDEX=" in errors[0]
    assert any("fp16 with a gradient scaler" in m for m in _levels(findings, "ok"))


def test_a100_pair_is_fine():
    gpus = [GPU(i, "NVIDIA A100-SXM4-40GB", (8, 0), 40.0) for i in range(2)]
    findings = diagnose(_facts(gpus=gpus))
    assert not _levels(findings, "error")
    assert sum("A100" in m for m in _levels(findings, "ok")) == 2
    assert any("sm_80" in m and "compute_120" in m for m in _levels(findings, "ok")), "the arch list is reported"


def test_no_gpu_is_a_warning_not_an_error():
    findings = diagnose(_facts(driver=None))
    assert not _levels(findings, "error")
    assert any("no NVIDIA driver" in m for m in _levels(findings, "warn"))


def test_missing_or_corrupt_data():
    facts = _facts(data_root=Path("/data"), datasets={"mnist": "missing", "cifar10": "sha256 mismatch"})
    findings = diagnose(facts)
    assert any("gankit data fetch mnist" in m for m in _levels(findings, "warn"))
    assert any("cifar10" in m and "gankit data verify" in m for m in _levels(findings, "error"))


def test_missing_writable_and_unwritable_exchange(tmp_path, monkeypatch):
    assert any("does not exist yet" in m
               for m in _levels(course_doctor.diagnose(CourseFacts(exchange=tmp_path / "exchange")), "warn"))
    assert any("is writable" in m for m in _levels(course_doctor.diagnose(CourseFacts(exchange=tmp_path)), "ok"))
    monkeypatch.setattr(course_doctor.os, "access", lambda path, mode: False)   # tests run as root
    findings = course_doctor.diagnose(CourseFacts(exchange=tmp_path))
    assert any("not writable" in m for m in _levels(findings, "error"))


def test_gather_and_render_on_this_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path))
    facts = doctor.gather()
    assert facts.data_root == Path(tmp_path) and facts.datasets == {"mnist": "missing"}
    assert facts.free_memory_gib > 0
    text = doctor.render(diagnose(facts))
    assert text.splitlines()[0].startswith("  ok Python")
    course = course_doctor.gather()
    assert course.course_problem is None and course.course.startswith("gan-course ")
    assert course.bubblewrap is not None and course.process_limit is not None
    assert course.nbgrader_lab, "make setup installs nbgrader's lab extension into the venv"


def test_little_memory_no_bubblewrap_and_no_lab_extension():
    warnings = _levels(diagnose(_facts(free_memory_gib=3.5, free_disk_gib=4.0)), "warn")
    assert any("3.5 GiB of memory" in m and "--workers" in m for m in warnings)
    assert any("4.0 GiB free disk" in m for m in warnings)
    findings = course_doctor.diagnose(CourseFacts(bubblewrap="missing", nbgrader_lab=False))
    assert any("apt-get install bubblewrap" in m for m in _levels(findings, "warn"))
    assert any("Assignment List" in m for m in _levels(findings, "error"))


def test_bubblewrap_without_user_namespaces_says_why():
    findings = course_doctor.diagnose(CourseFacts(bubblewrap="bwrap: No permissions to creating new namespace"))
    assert any("No permissions" in m and "unprivileged_userns_clone" in m for m in _levels(findings, "warn"))
    ready = diagnose(_facts(gpus=[GPU(0, "NVIDIA A100-SXM4-40GB", (8, 0), 40.0)], free_memory_gib=64.0,
                            free_disk_gib=500.0))
    ready += course_doctor.diagnose(CourseFacts(course="gan-course (course.yml)", bubblewrap="ok", nbgrader_lab=True,
                                                process_limit=("cgroup2", "each kernel gets its own cgroup")))
    assert not _levels(ready, "warn") and not _levels(ready, "error")
    assert any("makes sandboxes" in m for m in _levels(ready, "ok"))


def test_bubblewrap_probe_reports_missing_and_failing_bwrap(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert course_doctor.bubblewrap_state() == "missing"
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    assert course_doctor.bubblewrap_state() == "bwrap: setting up uid map: Permission denied"


def test_uncapped_processes_are_a_warning_saying_why():
    findings = course_doctor.diagnose(CourseFacts(process_limit=("none", "the grader runs as root; delegate pids")))
    assert any("not capped" in m and "delegate pids" in m for m in _levels(findings, "warn"))


def test_a_course_file_that_does_not_load_fails_naming_the_key_and_the_file(tmp_path, monkeypatch):
    broken = tmp_path / "course.yml"
    broken.write_text((REPO_ROOT / "course" / "course.yml").read_text().replace("\nlate_policy:", "\nlate_polcy:"))
    monkeypatch.setenv("GANKIT_COURSE_FILE", str(broken))
    facts = course_doctor.gather()
    assert facts.course is None and facts.exchange is None
    errors = _levels(course_doctor.diagnose(facts), "error")
    assert len(errors) == 1 and "late_polcy" in errors[0] and str(broken) in errors[0]


def _entry(name, load):
    return SimpleNamespace(name=name, value=f"some.module:{name}", load=load)


def test_a_machine_without_the_course_checks_gets_the_machine_report(monkeypatch, capsys):
    """A student's machine with gankit alone: no ``gankit.doctor`` entry point installed."""
    monkeypatch.setattr(doctor, "gather", lambda: _facts(free_memory_gib=64.0, free_disk_gib=500.0))
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    assert doctor.main() == 0
    out = capsys.readouterr().out
    assert out.startswith("  ok Python 3.11.7") and "GiB of memory" in out
    assert "bubblewrap" not in out and "exchange" not in out


def test_a_broken_check_plugin_is_a_warning_and_the_others_still_report(monkeypatch, capsys):
    def broken():
        raise ImportError("No module named 'nbgrader'")

    entries = [_entry("zzz", lambda: lambda: [Finding("error", "zzz says no")]), _entry("aaa", broken)]
    monkeypatch.setattr(doctor, "gather", lambda: _facts())
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: entries if group == "gankit.doctor" else [])
    assert doctor.main() == 1, "a plugin's error fails the doctor like the machine's own"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  ok Python")
    assert lines[-2] == "WARN the aaa checks (some.module:aaa) could not run: ImportError: No module named 'nbgrader'"
    assert lines[-1] == "FAIL zzz says no"


def test_the_installed_kit_registers_the_course_checks():
    """pyproject.toml names grading.doctor:findings; `make setup` installs it (rerun it if this fails)."""
    messages = [f.message for f in doctor.registered_findings()]
    assert any(m.startswith("course gan-course ") for m in messages), messages
    assert any("bubblewrap" in m for m in messages)
