#!/usr/bin/env bash
# The learner of peg_insert_sim_vision. Extra flags pass through, e.g. --checkpoint_path second_run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../../scripts/run_learner.sh" peg_insert_sim_vision "$@"
