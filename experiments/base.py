"""Settings every experiment shares; an experiment's config.py starts from `base_config()`.

Paths in a config are resolved against the experiment's folder, never the current directory.
"""

from __future__ import annotations

from ml_collections import config_dict

from serl_launcher.agents.sac import rlpd_config
from serl_launcher.transport.config import TransportConfig

TRANSPORT_SETTINGS = ("host", "bind_host", "allow_unauthenticated", "data_port", "param_port", "key",
                      "actor_queue_capacity", "actor_queue_max_bytes", "spool_max_bytes")


def base_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.exp_name = ""
    c.seed = 0
    # False: a real arm. One process drives it (the actor): the live evaluator and the
    # in-process loop refuse to start; evaluate saved checkpoints between sessions instead.
    c.simulated = True
    c.agent = rlpd_config()
    c.learner = config_dict.ConfigDict({
        "replay_capacity": 200_000,
        "training_starts": 200,  # online transitions before the first update
        "demo_fraction": 0.5,  # RLPD symmetric sampling
        "max_steps": 1_000_000,  # learner steps (each: utd_ratio critic updates + actor + temperature)
        "max_seconds": 0.0,  # wall-clock training budget after training starts (0: none)
        # The one rate control (serl_launcher.data.rate_limiter): transitions sampled for updates
        # (batch_size x utd_ratio per learner step) per online transition received; 5120 = one
        # step of the base agent (batch 256, UTD 20) per transition; 0: no limit. The learner
        # waits when ahead; actors with actor.backpressure wait when it is behind.
        "samples_per_insert": 5120.0,
        # How far (in transitions) either side may drift from the ratio before it waits; at
        # least one learner step's worth (batch_size x utd_ratio / samples_per_insert).
        "rate_tolerance": 500,
        "steps_per_publish": 50,  # learner steps between parameter publishes
        "checkpoint_period": 2_000,  # learner steps between checkpoints and buffer snapshots
        "snapshot_log_bytes": 1 << 30,  # also snapshot the buffers when the store's log grows past this
        # Every acknowledged message is in the store's log first: "fsync" (on the disk: survives
        # a power cut) or "write" (handed to the OS: survives a kill -9 of the learner only).
        "log_sync": "fsync",
        # Recover what intact files hold when the store on disk is damaged (reported), instead
        # of refusing to start.
        "salvage": False,
        "log_period": 100,
        # The local devices the learner trains on (serl_launcher.utils.sharding): "1", a number
        # N, or "all"; the agent is replicated on each and every batch split over them
        # (agent.batch_size must divide evenly).
        "devices": "1",
        # One learner over several processes (machines) with JAX's own runtime: start
        # run_learner.sh once per process with the same coordinator (process 0's host:port) and
        # num_processes and its own process_id. Process 0 keeps the data store, the transport, the
        # files and checkpoints; the others take each batch from it and run the same update on
        # their devices (the mesh spans every device of every process).
        "distributed": config_dict.ConfigDict({"coordinator": "", "num_processes": 1, "process_id": 0}),
    })
    c.actor = config_dict.ConfigDict({
        "max_env_steps": 1_000_000,
        "random_steps": 0,  # uniform random actions before using the policy
        # Wait for the learner's credit before each step (a simulator, which could outrun the
        # learner); False for a real robot, which never waits (its transitions queue instead).
        "backpressure": True,
        "log_period": 500,
        "intervention": config_dict.ConfigDict({
            "enabled": True,
            # Who intervenes (serl_launcher.human.make_device): "scripted" (the experiment's expert,
            # taking over when the policy stalls; the simulated person), or a person at
            # "keyboard", "spacemouse" or "gamepad" deciding when to take over; "none".
            "device": "scripted",
            # The scripted person's schedule and its expert's noise:
            "patience": 15, "hold_steps": 30, "window": 20, "min_probability": 0.0, "noise": 0.1,
            # A person's episode buttons (serl_launcher.wrappers.episode_control), per device:
            # event -> key (keyboard, pynput names) or button (gamepad: a b x y lb rb view menu;
            # SpaceMouse: button bit). success / failure end the episode with that label (over
            # the classifier's reward), rerecord ends it and record_demos.py discards it, ready
            # ends the pause before a reset (pause_before_reset). A device without buttons for
            # them (SpaceMouse, leader arm) uses the keyboard's keys alongside.
            # The leader arm (device "leader_arm", robot_infra.leader_arm.LeaderArm): a known arm
            # ("so101", "so100": Feetech; "koch": Dynamixel) on `port` with its calibration file
            # (python -m robot_infra.tools.calibrate_arm). pos_scale / rot_scale: the env's metres
            # and radians per step at |a| = 1 (an experiment sets them from its env config);
            # motion_scale: robot metres per leader metre; frame_yaw: the leader's base turned
            # about z from the robot's (rad). An arm of your own: replace this section in the
            # experiment's config with LeaderArm's arguments (motors, chain, bus ...).
            "leader_arm": config_dict.ConfigDict({
                "arm": "so101", "port": "", "calibration": "", "pos_scale": 0.04, "rot_scale": 0.2,
                "motion_scale": 1.0, "frame_yaw": 0.0, "hold_steps": 5,
            }),
            "episode": config_dict.ConfigDict({
                "keyboard": {"success": "enter", "failure": "esc", "rerecord": "backspace", "ready": "n"},
                "gamepad": {"success": "y", "failure": "b", "rerecord": "x", "ready": "view"},
                "spacemouse": {},
                "keyboard_alongside": True,
                "pause_before_reset": False,
            }),
        }),
    })
    # The actor <-> learner link; each key is a field of serl_launcher.transport.TransportConfig,
    # which documents it and holds its default. The ones users set most: host (where actors
    # find the learner), bind_host (where the learner listens: loopback unless set, and another
    # interface needs a key or allow_unauthenticated=True), data_port / param_port, key (""
    # means the SERL_TRANSPORT_KEY environment variable, or none; prefer the variable: a --set
    # value shows in the process list; never written to the run folder), and what an actor
    # keeps until acknowledged: actor_queue_capacity / actor_queue_max_bytes in memory, then
    # spool_max_bytes on disk in its run folder, past which the oldest are dropped (counted).
    defaults = TransportConfig()
    c.transport = config_dict.ConfigDict(
        {name: getattr(defaults, name) for name in TRANSPORT_SETTINGS} | {"key": ""})
    # Live evaluation (serl_launcher.evaluator, run as `run_actor.sh --evaluator`): the newest
    # policy the learner published, deterministic, no interventions, as eval/ records in the
    # run's metrics.jsonl. The in-process loop evaluates on the same settings.
    c.eval = config_dict.ConfigDict({
        "every_s": 20.0,  # seconds from the start of one evaluation to the next
        "episodes": 50,
        "seed": 50_000,  # episode i resets with seed + i: every evaluation sees the same starts
        # Stop the whole run (learner, actors, evaluator) once an evaluation reaches this success
        # rate (0: at the first evaluation; negative: never); learner.max_seconds stays the
        # wall-clock cap.
        "until_success": -1.0,
    })
    # Metrics sinks besides each process's metrics.jsonl (serl_launcher.utils.metrics,
    # MetricsWriter.for_run; extra [monitoring]). wandb: a run per process (learner, actors,
    # evaluator) grouped by the run folder, with the config (secrets redacted), every metric and
    # the evaluation video; project "" is off; mode "online" (`wandb login` first, or
    # WANDB_API_KEY in the environment), "offline" (files in <run folder>/wandb; `wandb sync`
    # them later) or "disabled"; entity "" is your default. tensorboard: a folder for event files
    # ("": off): relative, inside each run folder (<run>/<folder>/<role>); absolute,
    # <folder>/<exp>/<run>/<role>; then `tensorboard --logdir <folder>`.
    c.logging = config_dict.ConfigDict({
        "wandb": config_dict.ConfigDict({"project": "", "entity": "", "mode": "online"}),
        "tensorboard": "",
    })
    # The gripper toggle penalty of a learned gripper (agent.learned_gripper;
    # serl_launcher.wrappers.grasp_penalty): `value` (<= 0; 0 turns it off) on each step whose
    # gripper command would open a closed gripper or close an open one (closed: gripper_pose
    # above `closed_above`); only the grasp critic sees it. HIL-SERL's value: -0.02.
    c.grasp_penalty = config_dict.ConfigDict({"value": -0.02, "closed_above": 0.1})
    # Behaviour cloning (scripts/train_bc.py) on the demos (and, for HG-DAgger, a run's
    # interventions), with the networks of `agent` so SAC can start from it
    # (agent.init_actor_from); lr and batch_size 0: the agent's actor_lr and batch_size.
    c.bc = config_dict.ConfigDict({"steps": 10_000, "lr": 0.0, "batch_size": 0, "log_period": 100})
    c.demos = config_dict.ConfigDict({
        # Demo files (relative to the experiment folder), read before demos/*.npz, which is always
        # read (what record_demos.py writes; serl_launcher.data.demos has the format).
        "paths": (),
        # No demo file at all is an error unless this says training without demos is meant.
        "allow_none": False,
        # Pickle demo files (older versions', the original HIL-SERL's) run any code they contain
        # when loaded: refused unless True. Better: convert trusted ones with scripts/convert_demos.py.
        "allow_pickle": False,
        # The gripper command that closed the gripper where an original HIL-SERL file was
        # recorded: -1 (its real Franka env) or +1 (its simulation); 0: not said, such files refused.
        "hil_serl_gripper_close": 0.0,
        "successes_needed": 20,
        "noise": 0.1,
        # How scripts/import_lerobot.py maps a LeRobot dataset onto this experiment
        # (serl_launcher.data.lerobot.LeRobotMapping documents each entry). observations:
        # {key: feature, feature[i:j] or a+b}; keys left out: state <- observation.state, camera
        # k <- observation.images.k. action_low / action_high: the dataset's action bounds, mapped
        # linearly onto the action space (empty: already in it); gripper_close: the sign that
        # closes the gripper in the dataset. reward: a feature or "success_at_end". done,
        # truncated, intervention, grasp_penalty: used where the dataset has them. crops:
        # {camera: (x, y, w, h)} before resizing to this experiment's image size.
        "lerobot": config_dict.ConfigDict({
            "observations": config_dict.ConfigDict(), "action": "action",
            "action_low": (), "action_high": (), "gripper_close": 1.0,
            "reward": "next.reward", "done": "next.done", "truncated": "next.truncated",
            "intervention": "complementary_info.is_intervention",
            "grasp_penalty": "complementary_info.discrete_penalty",
            "crops": config_dict.ConfigDict(),
        }),
    })
    return c


def with_classifier_reward(env, config: config_dict.ConfigDict):
    """`env` wrapped so the experiment's trained classifier (``config.classifier``) gives the
    reward and ends episodes. On any failure `env` is closed (cameras stopped) before the error
    leaves; a missing classifier says how to make one."""
    from experiments.mappings import resolve_path
    from serl_launcher.classifier import load_classifier
    from serl_launcher.wrappers.classifier_reward import ClassifierReward

    try:
        model = load_classifier(resolve_path(config.exp_name, config.classifier.checkpoint))
        return ClassifierReward(env, model, config.classifier.threshold, config.classifier.success_confirm)
    except FileNotFoundError as error:
        env.close()
        raise FileNotFoundError(
            f"{error}. This experiment's reward comes from a classifier: record frames with "
            f"scripts/record_success_fail.py --exp_name {config.exp_name}, then train it with "
            f"scripts/train_classifier.py --exp_name {config.exp_name}") from None
    except BaseException:
        env.close()
        raise
