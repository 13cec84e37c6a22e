"""gankit.runs: background training that survives its kernel, `gankit runs`, resume after a kill."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import matplotlib
import pytest

from gankit import runs

matplotlib.use("Agg")

# Tiny CycleGAN nets on 32x32 synthetic data: ~5 steps/s on a CI core, a checkpoint every 3 steps.
SMOKE = ["cyclegan", "--smoke", "--no-progress"]


@pytest.fixture()
def index(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_RUNS", str(tmp_path / "index"))
    return tmp_path / "index"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def gankit(*args, check=True):
    """The real command line, as a student types it."""
    result = subprocess.run([sys.executable, "-m", "gankit", *args], capture_output=True, text=True,
                            timeout=120, env=os.environ.copy())
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def wait_for(predicate, timeout=120, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def fake_run(tmp_path, name, returncode=None, supervisor=None, status=None, stop_requested=False):
    """A run folder as a supervisor would leave it, without starting anything."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    record = {"id": name, "run_dir": str(run_dir), "train_args": ["cyclegan"], "started": time.time() - 10,
              "supervisor": supervisor, "returncode": returncode, "stop_requested": stop_requested}
    (run_dir / "background.json").write_text(json.dumps(record))
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps({"updated": time.time(), **status}))
    index = runs.runs_index()
    index.mkdir(parents=True, exist_ok=True)
    (index / f"{name}.json").write_text(json.dumps({"id": name, "run_dir": str(run_dir)}))
    return runs.find(name)


def me():
    """A supervisor record that is alive: this test process."""
    return {"pid": os.getpid(), "start": runs._start_ticks(os.getpid()), "boot": runs._boot_id()}


@pytest.mark.parametrize("returncode, supervisor, stop_requested, state, reason", [
    (0, None, False, "finished", ""),
    (143, None, True, "stopped", "stopped at step 7"),
    (130, None, False, "stopped", "--resume"),
    (-15, None, True, "stopped", "--resume"),   # `--stop` before the Trainer caught signals
    (-15, None, False, "died", "killed by SIGTERM"),
    (2, None, False, "failed", "exit 2: ValueError: bad"),
    (-9, None, False, "died", "killed by SIGKILL (the kernel's out-of-memory killer"),
    (None, None, False, "died", "a reboot or kill -9"),
    (None, "stale-boot", False, "died", "a reboot"),
    (None, "alive", False, "running", ""),
    (None, "alive-stale-status", False, "starting", ""),
])
def test_state_and_reason(tmp_path, index, returncode, supervisor, stop_requested, state, reason):
    status = {"state": "running" if state in ("running", "starting") else "stopped", "step": 7,
              "total_steps": 9, "error": "ValueError: bad" if state == "failed" else None}
    if supervisor == "stale-boot":  # this pid is alive, but the record is from before a reboot
        supervisor = {**me(), "boot": "another-boot"}
    elif supervisor == "alive-stale-status":  # resumed: status.json still from the run before
        supervisor, status["updated"] = me(), time.time() - 60
    elif supervisor == "alive":
        supervisor = me()
    run = fake_run(tmp_path, "r", returncode, supervisor, status, stop_requested)
    assert run.state == state
    assert reason in run.reason
    assert (state in runs.RESUMABLE) == (state not in ("finished", "running", "starting"))


def test_a_reused_pid_is_not_alive():
    record = me()
    assert runs._alive(record)
    assert not runs._alive({**record, "start": record["start"] - 1})  # same pid, another process
    assert not runs._alive(None)


def test_table_ids_and_lookup(tmp_path, index):
    fake_run(tmp_path, "h2z", 0, status={"state": "finished", "step": 9, "total_steps": 9,
                                         "losses": {"G": 1.5, "D_A": 0.25, "D_B": 0.125, "idt": 3.0}})
    fake_run(tmp_path, "h2z-bigger", None, me(), {"state": "running", "step": 100, "total_steps": 4000,
                                                  "eta_s": 3 * 3600 + 5 * 60, "losses": {"G": 2.0}})
    fake_run(tmp_path, "stargan", -9, status={"state": "running", "step": 50, "total_steps": 100})
    table = runs.format_table(runs.list_runs()).splitlines()
    assert table[0].split() == ["ID", "STATE", "STEP", "ETA", "LAST", "LOSSES", "RUN", "DIR"]
    assert table[1].split()[:5] == ["h2z", "finished", "9/9", "-", "G=1.5"]
    assert "idt" not in table[1], "three losses at most"
    assert table[2].split()[:5] == ["h2z-bigger", "running", "100/4000", "3h05m", "G=2"]
    assert table[3].split()[:4] == ["stargan", "died", "50/100", "-"]
    assert table[4].startswith("  stargan: killed by SIGKILL")
    assert runs.find("h2z").id == "h2z", "an exact id wins over a prefix"
    assert runs.find("star").id == "stargan"
    assert runs.find(str(tmp_path / "stargan")).id == "stargan", "a run folder works too"
    with pytest.raises(runs.RunError, match="no background run 'zebra'.*known: h2z, h2z-bigger, stargan"):
        runs.find("zebra")
    # a new run in another folder of the same name gets its own id
    assert runs._new_id(tmp_path / "elsewhere" / "h2z") == "h2z-2"
    assert runs._new_id(tmp_path / "h2z") == "h2z"


def test_start_refuses_a_folder_with_a_live_run(tmp_path, index):
    fake_run(tmp_path, "busy", None, me(), {"state": "running"})
    with pytest.raises(runs.RunError, match="already has a run going.*--attach busy"):
        runs.start(["cyclegan", "--run-dir", str(tmp_path / "busy")])
    with pytest.raises(runs.RunError, match="is running; only a run that is stopped"):
        runs.resume("busy")
    with pytest.raises(runs.RunError, match="name a recipe first"):
        runs.start(["--smoke"])


def test_two_gpus_go_through_torchrun():
    command = runs.train_command(["cyclegan", "--run-dir", "r"], nproc_per_node=2)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[5:] == ["-m", "gankit", "train", "cyclegan", "--run-dir", "r"]
    assert runs.train_command(["dcgan"])[1:] == ["-m", "gankit", "train", "dcgan"]


def test_show_run_draws_curves_and_the_latest_sample(tmp_path):
    import numpy as np
    from PIL import Image

    empty = runs.show_run(tmp_path)
    assert "not started" in empty._suptitle.get_text()
    (tmp_path / "samples").mkdir()
    for step, value in ((3, 0), (6, 255)):
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / "samples" / f"step_00000{step}.png")
    (tmp_path / "losses.csv").write_text("step,epoch,G,D\n1,0,2.0,0.5\n2,0,1.0,0.7\n")
    (tmp_path / "status.json").write_text(json.dumps({"state": "running", "step": 2, "total_steps": 10,
                                                      "eta_s": 125.0}))
    fig = runs.show_run(tmp_path)
    curves, sample = fig.axes
    assert sorted(line.get_label() for line in curves.get_lines())[:2] == ["D", "G"]
    assert sample.get_title() == "step 000006" and sample.get_images()[0].get_array().max() == 255
    assert fig._suptitle.get_text() == f"{tmp_path.name}: running, step 2/10, ETA 2m05s"


@pytest.mark.slow
def test_a_background_run_survives_its_kernel_being_shut_down(tmp_path, index, data_dir):
    """Started from a notebook kernel; the kernel is shut down (as closing the notebook does) and
    the run goes on to its last step."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        code = (f"from gankit import runs\n"
                f"run = runs.start({SMOKE + ['--max-steps', '30', '--data-dir', str(data_dir)]!r}, "
                f"{str(tmp_path / 'from-kernel')!r})\nprint(run.id, run.record['supervisor']['pid'])")
        lines = []
        reply = kc.execute_interactive(code, timeout=60, output_hook=lambda msg: lines.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        assert reply["content"]["status"] == "ok", reply["content"]
        run_id, supervisor = "".join(lines).split()
        kernel_pid = km.provisioner.pid
        assert os.getsid(int(supervisor)) != os.getsid(kernel_pid), "the run has a session of its own"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)  # kills the kernel's whole process group
    assert not runs._start_ticks(kernel_pid), "the kernel is gone"
    run = runs.find(run_id)
    assert run.wait(timeout=120) == "finished", run.log.read_text()
    assert run.status["step"] == 30 and run.record["returncode"] == 0


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint_and_stops_cleanly(tmp_path, index, data_dir):
    run_dir = tmp_path / "h2z"
    # smoke CycleGAN: 2 epochs of 24 steps (less than --max-steps), a checkpoint every 3 steps, ~5 s
    started = gankit("train", *SMOKE, "--max-steps", "90", "--data-dir", str(data_dir), "--run-dir", str(run_dir), "--background")
    assert "started run h2z in the background" in started.stdout
    run = runs.find("h2z")
    last = run_dir / "checkpoints" / "last.pt"
    wait_for(last.exists, what="the first checkpoint")
    os.kill(run.record["child_pid"], signal.SIGKILL)  # what the out-of-memory killer does
    wait_for(lambda: run.refresh().state == "died", what="the run to be seen dead")
    listing = gankit("runs").stdout
    assert "died" in listing and "h2z: killed by SIGKILL" in listing and "--resume h2z" in listing

    assert "resumed run h2z" in gankit("runs", "--resume", "h2z").stdout
    wait_for(lambda: run.refresh().state == "running", what="the resumed run to train")
    # Held still while the command starts (seconds on a loaded machine): else the few steps
    # left could all run before the stop arrives. The signal waits and is handled on SIGCONT.
    os.kill(run.record["child_pid"], signal.SIGSTOP)
    try:
        assert "asked run h2z to stop" in gankit("runs", "--stop", "h2z").stdout
    finally:
        os.kill(run.record["child_pid"], signal.SIGCONT)
    assert run.wait(timeout=60) == "stopped"
    import torch
    stopped_at = torch.load(last, weights_only=True)["step"]
    assert stopped_at == run.status["step"] == run.status["checkpoint_step"] < 48

    gankit("runs", "--resume", "h2z")
    attached = gankit("runs", "--attach", "h2z")  # follows the log until the run ends
    assert attached.stdout.rstrip().endswith("run h2z: finished")
    assert run.refresh().status["step"] == 48
    log = (run_dir / "train.log").read_text()
    assert log.count("=== gankit") == 6, "three starts and three ends in one log"
    assert "exit -9" in log and "exit 143" in log and log.rstrip().endswith("exit 0")
    resumed_at = [int(step) for step in re.findall(r"resumed \S+ at step (\d+) from last.pt", log)]
    assert len(resumed_at) == 2 and 0 < resumed_at[0] < resumed_at[1] == stopped_at
    with open(run_dir / "losses.csv", newline="") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == list(range(1, 49)), "each step logged once across the kill and both resumes"


def test_start_or_attach_finds_a_live_or_finished_run_instead_of_starting_another(tmp_path, index):
    live = fake_run(tmp_path, "live", None, me(), {"state": "running"})
    assert runs.start_or_attach(["cyclegan", "--run-dir", str(tmp_path / "live")]).id == live.id
    done = fake_run(tmp_path, "done", 0, None, {"state": "finished"})
    assert runs.start_or_attach(["cyclegan"], tmp_path / "done").state == done.state == "finished"


def test_cli_background_passes_the_command_on(monkeypatch, capsys, tmp_path):
    from gankit import cli

    started = []

    def fake_start(args, nproc_per_node=1):
        started.append((args, nproc_per_node))
        return runs.Run("h2z", tmp_path, {"supervisor": {"pid": 4242}}, {})

    monkeypatch.setattr(runs, "start", fake_start)
    assert cli.main(["train", "cyclegan", "--smoke", "--background", "--nproc-per-node", "2", "--set", "ngf=8"]) == 0
    assert started == [(["cyclegan", "--smoke", "--set", "ngf=8"], 2)]
    assert "gankit runs --attach h2z" in capsys.readouterr().out
    assert cli.main(["train", "cyclegan", "--nproc-per-node", "2"]) == 2, "only with --background"
    assert "torchrun" in capsys.readouterr().err


def test_gankit_runs_and_grade_do_not_pay_for_importing_torch():
    # `gankit runs` is what a student types to check on a run: it must answer at once.
    code = ("import sys, gankit.cli\n"
            "for argv in (['runs'], ['grade', 'week01_gan_foundations'], ['--help']):\n"
            "    gankit.cli.build_parser(argv)\n"
            "assert 'torch' not in sys.modules, 'building the parser imported torch'\n"
            "gankit.cli.build_parser(['rd', '--images', 'shipped'])\n"
            "assert 'torch' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
