#!/usr/bin/env bash
# The main job on the default simulated task: installs what is missing, then runs it.
# Extra arguments go to scripts/quickstart.py (e.g. --episodes 10).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "${SERL_VENV:-$root/.venv}/bin/python" "$root/scripts/quickstart.py" "$@"
