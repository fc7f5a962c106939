#!/usr/bin/env bash
# The test suite (ruff included, as tests/test_lint.py): installs what is missing, then runs pytest.
# Extra arguments go to pytest (e.g. -k sim_envs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "${SERL_VENV:-$root/.venv}/bin/python" -m pytest "$@"
