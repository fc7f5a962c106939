"""Self-describing orbax checkpoints.

Training state (for resume): ``<dir>/<step>/state`` holds the whole agent pytree (parameters,
optimizer states, target networks, RNG) and ``<dir>/<step>/meta`` a JSON record with the agent
kind, its resolved config, the observation and action spaces and any extra counters.

Policy export (for actors and evaluation): a folder with ``policy.json`` (agent kind, config,
spaces) and ``params/`` (only the encoder, actor and grasp-critic parameters). It loads from the
folder alone with :func:`load_policy`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from gymnasium import spaces
from ml_collections import config_dict

from serl_launcher.utils.spaces import check_same_space, space_to_spec, spec_to_space

POLICY_FORMAT = 1


def _agent_classes() -> dict[str, tuple[type, Any]]:
    from serl_launcher.agents.bc import BCAgent, bc_config
    from serl_launcher.agents.sac import SACAgent, sac_config

    return {"sac": (SACAgent, sac_config), "bc": (BCAgent, bc_config)}


def agent_kind(agent: Any) -> str:
    for kind, (cls, _) in _agent_classes().items():
        if isinstance(agent, cls):
            return kind
    raise TypeError(f"not a known agent: {type(agent).__name__}")


def config_from_dict(default: config_dict.ConfigDict, values: dict[str, Any]) -> config_dict.ConfigDict:
    """`default` updated from a JSON dict (lists become tuples where the default is a tuple)."""
    cfg = config_dict.ConfigDict(default.to_dict())
    for key, value in values.items():
        if key not in cfg:
            raise KeyError(f"unknown config key {key!r}")
        if isinstance(cfg[key], config_dict.ConfigDict):
            cfg[key] = config_from_dict(cfg[key], value)
        elif isinstance(cfg[key], tuple) or (isinstance(value, list) and cfg[key] is None):
            cfg[key] = tuple(value)
        else:
            cfg[key] = value
    return cfg


def _meta(agent: Any, observation_space: spaces.Space, action_space: spaces.Space) -> dict[str, Any]:
    return {
        "agent": agent_kind(agent),
        "config": json.loads(json.dumps(agent.config.to_dict(), default=list)),
        "observation_space": space_to_spec(observation_space),
        "action_space": space_to_spec(action_space),
    }


def build_agent(meta: dict[str, Any], seed: int = 0) -> Any:
    """A freshly initialised agent with the architecture a checkpoint's meta describes."""
    cls, default_config = _agent_classes()[meta["agent"]]
    config = config_from_dict(default_config(), meta["config"])
    if "encoder" in config:  # the backbone's weights come from the checkpoint, not from a file
        with config.unlocked():
            config.encoder.pretrained_path = ""
            config.encoder.allow_random_frozen = True
    return cls.create(jax.random.PRNGKey(seed), spec_to_space(meta["observation_space"]),
                      spec_to_space(meta["action_space"]), config)


def this_process_only() -> ocp.options.MultiprocessingOptions:
    """Orbax options for files only this process writes: over several processes
    (learner.distributed) the first one alone saves, and must not wait at barriers for the
    others; in one process, orbax's defaults."""
    if jax.process_count() == 1:
        return ocp.options.MultiprocessingOptions()
    return ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})


class CheckpointManager:
    """Periodic training-state checkpoints in `directory` (one sub-folder per step)."""

    def __init__(self, directory: str | Path, max_to_keep: int | None = 5):
        self.directory = Path(directory).absolute()
        # Over several processes (learner.distributed) only the first one keeps checkpoints: orbax
        # must not wait at barriers for processes that never save.
        several = jax.process_count() > 1
        single = this_process_only()
        if several:
            self.directory.mkdir(parents=True, exist_ok=True)  # orbax will not create it then
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not several,
                                                 multiprocessing_options=single),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, agent: Any, observation_space: spaces.Space, action_space: spaces.Space,
             extra: dict[str, Any] | None = None) -> None:
        meta = {**_meta(agent, observation_space, action_space), "step": int(step), "extra": extra or {}}
        self._manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(agent), meta=ocp.args.JsonSave(meta)),
        )

    def meta(self, step: int) -> dict[str, Any]:
        """The JSON record of the checkpoint at `step` (agent kind, config, spaces, step)."""
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, agent_like: Any, step: int | None = None,
                observation_space: spaces.Space | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores into the structure of `agent_like` (same architecture). Returns (agent, meta)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        meta = self.meta(step)
        if observation_space is not None:
            check_same_space(spec_to_space(meta["observation_space"]), observation_space,
                             f"checkpoint {self.directory / str(step)} observation space")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, agent_like)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return restored["state"], meta

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def export_policy(directory: str | Path, agent: Any, observation_space: spaces.Space,
                  action_space: spaces.Space, step: int | None = None) -> Path:
    """Writes the acting part of `agent` to `directory` (replaced if it exists).

    The export is written to a sibling folder and swapped in with renames, so a reader (an
    evaluator polling the folder) never sees a policy.json next to half-written parameters; for
    an instant the folder may be missing, which :func:`load_policy` reports as FileNotFoundError.
    """
    directory = Path(directory).absolute()
    staging, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    meta = {**_meta(agent, observation_space, action_space), "format": POLICY_FORMAT, "step": step}
    with ocp.StandardCheckpointer(multiprocessing_options=this_process_only()) as checkpointer:
        checkpointer.save(staging / "params", agent.policy().params)
    (staging / "policy.json").write_text(json.dumps(meta, indent=2) + "\n")
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def warm_start(agent: Any, directory: str | Path) -> Any:
    """A fresh SAC `agent` starting from the exported policy in `directory` (a BC policy from
    scripts/train_bc.py, or another run's ``policy/``): SACAgent.with_actor_from."""
    policy, meta = load_policy(directory)
    print(f"[warm start] encoder, actor and gripper head from {directory} ({meta['agent']} policy, "
          f"step {meta.get('step')})", flush=True)
    return agent.with_actor_from(policy)


def continue_from(agent: Any, run_dir: str | Path, observation_space: spaces.Space,
                  action_space: spaces.Space) -> Any:
    """`agent` (the same architecture) restored from the latest checkpoint of the run at
    `run_dir` (another experiment's, e.g. the sim run a real-arm run continues): every part of
    the agent, optimiser states included. The spaces must be the run's (ValueError naming the
    difference otherwise)."""
    run_dir = Path(run_dir).absolute()
    manager = CheckpointManager(run_dir / "checkpoints", max_to_keep=None)
    try:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"{run_dir} holds no checkpoint (no {run_dir / 'checkpoints'}/<step>)")
        check_same_space(spec_to_space(manager.meta(step)["action_space"]), action_space,
                         f"run {run_dir} action space")
        try:
            restored, meta = manager.restore(agent, step, observation_space=observation_space)
        except ValueError as error:
            if "observation space" in str(error):
                raise
            raise ValueError(f"the agent of {run_dir} has another architecture than this config's "
                             f"(agent.hidden_dims, num_qs, encoder ... must match): {error}") from error
    finally:
        manager.close()
    print(f"[continue] the whole agent from {run_dir} (step {meta['step']}): actor, critics, targets, "
          f"temperature, optimiser states", flush=True)
    return restored


def load_policy(directory: str | Path) -> tuple[Any, dict[str, Any]]:
    """(Policy, meta) from a folder written by :func:`export_policy`; nothing else is needed."""
    directory = Path(directory).absolute()
    meta_path = directory / "policy.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory} is not an exported policy (no policy.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != POLICY_FORMAT:
        raise ValueError(f"{meta_path}: policy format {meta.get('format')!r}, this code reads {POLICY_FORMAT}")
    policy = build_agent(meta).policy()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, policy.params)
    with ocp.StandardCheckpointer(multiprocessing_options=this_process_only()) as checkpointer:
        params = checkpointer.restore(directory / "params", abstract)
    return policy.replace(params=params), meta
