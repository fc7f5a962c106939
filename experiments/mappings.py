"""Experiment names -> their modules. An experiment module provides:

- ``get_config() -> ConfigDict`` (locked),
- ``make_env(config, render_mode=None) -> gym.Env`` (the actor's env, without interventions),
- ``make_expert(env, config, seed=None) -> InterventionDevice | None`` (who intervenes; None:
  nobody; `seed`, default ``config.seed``, seeds a scripted person: each actor passes its own);
- optionally ``make_spaces(config) -> ExperimentSpaces`` (the spaces and the state's layout; two
  spaces alone are taken too), which the learner uses instead of building the env (for a real
  arm: without opening cameras or loading a classifier).

An experiment is named by a registered name (:data:`CONFIG_MAPPING`), a dotted module path
(``my_lab.tasks.insert``, importable from the environment), or the path of a Python file (or of a
folder holding ``config.py``) anywhere on disk. Its folder (``demos/``, ``runs/``, relative
paths in its config) is the module file's own; a file's folder also goes on ``sys.path`` (at
the end) so that it can import its neighbours. Entry points store the reference they were given
in ``config.exp_name`` (a path made absolute), so every process of a run resolves it alike; in
the process that loaded it, the module's own ``exp_name`` resolves to it too.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import gymnasium as gym

    from serl_launcher.conventions import StateLayout

CONFIG_MAPPING: dict[str, str] = {
    "peg_insert_sim": "experiments.peg_insert_sim.config",
    "peg_insert_sim_vision": "experiments.peg_insert_sim_vision.config",
    "pick_cube_sim": "experiments.pick_cube_sim.config",
    "pick_cube_sim_vision": "experiments.pick_cube_sim_vision.config",
    "pick_cube_sim_vision_gpu": "experiments.pick_cube_sim_vision_gpu.config",
    "pick_place_sim": "experiments.pick_place_sim.config",
    "pick_place_sim_vision": "experiments.pick_place_sim_vision.config",
    "real_arm_template": "experiments.real_arm_template.config",
    "so101_pick_cube_sim": "experiments.so101_pick_cube_sim.config",
    "so101_pick_cube_sim_vision": "experiments.so101_pick_cube_sim_vision.config",
    "so101_real": "experiments.so101_real.config",
}

EXPERIMENTS_DIR = Path(__file__).resolve().parent


REQUIRED = ("get_config", "make_env")
_LOADED: dict[str, ModuleType] = {}  # experiments loaded from a file or module path: reference, exp_name -> module


def load_experiment(exp_name: str) -> ModuleType:
    """The experiment module `exp_name` refers to (see the module docstring); KeyError naming
    what was tried when it refers to none, or to a module that is not an experiment."""
    if exp_name in CONFIG_MAPPING:
        return importlib.import_module(CONFIG_MAPPING[exp_name])
    if exp_name in _LOADED:
        return _LOADED[exp_name]
    file = _experiment_file(exp_name)
    if file is not None:
        module = _load_file(file)
    elif _is_dotted(exp_name):
        try:
            module = importlib.import_module(exp_name)
        except ModuleNotFoundError as error:
            if error.name is None or not exp_name.startswith(error.name):
                raise  # the module exists but one of its own imports is missing: say that
            raise KeyError(_unknown(exp_name)) from None
    else:
        raise KeyError(_unknown(exp_name))
    missing = [name for name in REQUIRED if not callable(getattr(module, name, None))]
    if missing:
        raise KeyError(f"{exp_name!r} ({module.__file__}) is not an experiment module: it lacks "
                       f"{', '.join(missing)} (an experiment defines {', '.join(REQUIRED)}, and optionally "
                       "make_expert and make_spaces)")
    own_name = str(module.get_config().exp_name)  # its configs' exp_name resolves to it in this process
    if own_name in CONFIG_MAPPING:
        raise KeyError(f"{exp_name!r} sets exp_name={own_name!r}, the name of a registered experiment: give it "
                       "its own exp_name in get_config()")
    _LOADED[exp_name] = module
    if own_name:
        _LOADED[own_name] = module  # two files of one exp_name: the one loaded last
    return module


def registered_name(file: Path) -> str | None:
    """The registered name of the experiment whose module file `file` is (None: not one)."""
    file = file.expanduser().resolve()
    for name, module in CONFIG_MAPPING.items():
        if file == EXPERIMENTS_DIR.parent.joinpath(*module.split(".")).with_suffix(".py"):
            return name
    return None


def experiment_ref(exp_name: str) -> str:
    """`exp_name` as every process of a run can resolve it: a file or folder path made absolute,
    a registered name or module path as given."""
    file = None if exp_name in CONFIG_MAPPING else _experiment_file(exp_name)
    if file is None:
        return exp_name
    return str(file.parent if Path(exp_name).expanduser().is_dir() else file)


def experiment_label(exp_name: str) -> str:
    """A short name of experiment `exp_name` for file names and dataset metadata: a registered
    name as is, else its config's ``exp_name`` (or its module file's name)."""
    if exp_name in CONFIG_MAPPING:
        return exp_name
    module = load_experiment(exp_name)
    return str(module.get_config().exp_name) or Path(module.__file__).stem


def _unknown(exp_name: str) -> str:
    known = ", ".join(sorted(CONFIG_MAPPING))
    return (f"unknown experiment {exp_name!r}; known experiments: {known}; or give the path of an "
            f"experiment's Python file (or of a folder with config.py), or an importable module path")


def _is_dotted(exp_name: str) -> bool:
    return "." in exp_name and all(part.isidentifier() for part in exp_name.split("."))


def _experiment_file(exp_name: str) -> Path | None:
    """The file a path-like `exp_name` names (None: it is not a path); KeyError when it names a
    file or folder that does not exist, or a folder without config.py."""
    path = Path(exp_name).expanduser()
    looks_like_path = exp_name.endswith(".py") or "/" in exp_name or path.is_dir()
    if not looks_like_path:
        return None
    if path.is_dir():
        path = path / "config.py"
    if not path.is_file():
        raise KeyError(f"experiment {exp_name!r}: no such file {path.absolute()}")
    return path.resolve()


def _load_file(file: Path) -> ModuleType:
    name = "serl_experiment_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    if str(file.parent) not in sys.path:
        sys.path.append(str(file.parent))
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class ExperimentSpaces(NamedTuple):
    """What the learner and the data tools know of an experiment's env without running it."""

    observation_space: gym.spaces.Dict
    action_space: gym.spaces.Box
    state_layout: StateLayout | None  # the state's named fields (None: an env that names none)


def env_spaces(env: gym.Env) -> ExperimentSpaces:
    """An env's spaces and the state layout of it (or of its outermost wrapper that has one)."""
    from serl_launcher.wrappers.grasp_penalty import wrapper_attr

    return ExperimentSpaces(env.observation_space, env.action_space, wrapper_attr(env, "state_layout"))


def experiment_spaces(exp: ModuleType, config) -> ExperimentSpaces:
    """An experiment's spaces and state layout: its ``make_spaces`` where it has one (no camera,
    arm or classifier opened; it returns :class:`ExperimentSpaces`, or the two spaces alone),
    else those of an env it builds and closes."""
    if hasattr(exp, "make_spaces"):
        made = exp.make_spaces(config)
        if len(made) == 3:
            return ExperimentSpaces(*made)
        import warnings

        warnings.warn(f"{exp.__name__}.make_spaces returns two spaces and no state layout, so demo files and "
                      f"a resumed run's buffers are not checked for the state's fields: return "
                      f"experiments.mappings.env_spaces(env)", stacklevel=2)
        return ExperimentSpaces(*made, None)
    env = exp.make_env(config)
    try:
        return env_spaces(env)
    finally:
        env.close()


def experiment_dir(exp_name: str) -> Path:
    """The folder of experiment `exp_name`: experiments/<name> for a registered one, else its
    module file's folder."""
    if exp_name in CONFIG_MAPPING:
        return EXPERIMENTS_DIR / exp_name
    return Path(load_experiment(exp_name).__file__).resolve().parent


def resolve_path(exp_name: str, path: str) -> Path:
    """A path from a config or flag: absolute as given, else relative to the experiment folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else experiment_dir(exp_name) / p


def demo_files(config) -> list[Path]:
    """The demo files a run of `config` trains from: ``demos.paths`` (files, or folders standing
    for their demo files, e.g. a sim experiment's ``demos`` folder for a real-arm run), then every
    ``experiments/<exp>/demos/*.npz`` (what record_demos.py writes) and ``*.pkl`` (older
    versions' pickles: refused on load unless ``demos.allow_pickle``, never skipped quietly)."""
    paths: list[Path] = []
    for entry in config.demos.paths:
        path = resolve_path(config.exp_name, entry)
        paths += _demo_files_in(path) if path.is_dir() else [path]
    return paths + _demo_files_in(experiment_dir(config.exp_name) / "demos")


def _demo_files_in(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.npz"), *folder.glob("*.pkl")])


def run_dir(exp_name: str, checkpoint_path: str) -> Path:
    """A run folder: absolute as given, else experiments/<exp>/runs/<checkpoint_path>."""
    p = Path(checkpoint_path).expanduser()
    return p if p.is_absolute() else experiment_dir(exp_name) / "runs" / p


def apply_overrides(config, overrides: list[str] | tuple[str, ...]) -> None:
    """Applies ``key=value`` strings (dotted keys, Python-literal values, else a bare string) to
    `config`; an unknown key raises KeyError, a malformed item ValueError."""
    import ast

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node:
                raise KeyError(f"--set {key}: no config key {part!r}")
            node = node[part]
        if leaf not in node:
            raise KeyError(f"--set {key}: no config key {leaf!r}")
        if isinstance(node[leaf], str) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = raw  # a text setting given a number (learner.devices=2) keeps the text
        node[leaf] = tuple(value) if isinstance(value, list) else value


def load_for_entry_point(exp_name: str, overrides: list[str] | tuple[str, ...] = ()):
    """(module, config with `overrides` applied) for a command-line entry point: an unknown
    experiment or a bad override becomes absl's UsageError (the message, no traceback)."""
    from absl import app

    try:
        exp = load_experiment(exp_name)
        config = exp.get_config()
        if exp_name not in CONFIG_MAPPING:
            config.exp_name = experiment_ref(exp_name)  # what the run's other processes resolve
        apply_overrides(config, overrides)
    except (KeyError, ValueError, TypeError) as error:  # TypeError: ml_collections refusing a value's type
        raise app.UsageError(str(error.args[0] if error.args else error)) from None
    return exp, config
