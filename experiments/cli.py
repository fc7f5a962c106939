"""The flags every entry point shares, defined once: which experiment, and what to change in its config.

    --exp_name pick_cube_sim                  a registered experiment, a module path, or the path
                                              of an experiment's file or folder anywhere on disk
    --set agent.utd_ratio=8                   a dotted config key = a Python literal (repeatable)
    --config experiments/pick_cube_sim/config.py --config.agent.utd_ratio=8
                                              ml_collections' config-file flag: the experiment as
                                              its file, with typed --config.<key> overrides

``--config`` and ``--exp_name`` name the experiment two ways; give one. ``--config`` comes before
its ``--config.<key>`` overrides (ml_collections reads the file when it meets it), and a key the
config does not have is an error naming it. ``--set`` applies after them. An entry point calls
:func:`load` for the experiment module and its config, :func:`exp_name` for the reference the
run's other processes resolve, :func:`overrides` for what to pass them, and runs ``main`` with
:func:`run` (a bad flag is one line, not a traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

EXP_NAME = flags.DEFINE_string(
    "exp_name", None, "The experiment: a registered name (experiments/mappings.py), an importable module, or "
    "the path of an experiment's Python file (or of a folder with config.py) anywhere on disk.")
SET = flags.DEFINE_multi_string(
    "set", [], "Config override KEY=VALUE (dotted key, Python literal value; repeatable), e.g. "
    "--set learner.max_steps=500.")
CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The experiment as its config file (instead of --exp_name), followed by typed overrides "
    "--config.<dotted key>=<value>.", lock_config=True)


def exp_name(required: bool = True) -> str | None:
    """The experiment the flags name: --exp_name, or the --config file (a registered
    experiment's file by its registered name). UsageError when both are given, or when neither
    is and `required`."""
    from experiments.mappings import registered_name

    config_file = config_flags.get_config_filename(flags.FLAGS["config"]) if flags.FLAGS["config"].present else None
    if config_file and flags.FLAGS["exp_name"].present:
        raise app.UsageError(f"--exp_name {EXP_NAME.value} and --config {config_file} both name the experiment: give one")
    if config_file:
        if ":" in config_file:
            raise app.UsageError(f"--config {config_file}: an experiment's get_config() takes no argument")
        if Path(config_file).expanduser().is_dir():
            raise app.UsageError(f"--config {config_file} is a folder: give its config file "
                                 f"({Path(config_file) / 'config.py'}), or the folder as --exp_name")
        return registered_name(Path(config_file)) or config_file
    if EXP_NAME.value is None and required:
        raise app.UsageError("name the experiment: --exp_name <name, module or file> or --config <its config file>")
    return EXP_NAME.value


def overrides() -> list[str]:
    """Every config override the flags give, as ``key=value`` items (the --config.<key> ones,
    then --set): what :func:`load` applies, and what a launcher passes its child processes."""
    given = config_flags.get_override_values(flags.FLAGS["config"]) if flags.FLAGS["config"].present else {}
    return [f"{key}={_literal(value)!r}" for key, value in given.items()] + list(SET.value)


def _literal(value):
    """An override's value as a Python literal (a ConfigDict given whole as a plain dict)."""
    from ml_collections import config_dict

    if isinstance(value, config_dict.FieldReference):
        value = value.get()
    return value.to_dict() if isinstance(value, config_dict.ConfigDict) else value


def load(required: bool = True):
    """(experiment module, config with the overrides applied) from the flags; an unknown
    experiment or a bad override is absl's UsageError. (None, None) when no experiment is named
    and it is not `required`."""
    from experiments.mappings import load_for_entry_point

    name = exp_name(required)
    if name is None:
        return None, None
    return load_for_entry_point(name, overrides())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, the --config file's folder importable while ml_collections runs it (as
    --exp_name's loader makes it), and ml_collections' errors for a bad --config or
    --config.<key> (raised from inside the parser) said in one line as absl says others."""
    config_file = _config_argument(argv)
    if config_file and not Path(config_file).expanduser().is_dir():
        folder = str(Path(config_file).expanduser().resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)  # the file may import its neighbours (it runs again when loaded as the experiment)
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError, OSError) as error:
        if not _raised_by_ml_collections(error):
            raise  # the config file's own error: its traceback says where
        given = " ".join(a for a in argv[1:] if a.startswith("--config"))
        detail = str(error.args[0] if error.args else error).strip("'\"")
        problem = (f"cannot read the config file ({error})" if isinstance(error, OSError) else
                   f"no config key {detail!r}" if isinstance(error, KeyError) or "does not exist" not in detail
                   else detail)
        sys.stderr.write(f"FATAL Flags parsing error: {problem} (in {given}); the keys --config.<key> may set "
                         f"are those of --config's file\n")
        sys.exit(1)


def _config_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _raised_by_ml_collections(error: BaseException) -> bool:
    """Whether the innermost frame of `error` is ml_collections' (its flag parser), not the
    config file's code."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "ml_collections" in tb.tb_frame.f_code.co_filename


def run(main) -> None:
    """app.run with :func:`parse_flags`."""
    app.run(main, flags_parser=parse_flags)
