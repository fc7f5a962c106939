#!/usr/bin/env bash
# An actor of peg_insert_sim_vision. Extra flags pass through, e.g. --checkpoint_path first_run,
# --actor_id arm-2, or --eval_checkpoint_step 2000 --eval_n_trajs 50 for evaluation.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$here/../../scripts/run_actor.sh" peg_insert_sim_vision "$@"
