"""The robot server over loopback with the MuJoCo backend: endpoints, validation, errors and
recovery, joint reset, the entry point in a subprocess, and the Franka backend's missing-library
error. One simulated arm serves the whole module; each test starts it from a known state."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from services import start_service

from experiments.launch import stop
from robot_infra.robot_server import (
    DEFAULT_IMPEDANCE,
    MotionLimits,
    RobotClient,
    RobotConnectionError,
    RobotServer,
    RobotServerError,
    make_backend,
)

HOME_POSE = [0.45, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0]


def wait_for(predicate, timeout: float = 5.0, period: float = 0.02):
    """Polls `predicate` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(period)


@pytest.fixture(scope="module")
def backend():
    b = make_backend("mujoco", seed=0)
    yield b
    b.close()


# The module's server lets the arm reach below the table (to trip the reflex) and take long
# steps; the tests of the limits themselves start servers with the defaults.
WIDE_LIMITS = MotionLimits((0.2, -0.4, -0.2), (0.8, 0.4, 0.6), max_step=0.6, max_rot_step=3.2)


@pytest.fixture(scope="module")
def server(backend):
    s = RobotServer(backend, port=0, limits=WIDE_LIMITS).start()
    yield s
    s.stop()


@pytest.fixture
def default_server(backend, client):
    s = RobotServer(backend, port=0).start()  # the sim task's box, 0.1 m steps
    yield s
    s.stop()


@pytest.fixture
def client(server):
    c = RobotClient(server.url, timeout=2.0, retries=0)
    c.clear_errors()
    c.set_impedance(**DEFAULT_IMPEDANCE)
    c.gripper("open")
    c.set_pose(HOME_POSE)
    wait_for(lambda: np.linalg.norm(np.subtract(c.state()["tcp_pose"][:3], HOME_POSE[:3])) < 0.005)
    return c


def raw(server, method: str, path: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """A request without the client's checks: (status, JSON answer)."""
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2.0) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_index_and_state(client, server):
    health = client.health()
    assert health["ok"] is True and health["backend"] == "mujoco"
    status, index = raw(server, "GET", "/")
    assert status == 200 and "POST /pose" in index["endpoints"] and "POST /clear_errors" in index["endpoints"]

    state = client.state()
    sizes = {"tcp_pose": 7, "tcp_vel": 6, "tcp_force": 3, "tcp_torque": 3, "q": 7, "dq": 7, "target_pose": 7}
    for key, size in sizes.items():
        assert len(state[key]) == size, key
    assert abs(np.linalg.norm(state["tcp_pose"][3:]) - 1.0) < 1e-6
    assert state["errors"] == [] and state["gripper_command"] == "open"
    # The state streams: physics runs between two requests.
    t0 = state["time"]
    wait_for(lambda: client.state()["time"] > t0 + 0.05)


def test_pose_target_is_tracked(client):
    goal = [0.5, 0.05, 0.25, 1.0, 0.0, 0.0, 0.0]
    answer = client.set_pose(goal)
    assert answer["ok"] and np.allclose(answer["target"], goal)
    state = wait_for(lambda: (s := client.state()) and np.linalg.norm(np.subtract(s["tcp_pose"][:3], goal[:3])) < 0.003 and s)
    assert np.allclose(state["target_pose"], goal, atol=1e-9)
    # Gripper pointing down: the quaternion stays near (1, 0, 0, 0) up to sign.
    assert abs(state["tcp_pose"][3]) > 0.99


def test_gripper_closes_and_opens(client):
    client.gripper("close")
    wait_for(lambda: client.state()["gripper_pose"] > 0.95)
    assert client.state()["gripper_command"] == "close"
    client.gripper("open")
    wait_for(lambda: client.state()["gripper_pose"] < 0.05)


def test_impedance_round_trip(client, backend):
    assert client.impedance() == DEFAULT_IMPEDANCE
    updated = client.set_impedance(translational_stiffness=1000.0, translational_clip=0.01)
    assert updated == {**DEFAULT_IMPEDANCE, "translational_stiffness": 1000.0, "translational_clip": 0.01}
    assert client.impedance() == updated
    # Reflected in the simulated servos: half the stiffness, half the joints' kp.
    arm = backend._ik.actuator_ids
    assert np.allclose(backend.model.actuator_gainprm[arm, 0], 0.5 * backend._kp0)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"translational_stiffness": -1}, ["translational_stiffness", "[0, 5000]", "N/m", "-1"]),
        ({"rotational_clip": 5.0}, ["rotational_clip", "rad"]),
        ({"translational_damping": "high"}, ["translational_damping", "'high'"]),
        ({"translational_stiffness": True}, ["translational_stiffness"]),
        ({"stiffness": 100}, ["unknown impedance parameter 'stiffness'", "translational_stiffness"]),
        ({}, ["no impedance parameters"]),
    ],
)
def test_impedance_rejects_bad_values(client, server, body, words):
    status, answer = raw(server, "POST", "/impedance", json.dumps(body).encode())
    assert status == 400
    for word in words:
        assert word in answer["error"]
    assert client.impedance() == DEFAULT_IMPEDANCE  # nothing applied


def test_impedance_rejects_nan(client, server):
    status, answer = raw(server, "POST", "/impedance", b'{"translational_stiffness": NaN}')
    assert status == 400 and "translational_stiffness" in answer["error"]


@pytest.mark.parametrize(
    "method, path, data, status, words",
    [
        ("POST", "/pose", b"{not json", 400, ["malformed JSON"]),
        ("POST", "/pose", b"[1, 2]", 400, ["JSON object"]),
        ("POST", "/pose", b"{}", 400, ["missing field 'pose'"]),
        ("POST", "/pose", b'{"pose": [0.4, 0, 0.3]}', 400, ["7 numbers"]),
        ("POST", "/pose", b'{"pose": [0.4, 0, 0.3, 0, 0, 0, 0]}', 400, ["unit norm"]),
        ("POST", "/pose", b'{"pose": [0.4, 0, 0.3, 1, 0, 0, "x"]}', 400, ["finite numbers"]),
        ("POST", "/gripper", b'{"command": "squeeze"}', 400, ["'open'", "'close'"]),
        ("POST", "/reset", b'{"qpos": [0, 0]}', 400, ["7 joint angles"]),
        ("POST", "/reset", b'{"speed": 1}', 400, ["unknown /reset fields"]),
        ("GET", "/teleport", None, 404, ["unknown endpoint GET /teleport", "POST /pose"]),
        ("GET", "/pose", None, 405, ["use POST"]),
    ],
)
def test_bad_requests_get_clear_errors(client, server, method, path, data, status, words):
    got, answer = raw(server, method, path, data)
    assert got == status, answer
    for word in words:
        assert word in answer["error"]
    assert client.state()["errors"] == []  # a bad request never faults the arm


def test_reflex_error_and_clear_errors(client, server):
    # Drive the hand into the table: the contact force trips the reflex (150 N by default).
    client.set_pose([0.45, 0.2, -0.05, 1.0, 0.0, 0.0, 0.0])
    state = wait_for(lambda: (s := client.state())["errors"] and s, timeout=10.0)
    assert "cartesian_reflex" in state["errors"][0]
    # Moving is refused with 409 and a message saying what to do.
    with pytest.raises(RobotServerError) as refused:
        client.set_pose(HOME_POSE)
    assert refused.value.status == 409 and "/clear_errors" in refused.value.message
    # The arm stopped driving, so the contact relaxes.
    wait_for(lambda: np.linalg.norm(client.state()["tcp_force"]) < 10.0)
    cleared = client.clear_errors()
    assert cleared and "cartesian_reflex" in cleared[0]
    assert client.state()["errors"] == []
    client.set_pose(HOME_POSE)  # accepted again
    wait_for(lambda: client.state()["tcp_pose"][2] > 0.25)
    assert client.clear_errors() == []


def test_joint_reset_goes_home_and_resets_scene(client, backend):
    client.set_pose([0.55, -0.15, 0.2, 1.0, 0.0, 0.0, 0.0])
    wait_for(lambda: client.state()["tcp_pose"][1] < -0.14)
    cube_before = backend.data.qpos[backend._cube_qpos : backend._cube_qpos + 3].copy()
    state = client.joint_reset(scene=True)
    assert np.allclose(state["q"], backend.home_qpos, atol=0.02)
    assert np.linalg.norm(np.subtract(state["tcp_pose"][:3], [0.448, 0.0, 0.303])) < 0.01
    cube_after = backend.data.qpos[backend._cube_qpos : backend._cube_qpos + 3]
    assert np.linalg.norm(cube_after[:2] - cube_before[:2]) > 1e-3  # put somewhere new
    # After the reset the arm holds where it arrived.
    assert np.allclose(state["target_pose"][:3], state["tcp_pose"][:3], atol=1e-3)


def test_client_errors_are_not_retried(server):
    client = RobotClient(server.url, timeout=1.0, retries=3, backoff=1.0)
    started = time.monotonic()
    with pytest.raises(RobotServerError) as error:
        client.request("GET", "/nowhere")
    assert time.monotonic() - started < 0.9  # no backoff sleeps: a 404 stays a 404
    assert error.value.status == 404 and server.url in str(error.value)


def test_entry_point_serves_in_a_subprocess(subprocess_env, tmp_path):
    processes = []
    try:
        line = start_service([sys.executable, "-m", "robot_infra.robot_server", "--backend", "mujoco", "--port", "0",
                              "--exp_name", "real_arm_template"],
                             "listening on http://127.0.0.1:", tmp_path / "server.log", subprocess_env, processes)
        url = line.rsplit(" ", 1)[-1]
        health = RobotClient(url, timeout=5.0, retries=0).health()
        assert health["ok"] and health["backend"] == "mujoco"
        from experiments.real_arm_template.config import get_config

        env = get_config().env  # the experiment's box, not the sim task's
        assert health["limits"]["workspace_low"] == list(env.workspace_low)
        assert health["limits"]["workspace_high"] == list(env.workspace_high)
    finally:
        stop(processes, timeout=10)


@pytest.mark.skipif(importlib.util.find_spec("franky") is not None, reason="franky is installed here")
def test_franka_backend_without_franky_names_the_package():
    with pytest.raises(ImportError, match="pip install franky-control"):
        make_backend("franka", robot_ip="127.0.0.1")


def test_unknown_backend():
    with pytest.raises(ValueError, match="mujoco"):
        make_backend("ur5")


# ---------------------------------------------------------------------- what the server protects


def test_motion_limits_step_rotation_and_box():
    limits = MotionLimits((0.3, -0.2, 0.05), (0.6, 0.2, 0.4), max_step=0.1, max_rot_step=0.5)
    tcp = np.array([0.45, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
    # Inside the box and within a step of the tool: untouched.
    pose, limited = limits.apply(np.array([0.5, 0.05, 0.25, 1.0, 0.0, 0.0, 0.0]), tcp)
    assert limited == [] and np.allclose(pose[:3], [0.5, 0.05, 0.25])
    # Far below the table: a 0.1 m step straight down, then the box's floor.
    pose, limited = limits.apply(np.array([0.45, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0]), tcp)
    assert limited == ["step"] and np.allclose(pose[:3], [0.45, 0.0, 0.2])
    tcp_low = np.array([0.45, 0.0, 0.08, 1.0, 0.0, 0.0, 0.0])
    pose, limited = limits.apply(np.array([0.45, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0]), tcp_low)
    assert limited == ["step", "workspace"] and np.allclose(pose[:3], [0.45, 0.0, 0.05])
    # A reset's waypoint far from a lagging tool but a small step from the tracked target passes.
    target = np.array([0.55, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
    pose, limited = limits.apply(np.array([0.58, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0]), tcp, target)
    assert limited == [] and np.isclose(pose[0], 0.58)
    # A half turn about z is cut to 0.5 rad, about the same axis.
    half_turn = np.array([0.45, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0])  # x-down rotated by pi about z
    pose, limited = limits.apply(half_turn, tcp)
    assert limited == ["rotation_step"]
    relative_w = abs(float(np.dot(pose[3:], tcp[3:])))  # cos(angle / 2) between unit quaternions
    assert np.isclose(2.0 * np.arccos(min(1.0, relative_w)), 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="below"):
        MotionLimits((0.3, 0.0, 0.0), (0.2, 1.0, 1.0))


def test_a_target_below_the_table_never_reaches_it(client, default_server, backend):
    fenced = RobotClient(default_server.url, timeout=2.0, retries=0)
    answer = fenced.set_pose([0.45, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0])
    floor = default_server.limits.workspace_low[2]
    assert answer["target"][2] >= floor and "step" in answer["limited"]
    for _ in range(30):  # a client bug that keeps asking: the target walks down to the floor, no further
        answer = fenced.set_pose([0.45, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0])
    assert np.isclose(answer["target"][2], floor) and "workspace" in answer["limited"]
    time.sleep(1.0)
    state = fenced.state()
    assert state["errors"] == [] and state["tcp_pose"][2] > floor - 0.01  # no reflex, no push into the table
    counts = fenced.health()["counts"]
    assert counts["limited_workspace"] >= 1 and counts["limited_step"] >= 1


@pytest.mark.parametrize("pose", [[100, 100, 100, 1, 0, 0, 0], [1e300, 0, 0.3, 1, 0, 0, 0]])
def test_implausible_positions_are_refused(client, default_server, pose):
    got, answer = raw(default_server, "POST", "/pose", json.dumps({"pose": pose}).encode())
    assert got == 400 and "no arm reaches there" in answer["error"]


def test_joint_reset_outside_the_joint_limits_is_refused(client, server, backend):
    low, high = backend.joint_limits()
    qpos = backend.home_qpos.copy()
    qpos[3] = high[3] + 0.5
    got, answer = raw(server, "POST", "/reset", json.dumps({"qpos": qpos.tolist()}).encode())
    assert got == 400 and "qpos[3]" in answer["error"] and "limits" in answer["error"]
    assert np.allclose(client.state()["q"][3], backend.home_qpos[3], atol=0.3)  # it did not move there


@pytest.mark.parametrize(
    "data, headers, status",
    [
        (b'{"pose": [' + b"9" * 400 + b', 0, 0.3, 1, 0, 0, 0]}', {}, 400),  # a 400-digit integer
        (b'{"pose": [' + b"9" * 5000 + b"]}", {}, 400),  # past Python's integer-parsing limit
        (b"[" * 30000 + b"]" * 30000, {}, 400),  # nested too deeply for the parser
        (b'{"pose": {"a": ' * 3000 + b"1" + b"}" * 3001, {}, 400),
        (b"\xff\xfe{}", {}, 400),  # not UTF-8
        (b'{"pose": [0.45, 0, 0.3, 1, 0, 0, 0]}', {"Content-Length": "-5"}, 400),
        (b'{"pose": [0.45, 0, 0.3, 1, 0, 0, 0]}', {"Content-Length": "abc"}, 400),
        (b"x" * 70000, {}, 413),
        (b'{"pose": [0.45, 0, 0.3, 1, 0, 0, 0]}', {"Content-Length": "\u00b2"}, 400),  # a digit to isdigit()
    ],
)
def test_malformed_bodies_get_a_4xx_never_a_500(client, server, data, headers, status):
    got, answer = raw(server, "POST", "/pose", data, headers)
    assert got == status, answer
    assert len(answer["error"]) < 1000  # the message does not echo the body
    assert client.state()["errors"] == []


def test_a_body_shorter_than_its_content_length_gets_a_4xx(client, server):
    import socket

    with socket.create_connection((server.host, server.port), timeout=10.0) as sock:
        sock.sendall(b"POST /pose HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pose\": ")
        sock.shutdown(socket.SHUT_WR)  # the client gives up: the rest never comes
        chunks = []
        while chunk := sock.recv(4096):  # headers and body may come in separate segments
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.0 400") and "body ended after" in reply


def test_fifty_concurrent_clients_all_get_answers(client, server):
    failures: list[str] = []
    answered = []

    def one_client(k: int) -> None:
        c = RobotClient(server.url, timeout=5.0, retries=2)
        for i in range(20):
            try:
                if i % 2:
                    c.state()
                else:
                    c.set_pose(HOME_POSE)
                answered.append(1)
            except (RobotConnectionError, RobotServerError) as error:
                failures.append(str(error))

    threads = [threading.Thread(target=one_client, args=(k,)) for k in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == [] and len(answered) == 1000


def test_a_token_is_required_when_set(backend, client):
    secured = RobotServer(backend, port=0, token="s3cret-token").start()
    try:
        got, answer = raw(secured, "GET", "/state")
        assert got == 401 and "ROBOT_SERVER_TOKEN" in answer["error"]
        got, _ = raw(secured, "GET", "/state", headers={"Authorization": "Bearer wrong"})
        assert got == 401
        got, _ = raw(secured, "POST", "/pose", b'{"pose": [0.45, 0, 0.3, 1, 0, 0, 0]}',
                     headers={"Authorization": "Bearer wrong"})
        assert got == 401
        good = RobotClient(secured.url, timeout=2.0, retries=0, token="s3cret-token")
        assert "s3cret" not in repr(good)
        assert good.state()["errors"] == [] and good.health()["counts"]["unauthorized"] == 3
        with pytest.raises(RobotServerError) as refused:
            RobotClient(secured.url, timeout=2.0, retries=3, backoff=1.0, token="").state()
        assert refused.value.status == 401  # not retried
    finally:
        secured.stop()


def test_the_token_comes_from_the_environment(backend, client, monkeypatch):
    secured = RobotServer(backend, port=0, token="from-env").start()
    try:
        monkeypatch.setenv("ROBOT_SERVER_TOKEN", "from-env")
        assert RobotClient(secured.url, timeout=2.0, retries=0).state()["errors"] == []
    finally:
        secured.stop()


def test_binding_beyond_loopback_needs_a_token(backend):
    with pytest.raises(ValueError, match="ROBOT_SERVER_TOKEN"):
        RobotServer(backend, host="0.0.0.0", port=0)
    exposed = RobotServer(backend, host="0.0.0.0", port=0, token="t")
    exposed.stop()


def test_entry_point_refuses_an_open_bind_without_a_token(subprocess_env):
    env = {k: v for k, v in subprocess_env.items() if k != "ROBOT_SERVER_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "robot_infra.robot_server", "--backend", "mujoco", "--port", "0", "--host", "0.0.0.0"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode != 0 and "ROBOT_SERVER_TOKEN" in result.stderr + result.stdout


def test_a_joint_reset_that_ends_outside_the_box_is_refused(client, default_server, backend):
    qpos = [0.0, 1.7, 0.0, -0.3, 0.0, 3.0, 0.78]  # inside every joint limit, the tool at x ~ 0.9 m
    assert not default_server.limits.contains(backend.tool_position(np.array(qpos)))
    got, answer = raw(default_server, "POST", "/reset", json.dumps({"qpos": qpos}).encode())
    assert got == 400 and "outside the workspace box" in answer["error"]


def test_other_methods_get_a_json_answer(client, server):
    got, answer = raw(server, "PUT", "/pose", b"{}")
    assert got == 405 and "use POST" in answer["error"]
    got, answer = raw(server, "DELETE", "/nowhere")
    assert got == 404 and "unknown endpoint" in answer["error"]


def test_a_token_of_white_space_is_refused(backend):
    with pytest.raises(ValueError, match="white space"):
        RobotServer(backend, port=0, token="two words")
    with pytest.raises(ValueError, match="ROBOT_SERVER_TOKEN"):
        RobotServer(backend, host="0.0.0.0", port=0, token="   ")


def test_connections_past_the_cap_get_a_503_at_once(backend, client):
    import socket

    capped = RobotServer(backend, port=0).start()
    capped._httpd._slots = threading.BoundedSemaphore(2)  # the cap (MAX_CONNECTIONS), made small
    idle = [socket.create_connection((capped.host, capped.port), timeout=10.0) for _ in range(2)]
    try:
        time.sleep(0.3)  # both accepted and holding a thread each (slow clients sending nothing)
        got, answer = raw(capped, "GET", "/state")
        assert got == 503 and "retry" in answer["error"]
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    try:
        assert RobotClient(capped.url, timeout=5.0, retries=3).state()["errors"] == []
    finally:
        capped.stop()
