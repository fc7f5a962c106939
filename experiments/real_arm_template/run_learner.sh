#!/usr/bin/env bash
# The learner of real_arm_template (copy and rename with the folder). Extra flags pass through, e.g. --checkpoint_path second_run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${SERL_PYTHON:-$here/../../.venv/bin/python}"
exec "$python" "$here/../../scripts/train_rlpd.py" --exp_name real_arm_template --learner --checkpoint_path first_run "$@"
