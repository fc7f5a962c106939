"""Settings every experiment shares; an experiment's config.py starts from `base_config()`.

Paths in a config are resolved against the experiment's folder, never the current directory.
"""

from __future__ import annotations

from ml_collections import config_dict

from serl_launcher.agents.sac import rlpd_config


def base_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.exp_name = ""
    c.seed = 0
    c.agent = rlpd_config()
    c.learner = config_dict.ConfigDict({
        "replay_capacity": 200_000,
        "training_starts": 200,  # online transitions before the first update
        "demo_fraction": 0.5,  # RLPD symmetric sampling
        "max_steps": 1_000_000,  # learner steps (each: utd_ratio critic updates + actor + temperature)
        "max_seconds": 0.0,  # wall-clock training budget after training starts (0: none)
        "max_updates_per_transition": 1.0,  # learner steps per received transition (0: unlimited)
        "steps_per_publish": 50,  # learner steps between parameter publishes
        "checkpoint_period": 2_000,  # learner steps between checkpoints (with the buffers)
        "log_period": 100,
    })
    c.actor = config_dict.ConfigDict({
        "max_env_steps": 1_000_000,
        "random_steps": 0,  # uniform random actions before using the policy
        # Pacing against the learner (a simulator can outrun it; a real robot paces itself):
        # wait while env steps exceed ahead_slack + env_steps_per_update * the learner's step.
        "env_steps_per_update": 0.0,  # 0: free-running
        "ahead_slack": 500,
        "log_period": 500,
        "intervention": config_dict.ConfigDict({
            "enabled": True,
            # Who intervenes (serl_launcher.human.make_device): "scripted" (the experiment's expert,
            # taking over when the policy stalls; the simulated person), or a person at
            # "keyboard", "spacemouse" or "gamepad" deciding when to take over; "none".
            "device": "scripted",
            # The scripted person's schedule and its expert's noise:
            "patience": 15, "hold_steps": 30, "window": 20, "min_probability": 0.0, "noise": 0.1,
        }),
    })
    c.transport = config_dict.ConfigDict({
        "host": "127.0.0.1", "data_port": 5588, "param_port": 5589,
        "key": "",  # shared secret ("" : the SERL_TRANSPORT_KEY environment variable, or none)
    })
    c.demos = config_dict.ConfigDict({
        "paths": (),  # demo files (relative to the experiment folder); demos/*.pkl is always read
        "successes_needed": 20,
        "noise": 0.1,
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
        return ClassifierReward(env, model, config.classifier.threshold)
    except FileNotFoundError as error:
        env.close()
        raise FileNotFoundError(
            f"{error}. This experiment's reward comes from a classifier: record frames with "
            f"scripts/record_success_fail.py --exp_name {config.exp_name}, then train it with "
            f"scripts/train_classifier.py --exp_name {config.exp_name}") from None
    except BaseException:
        env.close()
        raise
