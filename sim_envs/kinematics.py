"""Forward and inverse kinematics of the 5-DoF low-cost arms (SO-101, SO-100, Koch v1.1).

One solver for the simulator and the real followers: :class:`ArmKinematics` holds its own MuJoCo
model and data, so it needs no running simulation; a real follower calls :meth:`ArmKinematics.fk`
and :meth:`ArmKinematics.ik` with measured joint angles (radians, the MJCF's zeros and signs).
Poses follow :mod:`serl_launcher.conventions`: metres in the arm's base frame, quaternions
(x, y, z, w).

Inverse kinematics is differential, on mink (a QP per step, solved by daqp):

    min_dq  sum_tasks || J_k dq - e_k ||^2_{W_k}   s.t. joint limits, |dq_i| <= v_max_i * dt

with a frame task on the tool site (position cost 1, a small orientation cost that keeps the tool
pointing down), a posture task towards the home posture (regularises the 5-DoF arm near
singularities and picks the elbow-up branch), mink's ``ConfigurationLimit`` for the joint ranges
and ``VelocityLimit`` for the per-call joint step. Joints that are not arm joints (the gripper, a
cube's free joint in a scene) are frozen by an equality constraint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mink
import mujoco
import numpy as np

from serl_launcher import conventions

XML_DIR = Path(__file__).parent / "xmls"
SO101_XML = XML_DIR / "so101.xml"
KOCH_XML = XML_DIR / "koch.xml"

# Both arms use the same joint names (LeRobot's motor names).
SO101_ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
KOCH_ARM_JOINTS = SO101_ARM_JOINTS
GRIPPER_JOINT = "gripper"
TCP_SITE = "tcp"

# Home postures (radians): the tool pointing straight down (the pitch joints sum to pi/2), jaws
# closing along x. SO-101: tool at ~(0.18, 0, 0.11) m. Koch: tool at ~(0.11, 0, 0.07) m.
SO101_HOME_QPOS = (0.0, -0.05, 0.04, 1.5808, 0.0)
KOCH_HOME_QPOS = (0.0, 1.5, 1.3, 1.7708, 0.0)

# The tool pointing straight down with the jaws closing along the base's x axis.
TOOL_DOWN_QUAT_XYZW = (1.0, 0.0, 0.0, 0.0)

# kind -> (xml, arm joints, home posture). The SO-100 shares the SO-101's model: its published
# URDF has the same upper arm (0.1126 / 0.028 m) and forearm (0.1349 / 0.0052 m) offsets, the
# shoulder_lift axis 1.4 mm lower (0.1477 vs 0.1491 m above the base) and the wrist_roll 1 mm
# closer (0.0601 vs 0.0611 m): the tool point differs by ~2 mm. Its joint angles must follow
# the same zeros and signs (LeRobot's calibration, zero mid-range), not that URDF's zeros.
ARM_KINDS = {
    "so101": (SO101_XML, SO101_ARM_JOINTS, SO101_HOME_QPOS),
    "so100": (SO101_XML, SO101_ARM_JOINTS, SO101_HOME_QPOS),
    "koch": (KOCH_XML, KOCH_ARM_JOINTS, KOCH_HOME_QPOS),
}

# Largest joint speed the IK commands (rad/s); the STS3215 / XL430 servos do ~5 rad/s unloaded.
MAX_JOINT_VELOCITY = 3.0
_QP_SOLVER = "daqp"


def arm_model(kind: str) -> mujoco.MjModel:
    """The MuJoCo model of an arm ("so101" | "so100" | "koch"), loaded from its MJCF."""
    if kind not in ARM_KINDS:
        raise ValueError(f"unknown arm kind {kind!r}; known: {sorted(ARM_KINDS)}")
    return mujoco.MjModel.from_xml_path(str(ARM_KINDS[kind][0]))


def arm_kinematics(kind: str, **kwargs) -> ArmKinematics:
    """:class:`ArmKinematics` of an arm kind, with its joints and home posture."""
    model = arm_model(kind)
    _, joints, home = ARM_KINDS[kind]
    return ArmKinematics(model, joints=joints, home_qpos=home, **kwargs)


class ArmKinematics:
    """FK and differential IK of one arm's tool site.

    Args:
        xml_path_or_model: an MJCF path or an ``MjModel`` containing the arm (a scene is fine: its
            other joints are held still). The model is used read-only; this object has its own data.
        tcp_site: the tool centre point site.
        joints: the arm's hinge joints, in the order of every q this class takes and returns.
        home_qpos: (n,) posture the posture task pulls towards; default: the middle of each range.
        orientation_cost: weight of the tool-orientation error (per radian) against the position
            error (per metre, weight 1). Small: position first, orientation as a preference.
        posture_cost: weight of the posture task (per radian).
        max_joint_velocity: (n,) or scalar rad/s bound; one :meth:`ik` call moves joint i by at most
            ``max_joint_velocity[i] * dt``.
        damping: Levenberg-Marquardt damping of the QP.
    """

    def __init__(
        self,
        xml_path_or_model: str | Path | mujoco.MjModel,
        tcp_site: str = TCP_SITE,
        joints: Sequence[str] = SO101_ARM_JOINTS,
        home_qpos: Sequence[float] | None = None,
        orientation_cost: float = 0.05,
        posture_cost: float = 1e-3,
        max_joint_velocity: float | Sequence[float] = MAX_JOINT_VELOCITY,
        damping: float = 1e-4,
    ):
        if isinstance(xml_path_or_model, mujoco.MjModel):
            model = xml_path_or_model
        else:
            model = mujoco.MjModel.from_xml_path(str(xml_path_or_model))
        self.model = model
        self.joints = tuple(joints)
        self.tcp_site = tcp_site
        self._site_id = model.site(tcp_site).id
        ids = [model.joint(j).id for j in self.joints]
        for name, jid in zip(self.joints, ids, strict=True):
            if model.jnt_type[jid] != mujoco.mjtJoint.mjJNT_HINGE:
                raise ValueError(f"joint {name!r} is not a hinge")
        self.qpos_ids = np.array([model.jnt_qposadr[j] for j in ids])
        self.dof_ids = np.array([model.jnt_dofadr[j] for j in ids])
        self.q_low = model.jnt_range[ids, 0].copy()
        self.q_high = model.jnt_range[ids, 1].copy()
        if home_qpos is None:
            home_qpos = 0.5 * (self.q_low + self.q_high)
        self.home_qpos = np.asarray(home_qpos, dtype=np.float64)
        if self.home_qpos.shape != (len(self.joints),):
            raise ValueError(f"home_qpos needs {len(self.joints)} angles, got {self.home_qpos.shape}")
        self.damping = damping

        self._config = mink.Configuration(model)
        self._q_full = self._config.q.copy()  # the other joints stay at the model's qpos0
        self._frame_task = mink.FrameTask(
            tcp_site, "site", position_cost=1.0, orientation_cost=orientation_cost, lm_damping=1e-6
        )
        self._posture_task = mink.PostureTask(model, cost=posture_cost)
        posture_target = model.qpos0.copy()
        posture_target[self.qpos_ids] = self.home_qpos
        self._posture_task.set_target(posture_target)
        vmax = np.broadcast_to(np.asarray(max_joint_velocity, dtype=np.float64), (len(self.joints),))
        self.max_joint_velocity = vmax.copy()
        self._limits = [
            mink.ConfigurationLimit(model),
            mink.VelocityLimit(model, dict(zip(self.joints, vmax, strict=True))),
        ]
        frozen = sorted(set(range(model.nv)) - set(self.dof_ids.tolist()))
        self._constraints = [mink.DofFreezingTask(model, frozen)] if frozen else []
        self._down_wxyz = conventions.xyzw_to_wxyz(np.asarray(TOOL_DOWN_QUAT_XYZW))

    # ------------------------------------------------------------------ queries

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n,) joint angles -> tool position (3,) and orientation quaternion xyzw (4,)."""
        self._set(q)
        data = self._config.data
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, data.site_xmat[self._site_id])
        return data.site_xpos[self._site_id].copy(), conventions.wxyz_to_xyzw(quat)

    def clip(self, q: np.ndarray) -> np.ndarray:
        """q clipped to the joint ranges."""
        return np.clip(np.asarray(q, dtype=np.float64), self.q_low, self.q_high)

    def ik(
        self,
        q_now: np.ndarray,
        target_pos: np.ndarray,
        target_quat_xyzw: np.ndarray | None = None,
        dt: float = 0.02,
        iterations: int = 1,
        tolerance: float = 1e-4,
    ) -> np.ndarray:
        """Joint targets (n,) that move the tool from ``fk(q_now)`` towards the target.

        Args:
            q_now: (n,) measured joint angles (clipped to the ranges first).
            target_pos: (3,) tool position, metres, base frame.
            target_quat_xyzw: (4,) tool orientation; None: pointing down, the tool's yaw as now
                (the 5-DoF arm cannot set every orientation; the small orientation cost trades
                it off against position).
            dt: seconds this call's motion stands for: each joint moves at most
                ``max_joint_velocity * dt`` in total (the velocity limit per call).
            iterations: QP steps within the call (each may use 1/iterations of the motion budget);
                1 for a servo loop called every dt, more to converge to a far target in one call.
            tolerance: stop iterating once the tool is this close to target_pos (metres).

        Returns:
            (n,) joint angles within the joint ranges.
        """
        if dt <= 0 or iterations < 1:
            raise ValueError(f"dt must be > 0 and iterations >= 1, got dt={dt}, iterations={iterations}")
        target_pos = np.asarray(target_pos, dtype=np.float64)
        q = self._set(self.clip(q_now))
        if target_quat_xyzw is None:
            target_wxyz = self._down_keeping_yaw()
        else:
            target_wxyz = conventions.xyzw_to_wxyz(np.asarray(target_quat_xyzw, dtype=np.float64))
            target_wxyz = target_wxyz / np.linalg.norm(target_wxyz)
        self._frame_task.set_target(mink.SE3.from_rotation_and_translation(mink.SO3(target_wxyz), target_pos))
        step_dt = dt / iterations
        config = self._config
        for _ in range(iterations):
            velocity = mink.solve_ik(
                config, [self._frame_task, self._posture_task], step_dt, _QP_SOLVER,
                damping=self.damping, limits=self._limits, constraints=self._constraints,
            )
            config.integrate_inplace(velocity, step_dt)
            if np.linalg.norm(config.data.site_xpos[self._site_id] - target_pos) < tolerance:
                break
        q = config.q[self.qpos_ids]
        return np.clip(q, self.q_low, self.q_high)

    # ------------------------------------------------------------------ internals

    def _set(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.joints),):
            raise ValueError(f"q must have shape ({len(self.joints)},) for joints {self.joints}, got {q.shape}")
        self._q_full[self.qpos_ids] = q
        self._config.update(self._q_full)
        return q

    def _down_keeping_yaw(self) -> np.ndarray:
        """wxyz of the tool pointing straight down, rotated about the vertical like the tool is now
        (the tool's x axis projected on the table)."""
        x_axis = self._config.data.site_xmat[self._site_id].reshape(3, 3)[:, 0]
        yaw = np.arctan2(x_axis[1], x_axis[0]) if np.hypot(x_axis[0], x_axis[1]) > 1e-6 else 0.0
        rot_z = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
        out = np.zeros(4)
        mujoco.mju_mulQuat(out, rot_z, self._down_wxyz)
        return out
