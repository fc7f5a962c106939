#!/usr/bin/env bash
# Install the learner-throughput peers into their own virtual environments (never project
# dependencies): benchmarks/.peers/sbx and benchmarks/.peers/lerobot (an ignored folder).
#
#   bash benchmarks/peers/setup_peers.sh [sbx] [lerobot]     (no argument: both)
#
# Idempotent: a venv whose stamp file matches the pinned spec below is left alone; otherwise
# the pins are (re)installed into it. About 1.7 GB per venv, a few minutes each the first time.
#
# sbx: sbx-rl 0.28.0 with the same jax / flax / optax as the project (so the comparison is of
#   the learner code, not of XLA versions). stable-baselines3 needs torch: torch==2.13.0 goes
#   first, which takes the CPU wheel on this machine (a bare `torch` would pull CUDA).
# lerobot: lerobot 0.4.4 (newest for Python 3.11 here) with --no-deps, then only the light
#   dependencies its import chain to the SAC policy needs, torch==2.13.0 first (lerobot pins
#   torch<2.11, which has no CPU wheel here; its SAC path runs fine on 2.13). There is no CPU
#   build of torchvision on the index, so an import-only stand-in module is written instead:
#   every torchvision.* import succeeds and anything used raises; nothing on the state-only
#   SAC path calls it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS="$(cd "$HERE/.." && pwd)/.peers"
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"

SBX_PINS="sbx-rl==0.28.0 stable-baselines3==2.9.2 jax==0.10.2 jaxlib==0.10.2 flax==0.12.8
optax==0.2.8 tfp-nightly==0.26.0.dev20261027 gymnasium==1.4.0 numpy==2.4.6"
LEROBOT_PKG="lerobot==0.4.4"
LEROBOT_DEPS="numpy==2.4.6 einops==0.8.1 draccus==0.10.0 huggingface-hub==0.35.3
safetensors==0.8.0 packaging==25.0 gymnasium==1.2.2 termcolor==3.3.0 datasets==4.4.1
pillow==13.0.0 accelerate==1.11.0 imageio==2.37.0 jsonlines==4.0.0 deepdiff==8.6.1
diffusers==0.35.2 pyserial==3.5 av==15.1.0"
STANDIN_VERSION="1"

pip_q() {  # quiet pip install into venv $1; shows errors, hides known-harmless noise
  local out rc=0
  out="$("$1/bin/python" -m pip install --disable-pip-version-check -q "${@:2}" 2>&1)" || rc=$?
  printf '%s\n' "$out" | grep -v -e "is ignored: it is neither" -e "^ERROR: pip's dependency" \
    -e "^lerobot 0.4.4 requires" -e "^$" || true
  return "$rc"
}

make_venv() {
  [ -x "$1/bin/python" ] || "$PYTHON" -m venv "$1"
}

stamp_ok() { [ -f "$1/.bench-stamp" ] && [ "$(cat "$1/.bench-stamp")" = "$2" ]; }

write_torchvision_standin() {
  local site
  site="$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  mkdir -p "$site/torchvision"
  cat > "$site/torchvision/__init__.py" <<'PY'
"""Import-only stand-in for torchvision (benchmark peer venv; no CPU wheel on this index).

Every torchvision.* module imports, and every attribute is a placeholder class that raises
when instantiated. LeRobot imports torchvision in modules on its SAC import chain but its
state-only SAC path never calls it. Written by benchmarks/peers/setup_peers.sh.
"""

import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+standin"


class _Missing:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: torchvision is an import-only stand-in here")


def _make_getattr(module_name):
    cache = {}

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in cache:
            cache[name] = type(name, (_Missing,), {"__module__": module_name})
        return cache[name]

    return __getattr__


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _make_getattr(spec.name)
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StandInFinder())
__getattr__ = _make_getattr(__name__)
PY
}

setup_sbx() {
  local venv="$PEERS/sbx" spec="$TORCH $SBX_PINS"
  if stamp_ok "$venv" "$spec"; then echo "peers: sbx ready ($venv)"; return; fi
  echo "peers: installing sbx into $venv"
  make_venv "$venv"
  pip_q "$venv" "$TORCH"
  # shellcheck disable=SC2086
  pip_q "$venv" $SBX_PINS
  "$venv/bin/python" -c "import sbx, stable_baselines3, jax; print('peers: sbx', sbx.__version__, 'jax', jax.__version__)"
  echo "$spec" > "$venv/.bench-stamp"
}

setup_lerobot() {
  local venv="$PEERS/lerobot" spec="$TORCH $LEROBOT_PKG $LEROBOT_DEPS standin=$STANDIN_VERSION"
  if stamp_ok "$venv" "$spec"; then echo "peers: lerobot ready ($venv)"; return; fi
  echo "peers: installing lerobot into $venv"
  make_venv "$venv"
  pip_q "$venv" "$TORCH"
  pip_q "$venv" --no-deps "$LEROBOT_PKG"
  # shellcheck disable=SC2086
  pip_q "$venv" $LEROBOT_DEPS
  write_torchvision_standin "$venv"
  "$venv/bin/python" -c "import lerobot.policies.sac.modeling_sac, torch; import importlib.metadata as m; print('peers: lerobot', m.version('lerobot'), 'torch', torch.__version__)"
  echo "$spec" > "$venv/.bench-stamp"
}

mkdir -p "$PEERS"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(sbx lerobot)
for t in "${targets[@]}"; do
  case "$t" in
    sbx) setup_sbx ;;
    lerobot) setup_lerobot ;;
    *) echo "unknown peer: $t (sbx, lerobot)" >&2; exit 2 ;;
  esac
done
