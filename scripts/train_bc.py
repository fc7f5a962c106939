"""Behaviour cloning on an experiment's demonstrations, and HG-DAgger with a run's interventions.

    python scripts/train_bc.py --exp_name pick_cube_sim                       # -> runs/bc/
    python scripts/train_bc.py --exp_name pick_cube_sim --checkpoint_path bc_dagger \\
        --hg_dagger first_run                                                 # + its interventions

Trains the networks of the experiment's agent (encoder included: images are learned by the BC
loss) on the demo files the learner would read (``demos.paths`` and ``demos/*.npz``), plus, with
``--hg_dagger RUN_FOLDER`` (repeatable), every intervention transition of those runs (their
online buffer as of its last snapshot: the learner writes one every
``learner.checkpoint_period`` steps and when it stops). ``bc.steps`` gradient steps, then a
deterministic evaluation like SAC's (``eval.episodes`` episodes, simulated experiments), as
``bc/`` and ``eval/`` records in ``<run>/metrics.jsonl``. Writes a checkpoint the actor
evaluates (``run_actor.sh --checkpoint_path RUN --eval_checkpoint_step -1``) and an exported
policy, ``<run>/policy``, that SAC starts from with ``--set agent.init_actor_from=runs/RUN/policy``.
"""

from __future__ import annotations

import json

from absl import app, flags

from experiments import cli

_CHECKPOINT_PATH = flags.DEFINE_string("checkpoint_path", "bc", "Run folder (relative: under experiments/<exp>/runs/).")
_HG_DAGGER = flags.DEFINE_multi_string("hg_dagger", [], "A run folder whose intervention transitions are added.")
_EVAL_N = flags.DEFINE_integer("eval_n_trajs", None, "Evaluation episodes (default eval.episodes; 0: none).")


def main(argv: list[str]) -> None:
    del argv
    import jax
    from tqdm import tqdm

    from experiments.mappings import demo_files, env_spaces, run_dir
    from serl_launcher.actor import evaluate_policy
    from serl_launcher.agents.bc import BCAgent, bc_config_for
    from serl_launcher.data import DemoFormatError, DemoReading, ReplayBuffer, load_demos
    from serl_launcher.data.replay_buffer import BufferFormatError
    from serl_launcher.data.store import check_buffer_layout
    from serl_launcher.utils.checkpoints import CheckpointManager, export_policy
    from serl_launcher.utils.metrics import MetricsWriter, redact_secrets

    exp, config = cli.load()
    c = config.bc
    if c.steps < 1 or c.batch_size < 0 or c.lr < 0:
        raise app.UsageError(f"bc.steps must be >= 1 and bc.lr, bc.batch_size >= 0 (got {c.to_dict()})")
    folder = run_dir(cli.exp_name(), _CHECKPOINT_PATH.value)
    if (folder / "checkpoints").exists() or (folder / "policy").exists():
        raise app.UsageError(f"{folder} already holds a trained policy; pick another --checkpoint_path")
    episodes = config.eval.episodes if _EVAL_N.value is None else _EVAL_N.value
    if episodes and not config.simulated:
        raise app.UsageError("this experiment drives a real arm: evaluate the BC checkpoint with run_actor.sh "
                             "--eval_checkpoint_step -1 when the arm is free (--eval_n_trajs 0 here)")
    env = exp.make_env(config)
    try:
        obs_space, act_space, state_layout = env_spaces(env)
        transitions, sources = [], []
        try:
            for path in demo_files(config):
                loaded = load_demos(path, obs_space, act_space, reading=DemoReading.from_config(config),
                                    state_layout=state_layout)
                transitions += loaded
                sources.append(f"{len(loaded)} from {path}")
            for run in _HG_DAGGER.value:
                buffers = run_dir(cli.exp_name(), run) / "buffers"
                check_buffer_layout(buffers, state_layout)
                online = ReplayBuffer.load(buffers / "online", obs_space, act_space)
                interventions = online.transitions(intervened_only=True)
                transitions += interventions
                sources.append(f"{len(interventions)} interventions of {len(online)} transitions in {run}")
        except (DemoFormatError, BufferFormatError, FileNotFoundError) as error:
            raise app.UsageError(str(error)) from None
        if not transitions:
            raise app.UsageError(f"nothing to clone: no demo files for {cli.exp_name()!r} (record them with "
                                 f"scripts/record_demos.py) and no interventions from --hg_dagger")
        print(f"[bc] {len(transitions)} transitions: " + "; ".join(sources), flush=True)
        data = ReplayBuffer(obs_space, act_space, capacity=2 * len(transitions) + 1, seed=config.seed)
        data.insert_many(transitions)
        del transitions

        bc = bc_config_for(config.agent, lr=c.lr or None, batch_size=c.batch_size or None)
        agent = BCAgent.create(jax.random.PRNGKey(config.seed), obs_space, act_space, bc)
        folder.mkdir(parents=True, exist_ok=True)
        public = redact_secrets(config.to_dict())
        (folder / "config.json").write_text(json.dumps(public, indent=2, default=list) + "\n")
        with MetricsWriter.for_run(folder / "metrics.jsonl", config, folder, "bc") as writer:
            bar = tqdm(range(1, c.steps + 1), desc="bc", unit="step")
            for step in bar:
                agent, info = agent.update(data.sample(bc.batch_size))
                if step % c.log_period == 0 or step == c.steps:
                    scalars = writer.write(step, info, prefix="bc/")
                    bar.set_postfix(loss=f"{scalars['bc/bc_loss']:.3f}")
            bar.close()
            manager = CheckpointManager(folder / "checkpoints")
            manager.save(c.steps, agent, obs_space, act_space)
            manager.wait()
            manager.close()
            policy_dir = export_policy(folder / "policy", agent, obs_space, act_space, c.steps)
            if episodes:
                stats = evaluate_policy(env, agent.policy(), episodes, seed=config.eval.seed)
                writer.write(c.steps, {**stats, "learner_step": c.steps}, prefix="eval/")
                print(f"[bc] evaluation: success {stats['success_rate']:.0%} ({stats['success_ci_low']:.0%}-"
                      f"{stats['success_ci_high']:.0%}) over {episodes} deterministic episodes", flush=True)
    finally:
        env.close()
    print(f"[bc] checkpoint: {folder / 'checkpoints'}; policy: {policy_dir}\n"
          f"[bc] start SAC from it: --set agent.init_actor_from={str(policy_dir)!r}", flush=True)


if __name__ == "__main__":
    cli.run(main)
