"""Differential inverse kinematics for end-effector pose targets.

The env sets a Cartesian target once per control step. This controller turns it into joint
position targets for the arm's position servos several times per control step (`ik_substeps`),
each time along a straight line from where the tool was at the start of the step, and MuJoCo's
servos track those targets at the physics rate. This is the joint-impedance-plus-IK scheme real
arms run, not a mocap weld: the arm's kinematics, joint limits and dynamics are all in the loop.

Each IK update solves damped least squares (Levenberg-Marquardt / Wampler 1986):

    dq = J^T (J J^T + lambda^2 I)^-1 e  +  (I - J^+ J) k_null (q_home - q)

with e = [p_target - p; rotvec(R_target R^T)] and a null-space pull towards the home posture that
keeps the redundant 7th degree of freedom from drifting. The projector uses the undamped
pseudo-inverse J^+ so the posture pull cannot move the tool.
"""

from __future__ import annotations

import mujoco
import numpy as np


class DiffIKController:
    """Tracks a tool-site pose target with joint position servos.

    Args:
        model, data: the MuJoCo model and data.
        site: name of the tool centre point site.
        joints: names of the arm's hinge joints (one position actuator each).
        actuators: names of those joints' position actuators, same order.
        home_qpos: (n,) posture the null-space term pulls towards.
        damping: lambda in the damped least squares solve.
        nullspace_gain: k_null.
        max_joint_step: largest change of a joint target per IK update, in radians.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        site: str,
        joints: tuple[str, ...],
        actuators: tuple[str, ...],
        home_qpos: np.ndarray,
        damping: float = 0.05,
        nullspace_gain: float = 0.2,
        max_joint_step: float = 0.15,
    ):
        self.model, self.data = model, data
        self.site_id = model.site(site).id
        self.qpos_ids = np.array([model.joint(j).qposadr[0] for j in joints])
        self.dof_ids = np.array([model.joint(j).dofadr[0] for j in joints])
        self.actuator_ids = np.array([model.actuator(a).id for a in actuators])
        self.q_low = np.array([model.joint(j).range[0] for j in joints])
        self.q_high = np.array([model.joint(j).range[1] for j in joints])
        self.home_qpos = np.asarray(home_qpos, dtype=np.float64)
        self.damping = damping
        self.nullspace_gain = nullspace_gain
        self.max_joint_step = max_joint_step
        n = len(joints)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._jac = np.zeros((6, n))
        self._err = np.zeros(6)
        self._quat = np.zeros(4)
        self._quat_neg = np.zeros(4)
        self._quat_err = np.zeros(4)
        self._damping_eye = np.eye(6) * damping**2
        self._tiny_eye = np.eye(6) * 1e-9
        self._eye_n = np.eye(n)

    def site_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.site_id].copy()

    def site_quat_wxyz(self) -> np.ndarray:
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self.site_id])
        return quat

    def joint_targets(self, target_pos: np.ndarray, target_quat_wxyz: np.ndarray) -> np.ndarray:
        """One IK update from the current state: (n,) joint position targets."""
        model, data = self.model, self.data
        err = self._err
        err[:3] = target_pos - data.site_xpos[self.site_id]
        mujoco.mju_mat2Quat(self._quat, data.site_xmat[self.site_id])
        mujoco.mju_negQuat(self._quat_neg, self._quat)
        mujoco.mju_mulQuat(self._quat_err, target_quat_wxyz, self._quat_neg)
        mujoco.mju_quat2Vel(err[3:], self._quat_err, 1.0)

        mujoco.mj_jacSite(model, data, self._jacp, self._jacr, self.site_id)
        jac = self._jac
        jac[:3] = self._jacp[:, self.dof_ids]
        jac[3:] = self._jacr[:, self.dof_ids]

        q = data.qpos[self.qpos_ids]
        # Task term with damping: dq = J^T (J J^T + lambda^2 I)^-1 e. The null-space projector must be
        # exact (tiny regulariser only), or the posture pull leaks into the tool's motion and the
        # tool drifts while the action is zero.
        jjt = jac @ jac.T
        dq = jac.T @ np.linalg.solve(jjt + self._damping_eye, err)
        projector = self._eye_n - jac.T @ np.linalg.solve(jjt + self._tiny_eye, jac)
        dq += projector @ (self.nullspace_gain * (self.home_qpos - q))
        np.clip(dq, -self.max_joint_step, self.max_joint_step, out=dq)
        q += dq
        np.clip(q, self.q_low, self.q_high, out=q)
        return q

    def step(
        self,
        target_pos: np.ndarray,
        target_quat_wxyz: np.ndarray,
        n_substeps: int,
        ik_substeps: int,
    ) -> None:
        """Advances physics by `n_substeps`, moving the tool towards the target along a line."""
        data = self.data
        start = data.site_xpos[self.site_id].copy()
        chunks = np.diff(np.linspace(0, n_substeps, ik_substeps + 1).round().astype(int))
        for k, chunk in enumerate(chunks):
            waypoint = start + (target_pos - start) * ((k + 1) / ik_substeps)
            data.ctrl[self.actuator_ids] = self.joint_targets(waypoint, target_quat_wxyz)
            mujoco.mj_step(self.model, data, nstep=int(chunk))

    def reset(self, qpos: np.ndarray) -> None:
        """Puts the arm at `qpos` with servos holding it there (call mj_forward afterwards)."""
        self.data.qpos[self.qpos_ids] = qpos
        self.data.qvel[self.dof_ids] = 0.0
        self.data.ctrl[self.actuator_ids] = qpos
