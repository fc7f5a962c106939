"""The robot server: one arm behind HTTP + JSON, whatever drives it.

- :mod:`.backend`: the :class:`RobotBackend` interface, impedance parameters and their limits;
- :mod:`.mujoco_backend`: the ``sim_envs`` Panda stepped in real time (no hardware);
- :mod:`.franka_backend`: a Franka arm through franky (``pip install franky-control``);
- :mod:`.servo_arm_backend`: the low-cost followers, SO-100 / SO-101 (Feetech) and Koch
  (Dynamixel), with IK on their MuJoCo models (needs a calibration file);
- :mod:`.server`: the HTTP server and its endpoint table;
- :mod:`.client`: the client real-arm envs use (timeouts, bounded retries, clear errors).

Run one: ``python -m robot_infra.robot_server --backend mujoco --port 5000``.
"""

from __future__ import annotations

from typing import Any

from robot_infra.robot_server.backend import (
    DEFAULT_IMPEDANCE,
    IMPEDANCE_LIMITS,
    MotionLimits,
    NotSupported,
    RequestError,
    RobotBackend,
    RobotFault,
)
from robot_infra.robot_server.client import RobotClient, RobotConnectionError, RobotServerError
from robot_infra.robot_server.server import RobotServer

BACKENDS = ("mujoco", "franka", "so101", "so100", "koch")


def make_backend(kind: str, **kwargs: Any) -> RobotBackend:
    """A backend by name; its module (and MuJoCo or franky) is imported only here."""
    if kind == "mujoco":
        import sim_envs  # noqa: F401  (picks the headless GL backend before mujoco is imported)
        from robot_infra.robot_server.mujoco_backend import MujocoBackend

        return MujocoBackend(**kwargs)
    if kind == "franka":
        from robot_infra.robot_server.franka_backend import FrankaBackend

        return FrankaBackend(**kwargs)
    if kind in ("so101", "so100", "koch"):
        import sim_envs  # noqa: F401  (the arm's MuJoCo model for its kinematics; headless GL first)
        from robot_infra.robot_server.servo_arm_backend import make_follower

        return make_follower(kind, **kwargs)
    raise ValueError(f"unknown robot backend {kind!r}; known: {list(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "DEFAULT_IMPEDANCE",
    "IMPEDANCE_LIMITS",
    "MotionLimits",
    "NotSupported",
    "RequestError",
    "RobotBackend",
    "RobotClient",
    "RobotConnectionError",
    "RobotFault",
    "RobotServer",
    "RobotServerError",
    "make_backend",
]
