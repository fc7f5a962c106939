"""A simulated arm behind the robot server: the Panda of ``sim_envs`` on its table with the cube.

Physics runs in a background thread paced to wall-clock time, so the server behaves like a real
arm streaming state: a pose command sets a target, the arm gets there over the next physics
steps, and ``state()`` returns the latest snapshot (taken every control tick) whenever it is asked.

Control: at ``ik_hz`` the differential-IK controller of :mod:`sim_envs.controllers` turns the
target into joint targets for the arm's position servos. As in a Cartesian impedance controller
with error clipping, the IK aims at a waypoint at most ``translational_clip`` metres and
``rotational_clip`` radians from where the tool is, which bounds how hard the arm pushes in
contact.

Impedance parameters, how each one acts here (a joint-servo simulation, not a torque-controlled
Cartesian impedance law):

- ``translational_clip``, ``rotational_clip``: the waypoint clipping above (same meaning as on
  the real controller);
- ``translational_stiffness``, ``translational_damping``: scale the arm servos' kp and kv by
  their ratio to :data:`~robot_infra.robot_server.backend.DEFAULT_IMPEDANCE`, capped at 1 (the
  MJCF gains are the stiffest this model is stable with) and floored at 2 %;
- ``rotational_stiffness``, ``rotational_damping``, ``nullspace_stiffness``: validated and
  stored only (joint servos have one gain per joint).

Errors: a Cartesian reflex like the real arm's. When the external force on the hand exceeds
``force_limit`` newtons the arm stops driving (the servos aim where the joints are: damping
without stiffness, so the contact pushes the hand back out), ``errors`` lists the reason, and
pose commands are refused until ``clear_errors()``, after which the arm holds its current pose.

Wrench: summed contact forces on the hand and fingers (what the world does to the robot), in the
base frame, torque about the tool centre point: an ideal wrist force/torque sensor with the
hand's own weight removed, like the real arm's external wrench estimate.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import mujoco
import numpy as np

from robot_infra.robot_server.backend import (
    DEFAULT_IMPEDANCE,
    MotionLimits,
    RobotBackend,
    RobotFault,
    check_can_move,
    clip_toward,
    validate_impedance,
)
from sim_envs import panda_pick_cube as task
from sim_envs.controllers import DiffIKController

HAND_BODY = "hand"
MIN_GAIN_SCALE = 0.02


class MujocoBackend(RobotBackend):
    """See the module docstring.

    Args:
        physics_dt: physics time step, seconds.
        ik_hz: controller updates (and state snapshots) per second.
        home_qpos: (7,) posture of a joint reset; default: the sim task's.
        joint_reset_speed: mean speed (rad/s) of the joint furthest from its goal during a joint
            reset (a smooth joint-space move).
        force_limit: external force on the hand (N) that trips the reflex.
        seed: for the cube's position on a scene reset.
        start: start the physics thread now (else call ``start()``).
    """

    name = "mujoco"

    def __init__(
        self,
        physics_dt: float = 0.004,
        ik_hz: float = 50.0,
        home_qpos: tuple[float, ...] | None = None,
        joint_reset_speed: float = 1.0,
        force_limit: float = 150.0,
        seed: int = 0,
        start: bool = True,
    ):
        sim_cfg = task.default_config()
        n_sub = round(1.0 / (ik_hz * physics_dt))
        if physics_dt <= 0 or ik_hz <= 0 or n_sub < 1:
            raise ValueError(f"need physics_dt > 0 and ik_hz <= 1 / physics_dt, got {physics_dt}, {ik_hz}")
        if joint_reset_speed <= 0 or force_limit <= 0:
            raise ValueError("joint_reset_speed and force_limit must be positive")
        self.model = mujoco.MjModel.from_xml_path(str(task.XML_PATH))
        self.model.opt.timestep = physics_dt
        self.data = mujoco.MjData(self.model)
        self.physics_dt, self.ik_hz, self._n_sub = physics_dt, ik_hz, n_sub
        self.joint_reset_speed, self.force_limit = joint_reset_speed, force_limit
        self._rng = np.random.default_rng(seed)
        self._workspace = (tuple(sim_cfg.workspace_low), tuple(sim_cfg.workspace_high))
        self._cube_xy_low, self._cube_xy_high = np.array(sim_cfg.cube_xy_low), np.array(sim_cfg.cube_xy_high)

        m = self.model
        self.home_qpos = np.array(home_qpos if home_qpos is not None else sim_cfg.home_qpos, dtype=np.float64)
        if self.home_qpos.shape != (self.n_joints,):
            raise ValueError(f"home_qpos needs {self.n_joints} joint angles, got {self.home_qpos.shape}")
        self._ik = DiffIKController(m, self.data, task.TCP_SITE, task.ARM_JOINTS, task.ARM_ACTUATORS, self.home_qpos)
        self._tcp = m.site(task.TCP_SITE).id
        self._finger_qpos = np.array([m.joint(j).qposadr[0] for j in task.FINGER_JOINTS])
        self._gripper_act = m.actuator(task.GRIPPER_ACTUATOR).id
        self._cube_qpos = m.joint(task.CUBE_JOINT).qposadr[0]
        self._cube_dof = m.joint(task.CUBE_JOINT).dofadr[0]
        hand = m.body(HAND_BODY).id
        self._hand_bodies = np.array([_in_subtree(m, b, hand) for b in range(m.nbody)])
        arm = self._ik.actuator_ids
        self._kp0 = m.actuator_gainprm[arm, 0].copy()
        self._kv0 = -m.actuator_biasprm[arm, 2].copy()

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._impedance = dict(DEFAULT_IMPEDANCE)
        self._errors: list[str] = []
        self._gripper_command = "open"
        self._reset_motion: dict[str, Any] | None = None
        self._reset_done = threading.Event()
        self._scratch = {k: np.zeros(n) for k, n in (("q1", 4), ("q2", 4), ("q3", 4), ("v3", 3), ("f6", 6))}
        self._snapshot: dict[str, Any] = {}

        self._put_arm_home()
        self._target_pos, self._target_quat = self._ik.site_pos(), self._ik.site_quat_wxyz()
        self._snapshot = self._make_snapshot(np.zeros(3), np.zeros(3))
        if start:
            self.start()

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mujoco-physics", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        period = 1.0 / self.ik_hz
        next_tick = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                self._tick()
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -5 * period:
                next_tick = time.monotonic()  # starved of CPU: slow down instead of catching up

    def _tick(self) -> None:
        """One controller update and `_n_sub` physics steps (called with the lock held)."""
        d, arm = self.data, self._ik.actuator_ids
        if self._reset_motion is not None:
            motion = self._reset_motion
            progress = min(1.0, (d.time - motion["t0"]) / motion["duration"])
            s = progress * progress * (3.0 - 2.0 * progress)  # smoothstep: no velocity jump at the ends
            d.ctrl[arm] = motion["q0"] + (motion["q1"] - motion["q0"]) * s
            if progress >= 1.0 and np.max(np.abs(d.qvel[self._ik.dof_ids])) < 0.05:
                self._reset_motion = None
                self._target_pos, self._target_quat = self._ik.site_pos(), self._ik.site_quat_wxyz()
                self._reset_done.set()
        elif self._errors:
            # Stopped: the servos aim where the joints are (no stiffness, damping only), so the
            # contact that tripped the reflex pushes the arm back out instead of being held.
            d.ctrl[arm] = d.qpos[self._ik.qpos_ids]
        else:
            pos, quat = self._clipped_waypoint()
            d.ctrl[arm] = self._ik.joint_targets(pos, quat)
        mujoco.mj_step(self.model, d, nstep=self._n_sub)

        force, torque = self._hand_wrench()
        magnitude = float(np.linalg.norm(force))
        if magnitude > self.force_limit and not self._errors and self._reset_motion is None:
            self._errors.append(
                f"cartesian_reflex: external force {magnitude:.1f} N exceeded the {self.force_limit:g} N limit"
            )
            d.ctrl[arm] = d.qpos[self._ik.qpos_ids]
        self._snapshot = self._make_snapshot(force, torque)

    def _clipped_waypoint(self) -> tuple[np.ndarray, np.ndarray]:
        """The target, moved to within the clip distances of the tool's current pose."""
        way_pos = clip_toward(self._ik.site_pos(), self._target_pos, self._impedance["translational_clip"])

        cur, inv, rel, rotvec = self._scratch["q1"], self._scratch["q2"], self._scratch["q3"], self._scratch["v3"]
        mujoco.mju_mat2Quat(cur, self.data.site_xmat[self._tcp])
        mujoco.mju_negQuat(inv, cur)
        mujoco.mju_mulQuat(rel, self._target_quat, inv)
        mujoco.mju_quat2Vel(rotvec, rel, 1.0)
        angle = float(np.linalg.norm(rotvec))
        rot_clip = self._impedance["rotational_clip"]
        if angle <= rot_clip:
            return way_pos, self._target_quat.copy()
        step, way_quat = np.zeros(4), np.zeros(4)
        mujoco.mju_axisAngle2Quat(step, rotvec / angle, rot_clip)
        mujoco.mju_mulQuat(way_quat, step, cur)
        return way_pos, way_quat

    def _hand_wrench(self) -> tuple[np.ndarray, np.ndarray]:
        m, d = self.model, self.data
        force, torque = np.zeros(3), np.zeros(3)
        ncon = d.ncon
        if ncon == 0:
            return force, torque
        body1 = m.geom_bodyid[d.contact.geom1[:ncon]]
        body2 = m.geom_bodyid[d.contact.geom2[:ncon]]
        on1, on2 = self._hand_bodies[body1], self._hand_bodies[body2]
        tcp = d.site_xpos[self._tcp]
        f6 = self._scratch["f6"]
        for i in np.flatnonzero(on1 != on2):
            mujoco.mj_contactForce(m, d, int(i), f6)
            frame = d.contact.frame[i].reshape(3, 3)  # rows: normal (geom1 -> geom2), tangents
            # The contact force acts on geom2 (and its opposite on geom1).
            f_world, t_world = frame.T @ f6[:3], frame.T @ f6[3:]
            if on1[i]:
                f_world, t_world = -f_world, -t_world
            force += f_world
            torque += t_world + np.cross(d.contact.pos[i] - tcp, f_world)
        return force, torque

    def _make_snapshot(self, force: np.ndarray, torque: np.ndarray) -> dict[str, Any]:
        m, d = self.model, self.data
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[self._tcp])
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_SITE, self._tcp, vel, 0)  # [angular, linear]
        opening = float(np.mean(d.qpos[self._finger_qpos]))
        return {
            "tcp_pose": [*d.site_xpos[self._tcp].tolist(), *_xyzw(quat)],
            "tcp_vel": [*vel[3:].tolist(), *vel[:3].tolist()],
            "tcp_force": force.tolist(),
            "tcp_torque": torque.tolist(),
            "q": d.qpos[self._ik.qpos_ids].tolist(),
            "dq": d.qvel[self._ik.dof_ids].tolist(),
            "gripper_pose": float(np.clip(1.0 - opening / task.FINGER_STROKE, 0.0, 1.0)),
            "gripper_command": self._gripper_command,
            "target_pose": [*self._target_pos.tolist(), *_xyzw(self._target_quat)],
            "errors": list(self._errors),
            "time": float(d.time),
        }

    def _update_snapshot(self) -> None:
        """Makes the commanded fields of the snapshot current (lock held), so a state read right
        after a command already shows it; the measured fields change at the next tick."""
        self._snapshot = {
            **self._snapshot,
            "gripper_command": self._gripper_command,
            "target_pose": [*self._target_pos.tolist(), *_xyzw(self._target_quat)],
            "errors": list(self._errors),
        }

    def _put_arm_home(self) -> None:
        d = self.data
        mujoco.mj_resetData(self.model, d)
        self._ik.reset(self.home_qpos)
        d.qpos[self._finger_qpos] = task.FINGER_STROKE
        d.ctrl[self._gripper_act] = task.FINGER_STROKE
        self._place_cube()
        mujoco.mj_forward(self.model, d)

    def _place_cube(self) -> None:
        d = self.data
        xy = self._rng.uniform(self._cube_xy_low, self._cube_xy_high)
        d.qpos[self._cube_qpos : self._cube_qpos + 7] = (*xy, task.CUBE_HALF_SIZE, 1.0, 0.0, 0.0, 0.0)
        d.qvel[self._cube_dof : self._cube_dof + 6] = 0.0

    # ------------------------------------------------------------------ RobotBackend

    def state(self) -> dict[str, Any]:
        with self._lock:
            snapshot = self._snapshot
        # Lists inside are replaced, never mutated, after a snapshot is taken: a shallow copy is safe.
        return dict(snapshot)

    def set_pose_target(self, pose: np.ndarray) -> None:
        with self._lock:
            self._check_can_move()
            self._target_pos = np.array(pose[:3], dtype=np.float64)
            self._target_quat = np.array([pose[6], pose[3], pose[4], pose[5]], dtype=np.float64)
            self._update_snapshot()

    def set_gripper(self, command: str) -> None:
        with self._lock:
            self._gripper_command = command
            self.data.ctrl[self._gripper_act] = 0.0 if command == "close" else task.FINGER_STROKE
            self._update_snapshot()

    def get_impedance(self) -> dict[str, float]:
        with self._lock:
            return dict(self._impedance)

    def set_impedance(self, params: dict[str, float]) -> dict[str, float]:
        params = validate_impedance(params, self._impedance)
        with self._lock:
            self._impedance = params
            arm = self._ik.actuator_ids
            kp = self._kp0 * _gain_scale(params["translational_stiffness"], DEFAULT_IMPEDANCE["translational_stiffness"])
            kv = self._kv0 * _gain_scale(params["translational_damping"], DEFAULT_IMPEDANCE["translational_damping"])
            self.model.actuator_gainprm[arm, 0] = kp
            self.model.actuator_biasprm[arm, 1] = -kp
            self.model.actuator_biasprm[arm, 2] = -kv
            return dict(params)

    def joint_reset(self, qpos: np.ndarray | None = None, scene: bool = False) -> None:
        goal = self.home_qpos if qpos is None else np.asarray(qpos, dtype=np.float64)
        if self._thread is None:
            raise RobotFault("the physics thread is not running (MujocoBackend.start())")
        with self._lock:
            self._check_can_move()
            if scene:
                self._place_cube()
                mujoco.mj_forward(self.model, self.data)
            self._reset_done.clear()
            start = self.data.qpos[self._ik.qpos_ids].copy()
            duration = max(0.05, float(np.max(np.abs(goal - start))) / self.joint_reset_speed)
            self._reset_motion = {"t0": self.data.time, "duration": duration, "q0": start, "q1": goal}
        # Wall-clock bound: the joint move in sim time plus room for a slow, shared CPU.
        if not self._reset_done.wait(timeout=5.0 * duration + 10.0):
            with self._lock:
                self._reset_motion = None
            raise RobotFault("joint reset did not finish in time (is the physics thread starved of CPU?)")

    def clear_errors(self) -> list[str]:
        with self._lock:
            cleared, self._errors = self._errors, []
            self._target_pos, self._target_quat = self._ik.site_pos(), self._ik.site_quat_wxyz()
            self._update_snapshot()
            return cleared

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        ranges = self.model.jnt_range[[self.model.joint(j).id for j in task.ARM_JOINTS]]
        return ranges[:, 0].copy(), ranges[:, 1].copy()

    def tool_position(self, qpos: np.ndarray) -> np.ndarray:
        data = mujoco.MjData(self.model)  # a scratch copy: the running simulation is not touched
        data.qpos[self._ik.qpos_ids] = qpos
        mujoco.mj_kinematics(self.model, data)
        return data.site_xpos[self._tcp].copy()

    def default_limits(self) -> MotionLimits:
        """The sim task's workspace box (sim_envs.panda_pick_cube.default_config())."""
        return MotionLimits(*self._workspace)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "physics_dt": self.physics_dt,
            "ik_hz": self.ik_hz,
            "force_limit": self.force_limit,
            "home_qpos": self.home_qpos.tolist(),
        }

    def _check_can_move(self) -> None:
        check_can_move(self._errors, self._reset_motion is not None)


def _in_subtree(model: mujoco.MjModel, body: int, root: int) -> bool:
    while body > 0:
        if body == root:
            return True
        body = model.body_parentid[body]
    return root == 0


def _xyzw(quat_wxyz: np.ndarray) -> list[float]:
    return [float(quat_wxyz[1]), float(quat_wxyz[2]), float(quat_wxyz[3]), float(quat_wxyz[0])]


def _gain_scale(value: float, reference: float) -> float:
    return float(np.clip(value / reference, MIN_GAIN_SCALE, 1.0))
