"""Learner or actor of an experiment (RLPD / SAC), or evaluation of a checkpoint.

    python scripts/train_rlpd.py --exp_name pick_cube_sim --learner --checkpoint_path first_run
    python scripts/train_rlpd.py --exp_name pick_cube_sim --actor --checkpoint_path first_run
    python scripts/train_rlpd.py --exp_name pick_cube_sim --actor --evaluator --checkpoint_path first_run
    python scripts/train_rlpd.py --exp_name pick_cube_sim --actor --checkpoint_path first_run \
        --eval_checkpoint_step 2000 --eval_n_trajs 50

--evaluator evaluates the newest published policy every eval.every_s seconds while the run
trains (serl_launcher.evaluator), as eval/ records in the run's metrics.jsonl; with
--set eval.until_success=0.9 (on every role) the run stops when an evaluation reaches it.

A relative --checkpoint_path names experiments/<exp>/runs/<path>. Config values can be overridden
with --set key=value (dotted keys, e.g. --set learner.max_steps=500); unknown keys are errors.
"""

from __future__ import annotations

import json
import signal
import socket

from absl import app, flags

from experiments import cli

_LEARNER = flags.DEFINE_bool("learner", False, "Run the learner.")
_ACTOR = flags.DEFINE_bool("actor", False, "Run an actor (or, with --eval_checkpoint_step, evaluate).")
_CHECKPOINT_PATH = flags.DEFINE_string("checkpoint_path", "first_run", "Run folder.")
_ACTOR_ID = flags.DEFINE_string("actor_id", None, "This actor's identity (default: hostname).")
_EVALUATOR = flags.DEFINE_bool("evaluator", False, "With --actor: evaluate the newest policy as the run trains (eval.*).")
_EVAL_STEP = flags.DEFINE_integer("eval_checkpoint_step", None, "Evaluate the checkpoint of this learner step (-1: the latest).")
_EVAL_N = flags.DEFINE_integer("eval_n_trajs", 20, "Evaluation episodes.")
_EVAL_VIDEO = flags.DEFINE_bool("eval_video", False, "Write a video of the evaluation episodes.")
_FLUSH_S = flags.DEFINE_float("flush_timeout_s", 10.0, "At exit, how long an actor waits for the learner to acknowledge what it has.")


def transport_config(config):
    from serl_launcher.transport import TransportConfig

    settings = config.transport.to_dict()  # the same names as TransportConfig's fields
    return TransportConfig(**{**settings, "key": settings["key"] or None})


def run_learner(exp, config, run_dir) -> None:
    from experiments.mappings import demo_files, experiment_spaces, resolve_path
    from serl_launcher.data.demos import DemoFormatError, DemoReading, check_demo_supply
    from serl_launcher.data.store import StoreRecoveryError
    from serl_launcher.learner import Learner, make_rate_limiter
    from serl_launcher.transport import LearnerServer
    from serl_launcher.utils.sharding import learner_mesh, start_distributed

    try:
        distributed = start_distributed(config.learner.distributed)  # before anything else uses JAX
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    spaces = experiment_spaces(exp, config)  # the learner needs only the spaces, not cameras or an arm
    if distributed and config.learner.distributed.process_id > 0:
        from serl_launcher.learner import follow

        steps = follow(config, spaces.observation_space, spaces.action_space)
        print(f"[learner {config.learner.distributed.process_id}] done: {steps} steps", flush=True)
        return
    demo_paths = demo_files(config)
    actor_from = resolve_path(config.exp_name, config.agent.init_actor_from) if config.agent.init_actor_from else None
    if actor_from is not None and not (actor_from / "policy.json").is_file():
        raise app.UsageError(f"agent.init_actor_from: {actor_from} is not an exported policy folder (no policy.json); "
                             f"scripts/train_bc.py writes one to <run folder>/policy")
    agent_from = resolve_path(config.exp_name, config.agent.init_from) if config.agent.init_from else None
    if agent_from is not None and not (agent_from / "checkpoints").is_dir():
        raise app.UsageError(f"agent.init_from: {agent_from} is not a run folder with checkpoints "
                             f"(<experiment>/runs/<run> of the run to continue)")
    if agent_from is not None and actor_from is not None:
        raise app.UsageError("give agent.init_from (a whole run to continue) or agent.init_actor_from "
                             "(a policy to start the actor from), not both")
    tcfg = transport_config(config)
    try:
        tcfg.check_bind()  # refuse an open port, or a rate that cannot work, before loading anything
        make_rate_limiter(config)
        if not distributed:
            learner_mesh(config.learner.devices, config.agent.batch_size)
        DemoReading.from_config(config)
        if not (run_dir / "buffers").is_dir():  # a resumed run's demo buffer is in its store
            check_demo_supply(config, len(demo_paths), "learner")
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    try:
        learner = Learner(config, spaces.observation_space, spaces.action_space, run_dir,
                          make_server=lambda *a: LearnerServer(tcfg, *a), demo_paths=demo_paths,
                          actor_from=actor_from, agent_from=agent_from, state_layout=spaces.state_layout)
    except StoreRecoveryError as error:
        raise app.UsageError(f"cannot resume {run_dir}: {error}") from None
    except DemoFormatError as error:
        raise app.UsageError(f"bad demo file: {error}") from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: learner.stop())  # stop cleanly: save checkpoint and buffers
    try:
        summary = learner.run()
    finally:
        learner.close()
    print(f"[learner] done: {json.dumps(summary)}; run folder: {run_dir}", flush=True)


def run_actor(exp, config, run_dir) -> None:
    from serl_launcher.actor import Actor, actor_seed, make_acting_env
    from serl_launcher.transport import ActorClient

    actor_id = _ACTOR_ID.value or socket.gethostname()
    try:
        client = ActorClient(transport_config(config), actor_id,
                             spool_dir=run_dir / f"actor-{actor_id}" / "spool")
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    seed = actor_seed(config.seed, actor_id)
    print(f"[actor] {actor_id}: seed {seed} (from seed {config.seed} and the actor id)", flush=True)
    env, device = make_acting_env(exp, config, seed)
    actor = Actor(config, env, client, run_dir / f"actor-{actor_id}", device, seed=seed, run_folder=run_dir)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: actor.stop())
    try:
        summary = actor.run(config.actor.max_env_steps)
        if not actor.client.flush(timeout=_FLUSH_S.value):
            print(f"[actor] {actor.client.pending} transitions not acknowledged at exit", flush=True)
        actor.writer.write(summary["env_steps"], actor.transport_metrics())
        summary["acknowledged"] = actor.client.acked + 1
        summary["rejected"] = sum(actor.client.rejected.values())
    finally:
        actor.close()
    print(f"[actor] done: {json.dumps(summary)}", flush=True)


def run_evaluator(exp, config, run_dir) -> None:
    from serl_launcher.evaluator import Evaluator, EvaluatorFolderError, check_simulated
    from serl_launcher.transport import ActorClient

    actor_id = _ACTOR_ID.value or f"evaluator-{socket.gethostname()}"
    try:
        check_simulated(config, "the live evaluator")  # before the env exists: it would connect to the arm
        client = ActorClient(transport_config(config), actor_id)  # receives params, sends nothing
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    evaluator = Evaluator(config, exp.make_env(config), client, run_dir)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: evaluator.stop())
    try:
        summary = evaluator.run()
    except EvaluatorFolderError as error:
        raise app.UsageError(str(error)) from None
    finally:
        evaluator.close()
    print(f"[eval] done: {json.dumps(summary)}", flush=True)


def run_eval(exp, config, run_dir) -> None:
    from serl_launcher.actor import evaluate_policy
    from serl_launcher.utils.checkpoints import CheckpointManager, build_agent
    from serl_launcher.utils.metrics import MetricsWriter

    env = exp.make_env(config, render_mode="rgb_array" if _EVAL_VIDEO.value else None)
    manager = CheckpointManager(run_dir / "checkpoints")
    step = manager.latest_step() if _EVAL_STEP.value == -1 else _EVAL_STEP.value
    if step is None or step not in manager.all_steps():
        raise app.UsageError(f"no checkpoint at step {_EVAL_STEP.value} in {run_dir / 'checkpoints'} "
                             f"(available: {manager.all_steps()})")
    template = build_agent(manager.meta(step), seed=config.seed)  # SAC or BC, as the checkpoint says
    agent, _ = manager.restore(template, step=step, observation_space=env.observation_space)
    # eval_<step>.json, or eval_<step>-2.json ... when this checkpoint was evaluated before (kept).
    stem = f"eval_{step}"
    for k in range(2, 10_000):
        if not any((run_dir / f"{stem}{ext}").exists() for ext in (".json", ".mp4")):
            break
        stem = f"eval_{step}-{k}"
    video = run_dir / f"{stem}.mp4" if _EVAL_VIDEO.value else None
    stats = evaluate_policy(env, agent.policy(), _EVAL_N.value, seed=config.seed + 12345, video_path=video)
    (run_dir / f"{stem}.json").write_text(json.dumps({"step": step, **stats}, indent=2) + "\n")
    # Into the run's metrics (and its wandb / TensorBoard sinks), the video too.
    with MetricsWriter.for_run(run_dir / "metrics.jsonl", config, run_dir, f"eval-checkpoint-{step}",
                               header=False) as writer:
        writer.write(step, stats, prefix="eval_checkpoint/")
        if video is not None:
            writer.video(step, "eval_checkpoint/video", video)
    print(f"[eval] step {step}: success rate {stats['success_rate']:.0%} over {_EVAL_N.value} episodes, "
          f"mean episode time {stats['episode_time_s']:.2f} s" + (f"; video: {video}" if video else ""), flush=True)


def main(argv: list[str]) -> None:
    del argv
    from experiments.mappings import run_dir

    if _LEARNER.value == _ACTOR.value:
        raise app.UsageError("pass exactly one of --learner or --actor")
    exp, config = cli.load()
    from serl_launcher.evaluator import check_eval_config
    from serl_launcher.networks.encoders import check_frozen_backbone

    try:
        check_eval_config(config)
        check_frozen_backbone(config.agent.encoder, "agent.encoder")  # before an arm or a camera is opened
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    folder = run_dir(cli.exp_name(), _CHECKPOINT_PATH.value)
    if _LEARNER.value:
        run_learner(exp, config, folder)
    elif _EVAL_STEP.value is not None:
        run_eval(exp, config, folder)
    elif _EVALUATOR.value:
        run_evaluator(exp, config, folder)
    else:
        run_actor(exp, config, folder)


if __name__ == "__main__":
    cli.run(main)
