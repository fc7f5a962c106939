#!/usr/bin/env bash
# The learner of this experiment (a copy of real_arm_template runs from anywhere: it passes its own
# folder as the experiment). Extra flags pass through, e.g. --checkpoint_path second_run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scripts="$here/../../scripts"
if [ ! -f "$scripts/run_learner.sh" ]; then  # copied out of the checkout: ask the installed package where it is
  scripts="$("${SERL_PYTHON:-python}" -c "import experiments.mappings as m; print(m.EXPERIMENTS_DIR.parent / 'scripts')")"
fi
exec bash "$scripts/run_learner.sh" "$here" "$@"
