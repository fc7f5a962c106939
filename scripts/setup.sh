#!/usr/bin/env bash
# Idempotent set-up: system libraries for headless rendering, a virtual environment in .venv
# (or $SERL_VENV), and the project with all extras at the versions in constraints.txt.
# Re-running it is cheap: it installs only what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SERL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages for offscreen MuJoCo rendering (EGL with Mesa's software driver; OSMesa as a
#    fallback). Installed only when missing, and only where apt-get can run.
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
    if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
      log "installing Debian packages: ${missing[*]}"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      log "WARNING: missing ${missing[*]} and no root: offscreen rendering may fail (apt-get install ${missing[*]})"
    fi
  fi
fi

# 2. The virtual environment.
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment in $venv"
  "$python" -m venv "$venv"
fi

# 3. The project, editable, with every extra, pinned by constraints.txt. A stamp of the inputs
#    skips pip when nothing changed since the last successful install.
stamp="$venv/.serl-install-stamp"
want="$(cat "$root/setup.py" "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$venv/bin/python" -c "import serl_launcher, sim_envs" 2>/dev/null; then
  log "installing the project and its dependencies (first time: a few minutes)"
  "$venv/bin/python" -m pip install -q -c "$root/constraints.txt" -e "$root[robot,lerobot,monitoring,dev]"
  echo "$want" > "$stamp"
fi
log "ready: $venv"
