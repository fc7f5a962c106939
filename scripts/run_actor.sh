#!/usr/bin/env bash
# An actor of experiment EXP: a registered name, an experiment's Python file (or its folder) anywhere on
# disk, or a module path (see experiments/mappings.py).
#   bash scripts/run_actor.sh EXP [flags]      e.g. bash scripts/run_actor.sh ~/my_task/config.py --checkpoint_path first_run --actor_id arm-2
# Extra flags pass through to scripts/train_rlpd.py (--set key=value, ...).
set -euo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: bash $0 EXP [flags]  (EXP: an experiment name, file or module)" >&2
  exit 2
fi
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/python.sh"
exp="$1"
shift
exec "$python" "$serl_scripts/train_rlpd.py" --exp_name "$exp" --actor "$@"
