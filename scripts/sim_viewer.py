"""Drive the simulated arm from the keyboard in MuJoCo's viewer (needs a display).

    python scripts/sim_viewer.py [--env_id PandaPickCube-v0]

Keys are listed in sim_envs/viewer.py.
"""

from absl import app, flags

_ENV_ID = flags.DEFINE_string("env_id", "PandaPickCube-v0", "Registered sim_envs id.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the first episode.")


def main(argv: list[str]) -> None:
    del argv
    from sim_envs.viewer import run_viewer

    run_viewer(_ENV_ID.value, seed=_SEED.value)


if __name__ == "__main__":
    app.run(main)
