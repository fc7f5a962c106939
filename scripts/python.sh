# Sourced by the run scripts: sets $python to the project's interpreter, found in this order:
# $SERL_PYTHON; the active virtual environment ($VIRTUAL_ENV) if serl_launcher imports there;
# the .venv that scripts/setup.sh makes beside this file's checkout (found from this file's own
# location, symlinks resolved: not from the current folder).
_serl_root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
if [ -n "${SERL_PYTHON:-}" ]; then
  python="$SERL_PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ] && "$VIRTUAL_ENV/bin/python" -c "import serl_launcher" 2>/dev/null; then
  python="$VIRTUAL_ENV/bin/python"
elif [ -x "$_serl_root/.venv/bin/python" ]; then
  python="$_serl_root/.venv/bin/python"
else
  echo "no Python environment with serl_launcher: run 'bash $_serl_root/scripts/setup.sh' first," \
       "activate the environment you installed it into, or set SERL_PYTHON" >&2
  exit 2
fi
serl_scripts="$_serl_root/scripts"
