"""Convert a pickle demo file (this project's older format, or the original HIL-SERL's) into a
demo archive (.npz) that loads without running code.

    python scripts/convert_demos.py --exp_name pick_cube_sim --input old.pkl \
        --output experiments/pick_cube_sim/demos/old.npz [--hil_serl_gripper_close -1]

Unpickling runs whatever code the file holds: convert only files you recorded or trust. Each
transition is checked against the experiment's observation and action spaces, and the archive
carries the grasp penalty when the experiment's agent has a learned gripper (a HIL-SERL file
has it in its infos when it was recorded with one). An original HIL-SERL file needs the
gripper sign it was recorded with: -1 (its real Franka env) or +1 (its simulation).
"""

from __future__ import annotations

from absl import app, flags

from experiments import cli

_INPUT = flags.DEFINE_string("input", None, "The pickle demo file.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "The archive to write (.npz).", required=True)
_GRIPPER = flags.DEFINE_float("hil_serl_gripper_close", 0.0,
                              "For an original HIL-SERL file: the gripper command that closed the gripper "
                              "where it was recorded (-1: its real Franka env, +1: its simulation).")


def main(argv: list[str]) -> None:
    del argv
    from experiments.mappings import env_spaces
    from serl_launcher.data import DemoFormatError, DemoReading, load_demos, save_demos

    exp, config = cli.load()
    if not _OUTPUT.value.endswith(".npz"):
        raise app.UsageError(f"--output {_OUTPUT.value}: demo files are numpy archives ending in .npz")
    try:
        reading = DemoReading(allow_pickle=True, hil_serl_gripper_close=_GRIPPER.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    env = exp.make_env(config)
    spaces = env_spaces(env)  # the converted file names the env's state fields: it is read as holding them
    try:
        transitions = load_demos(_INPUT.value, spaces.observation_space, spaces.action_space,
                                 require_grasp_penalty=bool(config.agent.learned_gripper), reading=reading,
                                 state_layout=spaces.state_layout)
    except (DemoFormatError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    finally:
        env.close()
    path = save_demos(_OUTPUT.value, transitions, spaces.state_layout)
    episodes = sum(bool(t["dones"]) for t in transitions)
    print(f"converted {len(transitions)} transitions ({episodes} episode ends) from {_INPUT.value} to {path}")


if __name__ == "__main__":
    cli.run(main)
