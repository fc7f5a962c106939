"""Experiment names -> their modules. An experiment module provides:

- ``get_config() -> ConfigDict`` (locked),
- ``make_env(config, render_mode=None) -> gym.Env`` (the actor's env, without interventions),
- ``make_expert(env, config, seed=None) -> InterventionDevice | None`` (who intervenes; None:
  nobody; `seed`, default ``config.seed``, seeds a scripted person: each actor passes its own);
- optionally ``make_spaces(config) -> (observation_space, action_space)``, which the learner uses
  instead of building the env (for a real arm: without opening cameras or loading a classifier).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

CONFIG_MAPPING: dict[str, str] = {
    "pick_cube_sim": "experiments.pick_cube_sim.config",
    "pick_cube_sim_vision": "experiments.pick_cube_sim_vision.config",
    "pick_cube_sim_vision_gpu": "experiments.pick_cube_sim_vision_gpu.config",
    "real_arm_template": "experiments.real_arm_template.config",
    "so101_pick_cube_sim": "experiments.so101_pick_cube_sim.config",
    "so101_pick_cube_sim_vision": "experiments.so101_pick_cube_sim_vision.config",
    "so101_real": "experiments.so101_real.config",
}

EXPERIMENTS_DIR = Path(__file__).resolve().parent


def load_experiment(exp_name: str) -> ModuleType:
    if exp_name not in CONFIG_MAPPING:
        known = ", ".join(sorted(CONFIG_MAPPING))
        raise KeyError(f"unknown experiment {exp_name!r}; known experiments: {known}")
    return importlib.import_module(CONFIG_MAPPING[exp_name])


def experiment_spaces(exp: ModuleType, config):
    """(observation_space, action_space) of an experiment: its ``make_spaces`` where it has one
    (no camera, arm or classifier opened), else those of an env it builds and closes."""
    if hasattr(exp, "make_spaces"):
        return exp.make_spaces(config)
    env = exp.make_env(config)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def experiment_dir(exp_name: str) -> Path:
    return EXPERIMENTS_DIR / exp_name


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
        apply_overrides(config, overrides)
    except (KeyError, ValueError) as error:
        raise app.UsageError(str(error.args[0])) from None
    return exp, config
