"""Runs the robot server until interrupted.

    python -m robot_infra.robot_server --backend mujoco --port 5000
    python -m robot_infra.robot_server --backend franka --robot_ip 172.16.0.2 --port 5000
    python -m robot_infra.robot_server --backend so101 --serial_port /dev/ttyACM0 \
        --calibration ~/so101_follower.json --exp_name so101_real

Motion limits: every pose command is held inside a workspace box and a step from where the
tool is (``robot_infra.robot_server.backend.MotionLimits``). ``--exp_name`` takes the box from
an experiment's ``env.workspace_low`` / ``env.workspace_high``; ``--workspace_low`` and
``--workspace_high`` give it directly (and win). The MuJoCo backend defaults to its sim task's
box; a real arm's backend refuses to start without one.

Listens on 127.0.0.1 by default. To serve actors on other machines (``--host 0.0.0.0``), set a
shared token in the environment of the server and of every actor (never on the command line,
where ``ps`` shows it)::

    export ROBOT_SERVER_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(24))")

The server refuses a non-loopback address without one. The token travels in plain HTTP: keep
the server on the robot's own network.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags

from experiments import cli
from robot_infra.robot_server import BACKENDS, RobotServer, make_backend
from robot_infra.robot_server.backend import MotionLimits
from robot_infra.robot_server.server import TOKEN_ENV

FLAGS = flags.FLAGS
flags.DEFINE_enum("backend", "mujoco", list(BACKENDS), "What drives the arm.")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
flags.DEFINE_integer("port", 5000, "Port to listen on (0: any free port, printed at start).")
flags.DEFINE_list("workspace_low", [], "x,y,z (m, base frame): the box's low corner (overrides --exp_name's).")
flags.DEFINE_list("workspace_high", [], "x,y,z (m, base frame): the box's high corner.")
flags.DEFINE_float("max_step", 0.1, "Metres a pose target may be from the tool's current position.")
flags.DEFINE_float("max_rot_step", 0.5, "Radians a pose target's orientation may be from the tool's.")
flags.DEFINE_string("robot_ip", "", "franka: the arm's FCI address.")
flags.DEFINE_float("dynamics_factor", 0.1, "franka: fraction of the arm's velocity/acceleration/jerk limits.")
flags.DEFINE_bool("gripper", True, "franka: a Franka Hand is attached.")
flags.DEFINE_float("physics_dt", 0.004, "mujoco: physics time step (s).")
flags.DEFINE_float("ik_hz", 50.0, "mujoco: controller updates per second.")
flags.DEFINE_float("force_limit", 150.0, "mujoco: external force (N) that trips the reflex.")
flags.DEFINE_float("joint_reset_speed", 1.0, "mujoco: joint reset speed (rad/s).")
flags.DEFINE_integer("seed", 0, "mujoco: seed for the cube's position on a scene reset.")
flags.DEFINE_string("serial_port", "", "so101 / so100 / koch: the follower's serial device.")
flags.DEFINE_string("calibration", "", "so101 / so100 / koch: its calibration file (robot_infra.tools.calibrate_arm).")
flags.DEFINE_float("control_hz", 30.0, "so101 / so100 / koch: control-loop rate (read, IK, write).")
flags.DEFINE_float("bus_timeout_ms", 0.0, "so101 / so100 / koch: how long to wait for the servos' reply "
                   "(0: the servo SDK's own, about 34 ms at 1 Mbaud); raise it for a slow USB adapter.")
flags.register_validator("bus_timeout_ms", lambda ms: ms >= 0, "--bus_timeout_ms must be 0 or more")


def main(argv: list[str]) -> None:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if FLAGS.backend == "mujoco":
        backend = make_backend(
            "mujoco", physics_dt=FLAGS.physics_dt, ik_hz=FLAGS.ik_hz, force_limit=FLAGS.force_limit,
            joint_reset_speed=FLAGS.joint_reset_speed, seed=FLAGS.seed,
        )
    elif FLAGS.backend == "franka":
        backend = make_backend(
            "franka", robot_ip=FLAGS.robot_ip, dynamics_factor=FLAGS.dynamics_factor, gripper=FLAGS.gripper
        )
    else:
        from robot_infra.calibration import CalibrationError
        from robot_infra.servo_bus import ServoBusError

        try:
            backend = make_backend(FLAGS.backend, port=FLAGS.serial_port, calibration=FLAGS.calibration,
                                   control_hz=FLAGS.control_hz, timeout_ms=FLAGS.bus_timeout_ms or None)
        except (CalibrationError, ServoBusError, ValueError) as error:
            raise app.UsageError(str(error)) from None
    try:
        server = RobotServer(backend, FLAGS.host, FLAGS.port, limits=motion_limits(backend),
                             token=os.environ.get(TOKEN_ENV, ""))
    except ValueError as error:
        backend.close()
        raise app.UsageError(str(error)) from None
    # One line a supervisor (or a test) can wait for.
    print(f"robot server ({FLAGS.backend}) listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        backend.close()


def motion_limits(backend) -> MotionLimits | None:
    """The limits from the flags; None: the backend's own (the server refuses when it has none)."""
    box = None
    _, config = cli.load(required=False)  # --exp_name / --config: the experiment whose box bounds every pose
    if config is None and cli.overrides():
        raise app.UsageError("--set changes an experiment's config: name the experiment (--exp_name or --config)")
    if config is not None:
        env = config.env
        if "workspace_low" not in env or "workspace_high" not in env:
            raise app.UsageError(f"experiment {cli.exp_name()!r} has no env.workspace_low/high; give "
                                 "--workspace_low and --workspace_high")
        box = (tuple(env.workspace_low), tuple(env.workspace_high))
    if FLAGS.workspace_low or FLAGS.workspace_high:
        try:
            box = (tuple(float(v) for v in FLAGS.workspace_low), tuple(float(v) for v in FLAGS.workspace_high))
        except ValueError as error:
            raise app.UsageError(f"--workspace_low/--workspace_high: {error}") from None
    if box is None:
        default = backend.default_limits()
        if default is None:
            return None
        box = (default.workspace_low, default.workspace_high)
    try:
        return MotionLimits(*box, max_step=FLAGS.max_step, max_rot_step=FLAGS.max_rot_step)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


if __name__ == "__main__":
    cli.run(main)
