"""Starting an experiment's learner and actor as separate processes through its run scripts
(what the quickstart, the end-to-end benchmark and the tests do, as a user would)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from experiments.mappings import experiment_dir, experiment_ref

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

# Tiny sizes for smoke runs: a few hundred learner steps with small networks.
SMOKE_SETTINGS = (
    "learner.training_starts=100", "learner.checkpoint_period=50", "learner.log_period=10",
    "learner.steps_per_publish=10", "agent.hidden_dims=(32,32)", "agent.batch_size=32",
    "agent.utd_ratio=2", "agent.num_qs=2", "actor.log_period=50",
    "learner.samples_per_insert=64.0",  # batch 32 x UTD 2: one learner step per env step
    "demos.allow_none=True",  # tests run the roles without recording demos first
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def role_args(checkpoint_path: str, settings: list[str] | tuple[str, ...]) -> list[str]:
    """Flags for run_learner.sh / run_actor.sh: free ports plus `settings` as --set overrides."""
    sets = [f"transport.data_port={free_port()}", f"transport.param_port={free_port()}", *settings]
    return [a for s in sets for a in ("--set", s)] + ["--checkpoint_path", str(checkpoint_path)]


def script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the run scripts: this interpreter, unbuffered output."""
    return {**os.environ, "SERL_PYTHON": sys.executable, "PYTHONUNBUFFERED": "1", **(extra or {})}


def start_role(exp_name: str, role: str, args: list[str], log: Path, env: dict[str, str],
               niceness: int = 0) -> subprocess.Popen:
    """Runs the experiment's own run_<role>.sh with `args` (output to `log`); an experiment
    without one (a user's file outside the project) runs through scripts/run_<role>.sh.
    `niceness` > 0 runs it, and every thread and process it starts, at that lower priority."""
    own = experiment_dir(exp_name) / f"run_{role}.sh"
    command = [str(own)] if own.is_file() else [str(SCRIPTS / f"run_{role}.sh"), experiment_ref(exp_name)]
    prefix = ["nice", "-n", str(niceness)] if niceness > 0 else []
    return subprocess.Popen([*prefix, "bash", *command, *args], env=env, stdout=Path(log).open("w"),
                            stderr=subprocess.STDOUT)


def stop(processes: list[subprocess.Popen], timeout: float = 120) -> None:
    """SIGTERM (the roles save and exit cleanly), then wait up to `timeout` s in all; a role
    still running then is killed (what the learner acknowledged is on disk either way) and named."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[launch] {' '.join(map(str, process.args))[-120:]} did not exit within {timeout:.0f} s of "
                  f"SIGTERM; killing it", file=sys.stderr, flush=True)
            process.kill()
            process.wait()


def prepare_classifier(exp_name: str, folder: Path, env: dict[str, str], seed: int = 0,
                       settings: list[str] | tuple[str, ...] = (), record_flags: list[str] | tuple[str, ...] = ()) -> Path:
    """For an experiment whose reward is a classifier: records labelled frames and trains the
    classifier into `folder` (record_success_fail.py, train_classifier.py, as a user runs them).
    Returns the checkpoint folder; pass ``classifier.checkpoint=<it>`` to the roles."""
    frames, checkpoint = Path(folder) / "classifier_frames.npz", Path(folder) / "classifier"
    sets = [a for s in settings for a in ("--set", s)]
    if not frames.is_file():
        subprocess.run([sys.executable, str(SCRIPTS / "record_success_fail.py"), "--exp_name", exp_name,
                        "--output", str(frames), "--seed", str(5000 + 1000 * seed), *record_flags, *sets],
                       check=True, env=env)
    if not (checkpoint / "classifier.json").is_file():
        subprocess.run([sys.executable, str(SCRIPTS / "train_classifier.py"), "--exp_name", exp_name,
                        "--data", str(frames), "--output", str(checkpoint), "--seed", str(seed), *sets],
                       check=True, env=env)
    return checkpoint
