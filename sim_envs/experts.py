"""Scripted experts: pick-cube (approach, descend, grasp, lift), pick-and-place (the same, then carry
over the bin and let go) and peg insertion (touch down near the hole, find it by force, push in).

Each stands in for a person wherever there is none (demo recording, the default pipeline, tests) and
speaks the intervention-device interface of :mod:`serl_launcher.human.base`. It is closed-loop and
decides its phase from the simulator's state each step, so it can take over from a policy in any
state (cube knocked away, gripper closed on nothing) and still finish the task. It reads
privileged simulator state (the cube's or the hole's position), which is why it lives next to
the envs.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from serl_launcher import conventions
from serl_launcher.human.base import DeviceAction
from sim_envs.pick_cube_base import PickCubeEnv


class PickCubeExpert:
    """Proposes pick-cube actions; takes over on every step it is asked.

    Args:
        env: a pick-cube env (:class:`~sim_envs.pick_cube_base.PickCubeEnv`: the Panda's or the
            SO-101's; wrappers allowed, the expert reads ``env.unwrapped``).
        noise: standard deviation of Gaussian noise added to the translation commands (in action
            units) while the gripper is open, for diverse demonstrations.
        seed: seed of the noise generator.
        hover_height: metres above the cube at which the gripper aligns before descending.
        xy_tolerance: horizontal misalignment (metres) below which the gripper descends fully;
            it closes once within twice this and near grasp height.
        grasp_wait: steps to let the fingers close before judging the grasp.
    """

    def __init__(
        self,
        env: gym.Env,
        noise: float = 0.0,
        seed: int | None = None,
        hover_height: float = 0.06,
        xy_tolerance: float = 0.005,
        grasp_wait: int = 2,
    ):
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, PickCubeEnv) or not unwrapped.HAS_CUBE:
            raise TypeError(
                "PickCubeExpert needs a pick-cube env (PandaPickCubeEnv, SO101PickCubeEnv), "
                f"got {type(unwrapped).__name__}"
            )
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self._env = unwrapped
        self.noise = noise
        self.hover_height = hover_height
        self.xy_tolerance = xy_tolerance
        self.grasp_wait = grasp_wait
        self._rng = np.random.default_rng(seed)
        self._closed_steps = 0
        self._rotations = unwrapped.config.action_mode == "xyz_rpy"

    def reset(self) -> None:
        self._closed_steps = 0

    def close(self) -> None:
        pass

    def get_action(self, observation: dict[str, np.ndarray] | None = None) -> DeviceAction:
        env = self._env
        tcp, cube = env.tcp_pos(), env.cube_pos()
        grasp_z = cube[2]
        xy_error = np.linalg.norm(cube[:2] - tcp[:2])

        if env.gripper_closed:
            self._closed_steps += 1
            if self._closed_steps <= self.grasp_wait:
                target, grip = tcp, conventions.GRIPPER_CLOSE  # let the fingers close
            elif env.is_grasped():
                target, grip = self._holding_target(tcp)
            else:  # closed on nothing: open and back off upwards
                target, grip = tcp + np.array([0.0, 0.0, 0.03]), conventions.GRIPPER_OPEN
        else:
            self._closed_steps = 0
            grip = conventions.GRIPPER_OPEN
            hover_z = grasp_z + self.hover_height
            if tcp[2] < grasp_z + 0.035 and xy_error > 0.02:
                # Fingers low and beside the cube: rise before moving sideways.
                target = np.array([tcp[0], tcp[1], hover_z])
            else:
                # Glide down as the alignment improves: hover when far, grasp height when aligned.
                descent = np.clip((xy_error - self.xy_tolerance) / 0.02, 0.0, 1.0)
                target = np.array([cube[0], cube[1], grasp_z + self.hover_height * descent])
                if xy_error < 2 * self.xy_tolerance and tcp[2] - grasp_z < 0.008:
                    grip = conventions.GRIPPER_CLOSE

        return self._action(target, grip, noisy=not env.gripper_closed)  # steady hands while holding

    def _holding_target(self, tcp: np.ndarray) -> tuple[np.ndarray, float]:
        """(tool target, gripper command) once the cube is held: lift it to a fixed height above
        its resting place (not above where it is now, which would keep rising with the cube when
        success does not end the episode)."""
        env = self._env
        lift_z = env.cube_pos()[2] - env.cube_lift() + env.config.lift_height + 0.04
        return np.array([tcp[0], tcp[1], lift_z]), conventions.GRIPPER_CLOSE

    def _action(self, target: np.ndarray, grip: float, noisy: bool) -> DeviceAction:
        env = self._env
        translation = np.clip((target - env.tcp_pos()) / env.config.pos_scale, -1.0, 1.0)
        if self.noise > 0 and noisy:
            translation = np.clip(translation + self._rng.normal(0.0, self.noise, 3), -1.0, 1.0)
        rotation = [np.zeros(3)] if self._rotations else []
        action = np.concatenate([translation, *rotation, [grip]]).astype(np.float32)
        return DeviceAction(action=action, intervening=True)


class PickPlaceExpert(PickCubeExpert):
    """Picks the cube of :class:`~sim_envs.panda_pick_place.PandaPickPlaceEnv` (as
    :class:`PickCubeExpert`), lifts it above the bin's rim, carries it over the bin and lets go;
    with the cube in the bin it rises and waits there, open. Arguments as :class:`PickCubeExpert`,
    plus `carry_clearance`: metres between the cube's bottom and the rim while carrying."""

    def __init__(self, env: gym.Env, noise: float = 0.0, seed: int | None = None, carry_clearance: float = 0.03,
                 **kwargs):
        from sim_envs.panda_pick_place import PandaPickPlaceEnv

        if not isinstance(env.unwrapped, PandaPickPlaceEnv):
            raise TypeError(f"PickPlaceExpert needs a PandaPickPlaceEnv, got {type(env.unwrapped).__name__}")
        super().__init__(env, noise=noise, seed=seed, **kwargs)
        self.carry_clearance = carry_clearance
        self.reset()

    def get_action(self, observation: dict[str, np.ndarray] | None = None) -> DeviceAction:
        env = self._env
        if env.cube_in_bin() and not env.is_grasped():  # placed: rise clear of the bin, open, and wait
            tcp = env.tcp_pos()
            self._closed_steps = 0
            rest = np.array([tcp[0], tcp[1], env.bin_pos()[2] + env.config.bin_wall_height + 0.08])
            return self._action(rest, conventions.GRIPPER_OPEN, noisy=False)
        return super().get_action(observation)

    def _holding_target(self, tcp: np.ndarray) -> tuple[np.ndarray, float]:
        """Up to carrying height where it is, then over the bin at that height, then let go."""
        env = self._env
        cube, floor = env.cube_pos(), env.bin_pos()
        # The tool is at the cube's centre while it holds it: the cube's bottom clears the rim by
        # carry_clearance at this tool height.
        carry_z = floor[2] + env.config.bin_wall_height + self.carry_clearance + (tcp[2] - cube[2]) + 0.02
        xy_error = np.linalg.norm(floor[:2] - tcp[:2])
        if tcp[2] < carry_z - 0.01 and xy_error > 0.01:
            return np.array([tcp[0], tcp[1], carry_z]), conventions.GRIPPER_CLOSE
        moved, self._last_tcp = np.linalg.norm(tcp - self._last_tcp), tcp
        if xy_error > 0.01 or moved > 0.004:  # let go over the bin, and only once still there
            return np.array([floor[0], floor[1], carry_z]), conventions.GRIPPER_CLOSE
        return tcp, conventions.GRIPPER_OPEN

    def reset(self) -> None:
        super().reset()
        self._last_tcp = np.full(3, np.inf)


class PegInsertExpert:
    """Inserts the peg of :class:`~sim_envs.panda_peg_insert.PandaPegInsertEnv` by touch.

    It knows the hole's position only to within `estimate_error` (uniform per axis, drawn each
    episode: a camera's estimate), so it finds the hole with the force/torque reading in the
    state: it lowers the peg over the estimate until the board pushes back (``tcp_force`` z above
    `contact_force`), then presses lightly while moving along an outward spiral around the
    estimate until the tip drops into the hole, then pushes in, moving away from the walls'
    sideways push.

    Args:
        env: a peg-insertion env (wrappers allowed).
        noise: standard deviation of Gaussian noise on the translation commands (action units)
            while the peg is above the board, for diverse demonstrations.
        seed: seed of the estimate and noise generator.
        estimate_error: metres, the largest error of the expert's idea of the hole's centre.
        contact_force: N, the upward force that means the peg is on the board.
        press: metres below the tip's height each step targets while searching (the press force
            is about the arm's stiffness times this).
        spiral_pitch: metres the spiral widens per turn; about the hole's clearance.
        spiral_step: metres along the spiral per step.
    """

    def __init__(self, env: gym.Env, noise: float = 0.0, seed: int | None = None,
                 estimate_error: float = 0.002, contact_force: float = 3.0, press: float = 0.0006,
                 spiral_pitch: float = 0.0008, spiral_step: float = 0.0008):
        from sim_envs.panda_peg_insert import PandaPegInsertEnv

        unwrapped = env.unwrapped
        if not isinstance(unwrapped, PandaPegInsertEnv):
            raise TypeError(f"PegInsertExpert needs a PandaPegInsertEnv, got {type(unwrapped).__name__}")
        if noise < 0 or estimate_error < 0:
            raise ValueError(f"noise and estimate_error must be >= 0, got {noise} and {estimate_error}")
        self._env = unwrapped
        self.noise, self.estimate_error, self.contact_force = noise, estimate_error, contact_force
        self.press, self.spiral_pitch, self.spiral_step = press, spiral_pitch, spiral_step
        self._rng = np.random.default_rng(seed)
        self._rotations = unwrapped.config.action_mode == "xyz_rpy"
        self.reset()

    def reset(self) -> None:
        self._estimate_offset = self._rng.uniform(-self.estimate_error, self.estimate_error, 2)
        self._angle = None  # the spiral's angle once searching (None: not touched down yet)

    def close(self) -> None:
        pass

    def get_action(self, observation: dict[str, np.ndarray] | None = None) -> DeviceAction:
        env = self._env
        force = env.tcp_wrench()[0]  # what the state's tcp_force holds
        tip, hole = env.peg_tip(), env.hole_pos()
        estimate = hole[:2] + self._estimate_offset
        depth = hole[2] - tip[2]  # > 0: the tip is below the board's top, so in the hole
        if depth > 0.0003:  # dropping in (on the board it sits at 0): push down, yielding to the walls' push
            target = tip + np.array([*(0.00005 * force[:2]), -0.006])
        elif self._angle is None and force[2] < self.contact_force:
            # Above the board: over the estimate, then down (slowly for the last centimetre).
            xy_error = np.linalg.norm(estimate - tip[:2])
            down = 0.0 if xy_error > 0.002 else (0.01 if depth < -0.01 else 0.002)
            target = np.array([*estimate, tip[2] - down])
        else:  # on the board: press and follow the spiral outward until the tip drops
            self._angle = 0.0 if self._angle is None else self._angle
            radius = self.spiral_pitch * self._angle / (2 * np.pi)
            self._angle += self.spiral_step / max(radius, self.spiral_step)
            radius = self.spiral_pitch * self._angle / (2 * np.pi)
            point = estimate + radius * np.array([np.cos(self._angle), np.sin(self._angle)])
            target = np.array([*point, tip[2] - self.press])
        translation = np.clip((target - tip) / env.config.pos_scale, -1.0, 1.0)
        if self.noise > 0 and self._angle is None:
            translation = np.clip(translation + self._rng.normal(0.0, self.noise, 3), -1.0, 1.0)
        rotation = [np.zeros(3)] if self._rotations else []
        action = np.concatenate([translation, *rotation, [conventions.GRIPPER_CLOSE]]).astype(np.float32)
        return DeviceAction(action=action, intervening=True)


def run_expert_episode(
    env: gym.Env,
    expert: PickCubeExpert | PickPlaceExpert | PegInsertExpert,
    seed: int | None = None,
    render: bool = False,
) -> dict:
    """Runs one episode with the expert in control. Returns success, length and (if `render`) frames."""
    obs, _ = env.reset(seed=seed)
    expert.reset()
    frames = [env.render()] if render else []
    for step in range(1, 10**6):
        obs, _, terminated, truncated, info = env.step(expert.get_action(obs).action)
        if render:
            frames.append(env.render())
        if terminated or truncated:
            return {"success": bool(info["success"]), "length": step, "frames": frames}
    raise AssertionError("unreachable")


def collect_expert_demos(
    env: gym.Env, num_successes: int, noise: float = 0.1, seed: int = 0, max_episodes: int | None = None
) -> list[dict]:
    """Transitions of `num_successes` successful expert episodes (failed ones are dropped),
    marked ``intervened=True``: the expert was in control."""
    from serl_launcher.utils.rollouts import record_demos

    return record_demos(env, PickCubeExpert(env, noise=noise, seed=seed), num_successes, seed, max_episodes)
