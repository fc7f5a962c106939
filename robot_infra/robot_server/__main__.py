"""Runs the robot server until interrupted.

    python -m robot_infra.robot_server --backend mujoco --port 5000
    python -m robot_infra.robot_server --backend franka --robot_ip 172.16.0.2 --port 5000

Listens on 127.0.0.1 by default; give ``--host 0.0.0.0`` to serve actors on other machines
(the server has no authentication: keep it on the robot's own network).
"""

from __future__ import annotations

import logging

from absl import app, flags

from robot_infra.robot_server import BACKENDS, RobotServer, make_backend

FLAGS = flags.FLAGS
flags.DEFINE_enum("backend", "mujoco", list(BACKENDS), "What drives the arm.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
flags.DEFINE_integer("port", 5000, "Port to listen on (0: any free port, printed at start).")
flags.DEFINE_string("robot_ip", "", "franka: the arm's FCI address.")
flags.DEFINE_float("dynamics_factor", 0.1, "franka: fraction of the arm's velocity/acceleration/jerk limits.")
flags.DEFINE_bool("gripper", True, "franka: a Franka Hand is attached.")
flags.DEFINE_float("physics_dt", 0.004, "mujoco: physics time step (s).")
flags.DEFINE_float("ik_hz", 50.0, "mujoco: controller updates per second.")
flags.DEFINE_float("force_limit", 150.0, "mujoco: external force (N) that trips the reflex.")
flags.DEFINE_float("joint_reset_speed", 1.0, "mujoco: joint reset speed (rad/s).")
flags.DEFINE_integer("seed", 0, "mujoco: seed for the cube's position on a scene reset.")


def main(argv: list[str]) -> None:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if FLAGS.backend == "mujoco":
        backend = make_backend(
            "mujoco", physics_dt=FLAGS.physics_dt, ik_hz=FLAGS.ik_hz, force_limit=FLAGS.force_limit,
            joint_reset_speed=FLAGS.joint_reset_speed, seed=FLAGS.seed,
        )
    else:
        backend = make_backend(
            "franka", robot_ip=FLAGS.robot_ip, dynamics_factor=FLAGS.dynamics_factor, gripper=FLAGS.gripper
        )
    server = RobotServer(backend, FLAGS.host, FLAGS.port)
    # One line a supervisor (or a test) can wait for.
    print(f"robot server ({FLAGS.backend}) listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        backend.close()


if __name__ == "__main__":
    app.run(main)
