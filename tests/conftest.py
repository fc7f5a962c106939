"""Shared test set-up: headless rendering is chosen by sim_envs itself; nothing here mocks it."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from sim_envs.rendering import select_gl_backend

# Before any test module imports mujoco: MuJoCo reads MUJOCO_GL once, at its first import.
select_gl_backend()

REPO = Path(__file__).resolve().parent.parent

# One JAX compilation cache for the session, this process and every process a test starts (the
# learners, actors and evaluators of many tests compile the same smoke-size programs). Fresh per
# session, so no test sees a program compiled by another checkout.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jax_cache = tempfile.mkdtemp(prefix="serl-tests-jax-cache-")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    # A size limit turns on JAX's file lock around reads and writes (processes compile the same
    # programs at once). An entry cut short by a kill -9 fails to load, and JAX compiles anew.
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))


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
