"""The robot server: HTTP + JSON in front of one :class:`RobotBackend` (standard library only).

Endpoints (request and response bodies are JSON objects):

=======  ===============  ==========================================  =================================
method   path             body                                        answer
=======  ===============  ==========================================  =================================
GET      /                                                            the endpoint list
GET      /health                                                      ``ok``, backend facts, uptime
GET      /state                                                       the backend's state (RobotBackend)
POST     /pose            ``{"pose": [x, y, z, qx, qy, qz, qw]}``     ``ok``, ``target``
POST     /gripper         ``{"command": "open" | "close"}``           ``ok``, ``command``
GET      /impedance                                                   every impedance parameter
POST     /impedance       some of ``IMPEDANCE_LIMITS``' keys          every parameter now in force
POST     /reset           ``{"qpos": [7] (optional),                  the state once the arm is there
                          "scene": bool (optional)}``
POST     /clear_errors    (none)                                      ``cleared``: the errors removed
=======  ===============  ==========================================  =================================

Errors answer ``{"error": message}`` with status 400 (malformed JSON, a bad or out-of-range
value), 404 (unknown path), 405 (known path, wrong method), 409 (the arm is in error or busy:
POST /clear_errors), 413 (body too large), 501 (the backend cannot do it) or 500.

Commands are absolute (a pose, a gripper state, parameter values), so a client may resend one
whose answer it did not get without moving the arm twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from robot_infra.robot_server.backend import (
    GRIPPER_COMMANDS,
    NotSupported,
    RequestError,
    RobotBackend,
    RobotFault,
    validate_impedance,
    validate_pose,
    validate_qpos,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

Route = Callable[[dict[str, Any]], dict[str, Any]]


class RobotServer:
    """Serves `backend` on http://host:port. ``port=0`` picks a free port (see ``.port``).

    ``start()`` serves from a daemon thread; ``serve_forever()`` blocks; ``stop()`` closes the
    socket (the backend keeps running: a restarted server can serve it again).
    """

    def __init__(self, backend: RobotBackend, host: str = "127.0.0.1", port: int = 5000):
        self.backend = backend
        self._started = time.monotonic()
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/"): self._index,
            ("GET", "/health"): self._health,
            ("GET", "/state"): lambda body: backend.state(),
            ("POST", "/pose"): self._pose,
            ("POST", "/gripper"): self._gripper,
            ("GET", "/impedance"): lambda body: backend.get_impedance(),
            ("POST", "/impedance"): self._set_impedance,
            ("POST", "/reset"): self._reset,
            ("POST", "/clear_errors"): lambda body: {"cleared": backend.clear_errors()},
        }
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> RobotServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="robot-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        self._httpd.server_close()

    # ------------------------------------------------------------------ routes

    def _index(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"endpoints": [f"{method} {path}" for method, path in self.routes]}

    def _health(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **self.backend.describe(), "uptime_s": time.monotonic() - self._started}

    def _pose(self, body: dict[str, Any]) -> dict[str, Any]:
        pose = validate_pose(_require(body, "pose"))
        self.backend.set_pose_target(pose)
        return {"ok": True, "target": pose.tolist()}

    def _gripper(self, body: dict[str, Any]) -> dict[str, Any]:
        command = _require(body, "command")
        if command not in GRIPPER_COMMANDS:
            raise RequestError(f"gripper command must be one of {list(GRIPPER_COMMANDS)}, got {command!r}")
        self.backend.set_gripper(command)
        return {"ok": True, "command": command}

    def _set_impedance(self, body: dict[str, Any]) -> dict[str, Any]:
        params = validate_impedance(body, self.backend.get_impedance())
        return self.backend.set_impedance(params)

    def _reset(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"qpos", "scene"}
        if unknown:
            raise RequestError(f"unknown /reset fields {sorted(unknown)}; known: ['qpos', 'scene']")
        qpos = body.get("qpos")
        if qpos is not None:
            qpos = validate_qpos(qpos, self.backend.n_joints)
        scene = body.get("scene", False)
        if not isinstance(scene, bool):
            raise RequestError(f"'scene' must be true or false, got {scene!r}")
        self.backend.joint_reset(qpos, scene=scene)
        return self.backend.state()


def _require(body: dict[str, Any], key: str) -> Any:
    if key not in body:
        raise RequestError(f"missing field {key!r} in the request body")
    return body[key]


def _make_handler(server: RobotServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5.0  # seconds a client may stall mid-request before its thread gives up
        server_version = "serl-robot-server/1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            route = server.routes.get((method, path))
            if route is None:
                allowed = [m for m, p in server.routes if p == path]
                if allowed:
                    self._reply(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} {path} not allowed; use {' or '.join(allowed)}"},
                                headers={"Allow": ", ".join(allowed)})
                else:
                    endpoints = [f"{m} {p}" for m, p in server.routes]
                    self._reply(HTTPStatus.NOT_FOUND, {"error": f"unknown endpoint {method} {path}; endpoints: {endpoints}"})
                return
            try:
                body = self._read_body() if method == "POST" else {}
                self._reply(HTTPStatus.OK, route(body))
            except _TooLarge as error:
                self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": str(error)})
            except RequestError as error:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            except RobotFault as error:
                self._reply(HTTPStatus.CONFLICT, {"error": str(error)})
            except NotSupported as error:
                self._reply(HTTPStatus.NOT_IMPLEMENTED, {"error": str(error)})
            except Exception as error:  # the server must answer, whatever the backend raised
                log.exception("%s %s failed", method, path)
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"})

        def _read_body(self) -> dict[str, Any]:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError as error:
                raise RequestError("bad Content-Length header") from error
            if length > MAX_BODY_BYTES:
                raise _TooLarge(f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
            raw = self.rfile.read(length) if length > 0 else b""
            if not raw.strip():
                return {}
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise RequestError(f"malformed JSON body: {error}") from error
            if not isinstance(body, dict):
                raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
            return body

        def _reply(self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload, allow_nan=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


class _TooLarge(Exception):
    pass
