#!/usr/bin/env bash
# A separate environment for examples/gym_hil_pick_cube.py: gym-hil 0.1.14 pins mujoco < 3.9, the
# project's own sim envs need mujoco 4 (and mink >= 1.3 needs mujoco >= 3.10), so gym-hil gets a
# venv of its own: gym-hil, this project with --no-deps, and the project's other dependencies at
# the pins of constraints.txt (mujoco and mink left to gym-hil; pip then warns that serl-jax wants
# mink >= 1.3: only the SO-101 / Koch kinematics use it, not this path). Idempotent. Then:
#   export SERL_PYTHON=$PWD/.venv-gym-hil/bin/python MUJOCO_GL=egl   # or osmesa
#   bash scripts/run_learner.sh examples/gym_hil_pick_cube.py
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.venv-gym-hil}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pins="$(mktemp)"
trap 'rm -f "$pins"' EXIT
grep -v -e '^mujoco' -e '^mink' "$root/constraints.txt" > "$pins"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$root"
requirements="$("$venv/bin/python" - <<'PY'
import importlib.metadata as md
import re
for line in md.requires("serl-jax") or []:
    name = re.split(r"[ ;<>=!~\[]", line, maxsplit=1)[0]
    if "extra ==" not in line and name.lower() not in ("mujoco", "mink"):
        print(line.split(";")[0])
PY
)"
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$pins" gym-hil==0.1.14 $requirements
"$venv/bin/python" -c "import gym_hil, mujoco, serl_launcher; print('gym-hil env ready:', mujoco.__version__)"
