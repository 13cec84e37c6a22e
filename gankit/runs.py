"""Training in the background: ``gankit train ... --background``, ``gankit runs``, and the notebook view.

A background run is detached from whatever started it (a Jupyter kernel, an SSH session, a
terminal): it runs in a session of its own (setsid, reparented to init by a double fork), with
stdin closed and everything it prints in ``RUN_DIR/train.log``, so closing the browser tab,
shutting the kernel down or logging out does not stop it. A small supervisor process runs the
ordinary ``gankit train`` command, passes SIGTERM/SIGINT on to it (the Trainer then saves a
checkpoint and exits) and records how it ended. Files::

    RUN_DIR/background.json   the command, the supervisor's pid and boot id, how it ended
    RUN_DIR/train.log         everything the run printed, across resumes
    RUN_DIR/status.json       written by the Trainer every few seconds (step, total, losses, speed)
    $GANKIT_RUNS/ID.json      one small file per run, pointing at RUN_DIR (default:
                              $XDG_STATE_HOME/gankit/runs or ~/.local/state/gankit/runs)

A run killed from outside (the out-of-memory killer, a reboot, ``kill -9``) shows as ``died``;
``gankit runs --resume ID`` starts the same command again and the Trainer resumes from its last
checkpoint. Nothing here imports torch: ``gankit runs`` answers at once.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gankit.io import atomic_write_text

RESUMABLE = ("stopped", "died", "failed")
# The Trainer exits 128 + signal after saving a checkpoint; a process killed by it before the
# Trainer is up returns -signal.
STOP_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM)


class RunError(RuntimeError):
    """A run that cannot be found, started or resumed; the message says what to do."""


def runs_index() -> Path:
    """Where background runs are listed: ``$GANKIT_RUNS``, else the XDG state folder."""
    env = os.environ.get("GANKIT_RUNS")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "gankit" / "runs"


@dataclass
class Run:
    """One background run: its id, its folder and what its files say now (``refresh()`` rereads)."""

    id: str
    run_dir: Path
    record: dict        # background.json
    status: dict        # status.json (empty until the Trainer has started)

    @property
    def log(self) -> Path:
        return self.run_dir / "train.log"

    def refresh(self) -> "Run":
        self.record = _read_json(self.run_dir / "background.json")
        self.status = _read_json(self.run_dir / "status.json")
        return self

    @property
    def alive(self) -> bool:
        return _alive(self.record.get("supervisor"))

    @property
    def state(self) -> str:
        """starting, running, finished, stopped (asked to, checkpoint saved), failed (an error,
        see the log) or died (killed from outside: out of memory, a reboot)."""
        if self.alive:  # status.json may be left from before a resume until the Trainer rewrites it
            fresh = self.status.get("updated", 0) >= self.record.get("started", float("inf"))
            return "running" if fresh and self.status.get("state") == "running" else "starting"
        code = self.record.get("returncode")
        if code is not None and self.record.get("stop_requested") and code in STOP_CODES:
            return "stopped"  # also when stopped before the Trainer was up to catch the signal
        if code is None or code < 0:
            return "died"
        if code == 0:
            return "finished"
        if code in STOP_CODES:
            return "stopped"
        return "failed"

    @property
    def reason(self) -> str:
        """One line on how it ended, for a state other than running."""
        code = self.record.get("returncode")
        state = self.state
        if state == "died" and code is not None:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (the kernel's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
            return f"killed by {name}{hint}; `gankit runs --resume {self.id}` goes on from the last checkpoint"
        if state == "died":
            return f"its processes are gone (a reboot or kill -9); `gankit runs --resume {self.id}` goes on"
        if state == "failed":
            error = self.status.get("error") or "see the log"
            return f"exit {code}: {error} ({self.log})"
        if state == "stopped":
            return f"stopped at step {self.status.get('step', '?')}; `gankit runs --resume {self.id}` goes on"
        return ""

    def wait(self, timeout: float | None = None, poll_s: float = 0.5) -> str:
        """Block until the run is no longer starting or running; return its state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().state in ("starting", "running"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} still {self.state} after {timeout} s")
            time.sleep(poll_s)
        return self.state

    def stop(self) -> None:
        """Ask the run to stop: the Trainer saves a checkpoint after the current step and exits."""
        supervisor = self.record.get("supervisor")
        if not self.alive or not supervisor:
            raise RunError(f"run {self.id} is not running ({self.state})")
        os.kill(supervisor["pid"], signal.SIGTERM)


# --- starting ----------------------------------------------------------------------------------
def train_command(train_args: list[str], nproc_per_node: int = 1) -> list[str]:
    """The command the supervisor runs: ``gankit train ...``, through torchrun for several GPUs."""
    if nproc_per_node > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc_per_node}", "-m", "gankit", "train", *train_args]
    return [sys.executable, "-m", "gankit", "train", *train_args]


def start(train_args: list[str], run_dir: str | os.PathLike | None = None, *, nproc_per_node: int = 1,
          run_id: str | None = None) -> Run:
    """Start ``gankit train *train_args`` in the background and return at once.

    ``train_args`` is what follows ``gankit train`` on a command line, e.g.
    ``["cyclegan", "--data", "horse2zebra", "--run-dir", "runs/h2z"]``; the run folder is read
    from ``--run-dir`` (or the recipe's default, ``runs/RECIPE``) unless ``run_dir`` is given.
    """
    train_args = [a for a in train_args if a != "--background"]
    if not train_args or train_args[0].startswith("-"):
        raise RunError("name a recipe first, e.g. start(['cyclegan', '--smoke'])")
    if run_dir is None:
        run_dir = _option(train_args, "--run-dir") or f"runs/{train_args[0]}"
    run_dir = Path(run_dir).expanduser().resolve()
    if "--run-dir" not in train_args and not any(a.startswith("--run-dir=") for a in train_args):
        train_args = [*train_args, "--run-dir", str(run_dir)]
    existing = _read_json(run_dir / "background.json")
    if existing and _alive(existing.get("supervisor")):
        raise RunError(f"{run_dir} already has a run going (id {existing.get('id')}): "
                       f"`gankit runs --attach {existing.get('id')}` follows it, --stop stops it")
    run_id = run_id or existing.get("id") or _new_id(run_dir)
    record = {"id": run_id, "run_dir": str(run_dir), "cwd": os.getcwd(),
              "command": train_command(train_args, nproc_per_node), "train_args": train_args,
              "nproc_per_node": nproc_per_node, "host": platform.node(),
              "started": time.time(), "supervisor": None, "returncode": None, "stop_requested": False}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "background.json", json.dumps(record, indent=1) + "\n")
    index = runs_index()
    index.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index / f"{run_id}.json", json.dumps({"id": run_id, "run_dir": str(run_dir)}) + "\n")
    # The supervisor forks once more and its parent exits at once: the run is nobody's child
    # here (no zombie in a long-lived kernel) and is in a session of its own (no SIGHUP on logout).
    subprocess.run([sys.executable, "-m", "gankit.runs", str(run_dir)], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                   cwd=record["cwd"], check=True, timeout=60)
    run = Run(run_id, run_dir, {}, {})
    deadline = time.monotonic() + 30
    while not run.refresh().record.get("supervisor"):
        if time.monotonic() > deadline:
            raise RunError(f"the supervisor of {run_dir} did not start; see {run.log}")
        time.sleep(0.05)
    return run


def start_or_attach(train_args: list[str], run_dir: str | os.PathLike | None = None, **kwargs: Any) -> Run:
    """For notebooks: the run in that folder if it is going or finished (started before this
    kernel restarted, say), else start it; a stopped or died run resumes from its last checkpoint."""
    folder = Path(run_dir or _option(train_args, "--run-dir") or f"runs/{train_args[0]}").expanduser().resolve()
    if (folder / "background.json").is_file():
        run = find(str(folder))
        if run.state in ("starting", "running", "finished"):
            return run
    return start(train_args, folder, **kwargs)


def resume(run_id: str) -> Run:
    """Start a stopped, failed or died run again with its own command: it goes on from its last checkpoint."""
    run = find(run_id)
    if run.state not in RESUMABLE:
        raise RunError(f"run {run.id} is {run.state}; only a run that is {', '.join(RESUMABLE)} can be resumed")
    args = [a for a in run.record["train_args"] if a != "--no-resume"]  # resuming is the point
    return start(args, run.run_dir, nproc_per_node=run.record.get("nproc_per_node", 1), run_id=run.id)


def _supervise(run_dir: Path) -> int:
    """The supervisor (``python -m gankit.runs RUN_DIR``): runs the command, records its end."""
    if os.fork() > 0:
        os._exit(0)
    record = _read_json(run_dir / "background.json")
    log = open(run_dir / "train.log", "ab", buffering=0)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log.write(f"=== gankit {stamp} on {platform.node()}: {' '.join(record['command'])}\n".encode())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if env.get("MPLBACKEND", "").startswith("module://"):  # a kernel's inline backend: no display here
        env["MPLBACKEND"] = "Agg"
    child = subprocess.Popen(record["command"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             cwd=record["cwd"], env=env)
    stop_requested = []

    def pass_on(signum, frame):
        stop_requested.append(signum)
        child.send_signal(signum)

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, pass_on)
    record["supervisor"] = {"pid": os.getpid(), "start": _start_ticks(os.getpid()), "boot": _boot_id()}
    record["child_pid"] = child.pid
    atomic_write_text(run_dir / "background.json", json.dumps(record, indent=1) + "\n")
    returncode = child.wait()
    record.update(returncode=returncode, ended=time.time(), stop_requested=bool(stop_requested))
    log.write(f"=== gankit {time.strftime('%Y-%m-%d %H:%M:%S')}: exit {returncode}\n".encode())
    atomic_write_text(run_dir / "background.json", json.dumps(record, indent=1) + "\n")
    return 0


# --- finding -----------------------------------------------------------------------------------
def list_runs() -> list[Run]:
    """Every run in the index whose folder still exists, oldest first."""
    runs = []
    index = runs_index()
    for entry in sorted(index.glob("*.json")) if index.is_dir() else []:
        run_dir = Path(_read_json(entry).get("run_dir", ""))
        if (run_dir / "background.json").is_file():
            runs.append(Run(entry.stem, run_dir, {}, {}).refresh())
    return sorted(runs, key=lambda run: run.record.get("started", 0))


def find(run_id: str) -> Run:
    """A run by id, unique id prefix, or run folder."""
    path = Path(run_id).expanduser()
    if (path / "background.json").is_file():
        record = _read_json(path / "background.json")
        return Run(record.get("id", path.name), path.resolve(), {}, {}).refresh()
    runs = list_runs()
    matches = [run for run in runs if run.id == run_id] or [run for run in runs if run.id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(run.id for run in runs) or "none yet"
    if not matches:
        raise RunError(f"no background run {run_id!r} (known: {known}; index {runs_index()})")
    raise RunError(f"{run_id!r} matches several runs: {', '.join(r.id for r in matches)}")


# --- showing -----------------------------------------------------------------------------------
def format_table(runs: list[Run]) -> str:
    """The ``gankit runs`` table: id, state, step of total, ETA, latest losses, folder."""
    rows = [["ID", "STATE", "STEP", "ETA", "LAST LOSSES", "RUN DIR"]]
    for run in runs:
        status, state = run.status, run.state
        step = f"{status.get('step', 0)}/{status.get('total_steps', '?')}" if status else "-"
        eta = _duration(status.get("eta_s")) if state == "running" else "-"
        losses = " ".join(f"{k}={v:.3g}" for k, v in list(status.get("losses", {}).items())[:3]) or "-"
        rows.append([run.id, state, step, eta, losses, str(run.run_dir)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    notes = [f"  {run.id}: {run.reason}" for run in runs if run.state in RESUMABLE]
    return "\n".join(lines + notes)


def attach(run_id: str, out=None, poll_s: float = 0.5, tail_lines: int = 20) -> int:
    """Print the run's log as it grows until the run ends; Ctrl-C detaches (the run goes on).

    Returns 0 when the run finished, 1 otherwise.
    """
    out = out or sys.stdout
    run = find(run_id)
    with open(run.log, "rb") if run.log.exists() else open(os.devnull, "rb") as log:
        text = log.read().decode(errors="replace")
        out.write("\n".join(text.splitlines()[-tail_lines:]) + ("\n" if text else ""))
        try:
            while True:
                alive = run.refresh().state in ("starting", "running")
                chunk = log.read()
                if chunk:
                    out.write(chunk.decode(errors="replace"))
                    out.flush()
                elif not alive:
                    break
                else:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            out.write(f"\ndetached; run {run.id} goes on (`gankit runs --stop {run.id}` stops it)\n")
            return 0
    out.write(f"run {run.id}: {run.state}" + (f" ({run.reason})" if run.reason else "") + "\n")
    return 0 if run.state == "finished" else 1


def show_run(run: "Run | str | os.PathLike"):
    """A figure for a notebook: the loss curves and the latest sample grid of a run (rerun the
    cell to refresh). Works for any run folder the Trainer wrote, background or not."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from gankit.plotting import plot_losses

    run_dir = run.run_dir if isinstance(run, Run) else Path(run)
    status = _read_json(run_dir / "status.json")
    fig, (curves, sample) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    if (run_dir / "losses.csv").is_file() and (run_dir / "losses.csv").stat().st_size > 0:
        plot_losses(run_dir / "losses.csv", ax=curves, smooth=0.6)
    else:
        curves.text(0.5, 0.5, "no losses yet", ha="center", va="center")
    samples = sorted((run_dir / "samples").glob("step_*.png"))
    if samples:
        sample.imshow(Image.open(samples[-1]))
        sample.set_title(samples[-1].stem.replace("_", " "))
    sample.axis("off")
    state = run.state if isinstance(run, Run) else status.get("state", "not started")
    fig.suptitle(f"{run_dir.name}: {state}, step {status.get('step', 0)}/{status.get('total_steps', '?')}"
                 + (f", ETA {_duration(status['eta_s'])}" if status.get("eta_s") and state == "running" else ""))
    fig.tight_layout()
    return fig


# --- helpers -----------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _new_id(run_dir: Path) -> str:
    """The run folder's name, made unique in the index (``h2z``, ``h2z-2``, ...)."""
    index, candidate, n = runs_index(), run_dir.name, 1
    while True:
        taken = _read_json(index / f"{candidate}.json").get("run_dir")
        if taken is None or Path(taken) == run_dir or not (Path(taken) / "background.json").exists():
            return candidate
        n += 1
        candidate = f"{run_dir.name}-{n}"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks after boot): tells a pid from a reused one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])  # zombies have ended
    except (OSError, IndexError, ValueError):
        return None


def _alive(supervisor: dict[str, Any] | None) -> bool:
    if not supervisor:
        return False
    if supervisor.get("boot") != _boot_id():
        return False  # the machine rebooted since: the pid means nothing now
    if Path("/proc").is_dir():
        return _start_ticks(supervisor["pid"]) == supervisor.get("start")
    try:
        os.kill(supervisor["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


if __name__ == "__main__":
    sys.exit(_supervise(Path(sys.argv[1])))
