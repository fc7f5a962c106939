"""Shared test set-up: headless rendering is chosen by sim_envs itself; nothing here mocks it."""

import os
import sys
from pathlib import Path

import pytest

from sim_envs.rendering import select_gl_backend

# Before any test module imports mujoco: MuJoCo reads MUJOCO_GL once, at its first import.
select_gl_backend()

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def subprocess_env(tmp_path):
    """Environment for entry points run in a subprocess: this interpreter, no display, no wandb."""
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["WANDB_MODE"] = "disabled"
    env["PYTHONUNBUFFERED"] = "1"
    env["SERL_PYTHON"] = sys.executable  # what the experiments' run scripts start
    return env


@pytest.fixture
def python():
    return sys.executable
