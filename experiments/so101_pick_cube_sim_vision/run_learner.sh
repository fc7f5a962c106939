#!/usr/bin/env bash
# The learner of so101_pick_cube_sim_vision. Extra flags pass through, e.g. --checkpoint_path second_run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${SERL_PYTHON:-$here/../../.venv/bin/python}"
exec "$python" "$here/../../scripts/train_rlpd.py" --exp_name so101_pick_cube_sim_vision --learner --checkpoint_path first_run "$@"
