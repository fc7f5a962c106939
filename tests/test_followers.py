"""The low-cost followers (SO-101 on Feetech, Koch on Dynamixel) against their bus emulators,
through the robot server and RealArmEnv: calibration refusal, reset, steps with IK, the server's
limits, and a dropped serial link surfacing as a clear error."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import robot_infra.envs  # noqa: F401
import sim_envs  # noqa: F401  (headless GL before mujoco)
from robot_infra.calibration import ARMS, CalibrationError
from robot_infra.dynamixel.emulator import DynamixelEmulator
from robot_infra.envs.real_arm_env import RealArmEnv, make_config
from robot_infra.feetech.emulator import FeetechEmulator
from robot_infra.robot_server import (
    MotionLimits,
    RobotClient,
    RobotFault,
    RobotServer,
    RobotServerError,
    make_backend,
)
from sim_envs.kinematics import arm_kinematics

EMULATORS = {"feetech": FeetechEmulator, "dynamixel": DynamixelEmulator}
ZERO, HALF_RANGE = 2048, 1536  # every joint +-135 degrees around its reference reading


def write_calibration(path, kind: str, port: str) -> None:
    """A calibration file as robot_infra.tools.calibrate_arm writes it."""
    spec = ARMS[kind]
    motors = {name: {"id": motor_id, "zero_ticks": ZERO, "sign": 1, "min_ticks": ZERO - HALF_RANGE,
                     "max_ticks": ZERO + HALF_RANGE} for name, motor_id in spec.motors.items()}
    motors["gripper"].update(min_ticks=ZERO, max_ticks=ZERO + 900)
    path.write_text(json.dumps({
        "format": 1, "arm": kind, "bus": spec.bus, "port": port,
        "reference_posture": "every joint in the middle of its range, the gripper fully closed",
        "motors": motors, "gripper": {"motor": "gripper", "open_ticks": ZERO + 900, "closed_ticks": ZERO},
        "written_at": "2026-12-03T12:00:00+00:00",
    }))


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return value


@pytest.fixture(params=["so101", "koch"])
def follower(request, tmp_path):
    kind = request.param
    emulator = EMULATORS[ARMS[kind].bus](list(ARMS[kind].motors.values()))
    calibration = tmp_path / f"{kind}.json"
    write_calibration(calibration, kind, emulator.port)
    backend = make_backend(kind, port=emulator.port, calibration=str(calibration), control_hz=30.0)
    kin = arm_kinematics(kind)
    home = kin.fk(kin.home_qpos)[0]
    limits = MotionLimits(tuple(home - [0.06, 0.08, 0.06]), tuple(home + [0.06, 0.08, 0.08]), max_step=0.05)
    server = RobotServer(backend, port=0, limits=limits).start()
    yield kind, emulator, backend, server, home
    server.stop()
    backend.close()
    emulator.close()


def env_for(server, home, **overrides) -> RealArmEnv:
    config = make_config({
        "server_url": server.url, "request_timeout": 2.0, "control_hz": 10.0, "pos_scale": 0.02,
        "state_fields": ("tcp_pose", "tcp_vel", "gripper_pose"), "apply_impedance": False,
        "workspace_low": tuple(home - [0.05, 0.07, 0.05]), "workspace_high": tuple(home + [0.05, 0.07, 0.07]),
        "reset_position": tuple(home), "reset_tolerance": 0.01, "reset_timeout": 20.0,
        "reset_speed": 0.1, "open_gripper_on_reset": True, **overrides,
    })
    return RealArmEnv(config=config)


def test_follower_resets_steps_and_grips_through_the_server(follower):
    kind, emulator, backend, server, home = follower
    client = RobotClient(server.url, timeout=2.0, retries=0)
    health = client.health()
    assert health["backend"] == kind and health["missing_sensors"] == ["tcp_force", "tcp_torque"]
    state = client.joint_reset()
    assert np.allclose(state["q"], backend.home_qpos, atol=0.03)
    env = env_for(server, home)
    obs, _ = env.reset(seed=0)
    assert obs["state"].shape == (7 + 6 + 1,)
    start = env.state_layout.unpack(obs["state"])["tcp_pose"][:3].copy()
    for _ in range(10):  # +x, and close the gripper
        obs, _, _, _, info = env.step(np.array([1.0, 0.0, 0.0, 1.0], np.float32))
    fields = env.state_layout.unpack(obs["state"])
    moved = fields["tcp_pose"][:3] - start
    # 10 steps of 2 cm, clipped by the env's box at +5 cm: the tool went +x, not elsewhere.
    assert 0.03 < moved[0] < 0.065 and abs(moved[1]) < 0.01 and abs(moved[2]) < 0.02, moved
    wait_for(lambda: client.state()["gripper_pose"] > 0.9)  # closed (the emulated jaw meets nothing)
    assert client.state()["gripper_command"] == "close"
    env.close()


def test_the_server_keeps_the_follower_in_its_box_and_joint_limits(follower):
    kind, emulator, backend, server, home = follower
    client = RobotClient(server.url, timeout=2.0, retries=0)
    client.joint_reset()
    floor = server.limits.workspace_low[2]
    for _ in range(40):  # a client bug: "go 1 m below the table", again and again
        answer = client.set_pose([home[0], home[1], -1.0, 1.0, 0.0, 0.0, 0.0])
        time.sleep(0.02)
    assert np.isclose(answer["target"][2], floor) and "workspace" in answer["limited"]
    time.sleep(1.5)
    state = client.state()
    assert state["tcp_pose"][2] > floor - 0.01 and state["errors"] == []
    low, high = backend.joint_limits()
    assert np.all(np.asarray(state["q"]) >= low - 1e-6) and np.all(np.asarray(state["q"]) <= high + 1e-6)
    with pytest.raises(RobotServerError) as refused:
        client.joint_reset(qpos=(high + 0.2).tolist())
    assert refused.value.status == 400 and "limits" in refused.value.message


def test_a_dropped_serial_link_is_a_clear_error_not_a_hang(follower):
    kind, emulator, backend, server, home = follower
    client = RobotClient(server.url, timeout=2.0, retries=0)
    client.joint_reset()
    env = env_for(server, home, recover_errors=False)
    env.reset(seed=0)
    emulator.close()  # the USB cable is pulled
    state = wait_for(lambda: (s := client.state())["errors"] and s, timeout=20.0)
    assert "bus:" in state["errors"][0]
    started = time.monotonic()
    with pytest.raises(RobotServerError) as refused:
        client.set_pose(state["tcp_pose"])
    assert refused.value.status == 409 and "bus" in refused.value.message
    with pytest.raises(RobotServerError) as still:
        client.clear_errors()  # the bus is still gone: the errors stay, with the reason
    assert still.value.status == 409 and "still fails" in still.value.message
    assert time.monotonic() - started < 15.0
    env.close()


def test_a_step_rides_out_a_bus_that_is_silent_for_a_while_and_gives_up_after_recover_timeout(follower):
    """A bus that stops answering for a few seconds (a USB hiccup, a starved driver) puts the arm
    in error; a step keeps clearing it, with backoff, until the bus answers again, then moves.
    With recover_timeout 0 the same silence is an error at once."""
    kind, emulator, backend, server, home = follower
    client = RobotClient(server.url, timeout=5.0, retries=0)
    client.joint_reset()

    def silence(seconds):
        emulator.inject_fault("no_reply")
        wait_for(lambda: client.state()["errors"], timeout=20.0)
        healer = threading.Timer(seconds, emulator.inject_fault, args=(None,))
        healer.start()
        return healer

    env = env_for(server, home, request_timeout=5.0, recover_timeout=20.0)
    env.reset(seed=0)
    healer = silence(1.5)
    started = time.monotonic()
    try:
        _, _, _, _, info = env.step(np.array([0.0, 0.0, 1.0, 0.0], np.float32))
    finally:
        healer.join()
    assert time.monotonic() - started >= 1.0  # it waited for the bus, not a lucky early clear
    assert any("clear_errors refused" in line for line in info["robot_errors"]), info
    assert any("bus" in line for line in info["robot_errors"] if "clear_errors refused" not in line), info
    assert client.state()["errors"] == []

    impatient = env_for(server, home, request_timeout=5.0, recover_timeout=0.0)
    impatient.reset(seed=0)
    healer = silence(1.5)
    try:
        with pytest.raises(RobotServerError) as refused:
            impatient.step(np.array([0.0, 0.0, 1.0, 0.0], np.float32))
    finally:
        healer.join()
    assert refused.value.status == 409 and "still fails" in refused.value.message


def test_a_follower_without_a_calibration_is_refused(tmp_path):
    with FeetechEmulator(list(ARMS["so101"].motors.values())) as emulator:
        with pytest.raises(CalibrationError, match="calibrate_arm"):
            make_backend("so101", port=emulator.port, calibration=str(tmp_path / "missing.json"))
        with pytest.raises(ValueError, match="calibrate_arm"):
            make_backend("so101", port=emulator.port, calibration="")
        koch = tmp_path / "koch.json"
        write_calibration(koch, "koch", emulator.port)  # a Dynamixel arm's file on a Feetech arm
        with pytest.raises(CalibrationError):
            make_backend("so101", port=emulator.port, calibration=str(koch))


@pytest.mark.parametrize("kind", ["so101", "koch"])
def test_leader_arm_maps_hand_motion_to_tool_deltas(kind, tmp_path):
    from experiments.base import base_config
    from robot_infra.leader_arm import LeaderArm
    from serl_launcher.human.devices import device_from_config

    spec = ARMS[kind]
    with EMULATORS[spec.bus](list(spec.motors.values())) as emulator:
        calibration = tmp_path / f"{kind}_leader.json"
        write_calibration(calibration, kind, emulator.port)
        intervention = base_config().actor.intervention
        intervention.device = "leader_arm"
        intervention.leader_arm.update(arm=kind, port=emulator.port, calibration=str(calibration), pos_scale=0.02)
        leader = device_from_config(intervention, 4, make_expert=lambda: None)
        assert isinstance(leader, LeaderArm)
        kin = arm_kinematics(kind)
        mid = 0.5 * (kin.q_low + kin.q_high)  # the calibrated zero of every joint
        pan = spec.motors["shoulder_pan"]
        first = leader.get_action({})
        assert not first.intervening  # the first reading only sets the reference
        emulator.set_present(pan, ZERO + 80)  # a hand turns the base ~7 degrees
        emulator.set_present(spec.motors["gripper"], ZERO + 850)  # and opens the jaw
        moved = leader.get_action({})
        q1 = mid.copy()
        q1[0] += 80 * 2 * np.pi / 4096
        expected = (kin.fk(q1)[0] - kin.fk(mid)[0]) / 0.02
        assert moved.intervening
        assert np.allclose(moved.action[:3], np.clip(expected, -1, 1), atol=1e-3), (moved.action, expected)
        assert moved.action[-1] == -1.0  # open
        emulator.set_present(spec.motors["gripper"], ZERO + 20)  # squeezed shut
        assert leader.get_action({}).action[-1] == 1.0
        leader.close()
        with pytest.raises(CalibrationError, match="calibrate_arm"):
            LeaderArm(4, emulator.port, arm=kind)


def make_so101(tmp_path, emulator, **kwargs):
    calibration = tmp_path / "so101.json"
    write_calibration(calibration, "so101", emulator.port)
    return make_backend("so101", port=emulator.port, calibration=str(calibration), **kwargs)


def test_a_blocked_joint_reset_stops_where_the_arm_is_and_faults(tmp_path):
    with FeetechEmulator(list(ARMS["so101"].motors.values())) as emulator:
        backend = make_so101(tmp_path, emulator, reset_slack_s=1.0, joint_reset_speed=2.0)
        try:
            backend.joint_reset()
            emulator.servos[ARMS["so101"].motors["shoulder_pan"]].speed = 0.0  # the pan joint is held
            goal = backend.home_qpos.copy()
            goal[0] += 0.6
            with pytest.raises(RobotFault, match="timed out"):
                backend.joint_reset(goal)
            state = backend.state()
            assert any("joint reset" in e for e in state["errors"])
            pan = ARMS["so101"].motors["shoulder_pan"]
            # Held where it is (no snap back to the posture before the reset, no jump to the
            # reset's last goal once the joint comes free), and nothing is written after that.
            # (a sync write has no reply: wait until the emulator has taken it in)
            wait_for(lambda: abs(emulator.get(pan, "goal_position") - emulator.get(pan, "present_position")) <= 2)
            pan_goal = emulator.get(pan, "goal_position")
            time.sleep(0.5)
            assert emulator.get(pan, "goal_position") == pan_goal
            with pytest.raises(RobotFault, match="in error"):
                backend.set_pose_target(np.array([*state["tcp_pose"]]))
            emulator.servos[ARMS["so101"].motors["shoulder_pan"]].speed = 4096.0
            assert backend.clear_errors()
            held = np.asarray(backend.state()["q"])
            time.sleep(0.3)
            assert np.allclose(backend.state()["q"], held, atol=0.01)  # holds where it stopped
        finally:
            backend.close()


def test_clear_errors_after_a_power_loss_turns_the_torque_back_on(tmp_path):
    with FeetechEmulator(list(ARMS["so101"].motors.values())) as emulator:
        backend = make_so101(tmp_path, emulator)
        try:
            emulator.inject_fault("no_reply")
            wait_for(lambda: backend.state()["errors"])
            for servo in emulator.servos.values():  # power comes back: torque off
                servo.set("torque_enable", 0)
            emulator.inject_fault(None)
            assert any(e.startswith("bus:") for e in backend.clear_errors())
            assert all(emulator.get(i, "torque_enable") == 1 for i in emulator.servos)
            backend.joint_reset()  # and the arm moves again
        finally:
            backend.close()


def test_any_failure_in_the_control_step_is_an_error_not_a_dead_thread(tmp_path, monkeypatch):
    with FeetechEmulator(list(ARMS["so101"].motors.values())) as emulator:
        backend = make_so101(tmp_path, emulator)
        try:
            calls = {"n": 0}
            real = backend.arm.read_positions

            def flaky():
                calls["n"] += 1
                if calls["n"] == 3:
                    raise IndexError("list index out of range")  # e.g. an SDK bug on a short reply
                return real()

            monkeypatch.setattr(backend.arm, "read_positions", flaky)
            state = wait_for(lambda: (s := backend.state())["errors"] and s)
            assert state["errors"][0].startswith("control: IndexError")
            assert backend._thread.is_alive()
            assert backend.clear_errors()
            backend.joint_reset()
        finally:
            backend.close()
