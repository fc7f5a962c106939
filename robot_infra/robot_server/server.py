"""The robot server: HTTP + JSON in front of one :class:`RobotBackend` (standard library only).

Endpoints (request and response bodies are JSON objects):

=======  ===============  ==========================================  =================================
method   path             body                                        answer
=======  ===============  ==========================================  =================================
GET      /                                                            the endpoint list
GET      /health                                                      ``ok``, backend facts, uptime
GET      /state                                                       the backend's state (RobotBackend)
POST     /pose            ``{"pose": [x, y, z, qx, qy, qz, qw]}``     ``ok``, ``target``, ``limited``
POST     /gripper         ``{"command": "open" | "close"}``           ``ok``, ``command``
GET      /impedance                                                   every impedance parameter
POST     /impedance       some of ``IMPEDANCE_LIMITS``' keys          every parameter now in force
POST     /reset           ``{"qpos": [7] (optional),                  the state once the arm is there
                          "scene": bool (optional)}``
POST     /clear_errors    (none)                                      ``cleared``: the errors removed
=======  ===============  ==========================================  =================================

Errors answer ``{"error": message}`` with status 400 (malformed JSON, a bad or out-of-range
value), 401 (token missing or wrong), 404 (unknown path), 405 (known path, wrong method), 409 (the
arm is in error or busy: POST /clear_errors), 408 (the body did not arrive), 411 (a chunked
body), 413 (body too large), 501 (the backend cannot do it), 503 (more than MAX_CONNECTIONS connections
at once: retry), or 500 only when the backend itself failed: no input reaches a 500.

The server protects the arm from its clients:

- every pose target goes through :class:`~robot_infra.robot_server.backend.MotionLimits` (a
  step limit from where the tool is, then the workspace box): clamped, counted, and named in the
  answer's ``limited`` list; a joint reset's ``qpos`` must lie inside the backend's joint limits
  and, where the backend has a kinematic model, put the tool inside the box (the joint-space path
  between the two postures is not checked);
- a shared token (``Authorization: Bearer <token>``) is required on every request when the
  server has one; binding anything but a loopback address without a token is refused, so an arm
  is never open to a whole network by accident. The token is compared in constant time and
  never logged;
- a listen backlog of :data:`LISTEN_BACKLOG` and one thread per connection, so bursts of many
  clients queue instead of being refused.

Commands are absolute (a pose, a gripper state, parameter values), so a client may resend one
whose answer it did not get without moving the arm twice.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from robot_infra.robot_server.backend import (
    GRIPPER_COMMANDS,
    MotionLimits,
    NotSupported,
    RequestError,
    RobotBackend,
    RobotFault,
    short_repr,
    validate_impedance,
    validate_pose,
    validate_qpos,
)
from robot_infra.robot_server.client import TOKEN_ENV

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
LISTEN_BACKLOG = 256  # connections the kernel queues while every thread is busy (http.server: 5)
MAX_CONNECTIONS = 128  # connections served at once; past it: 503 at once (the client retries)
BODY_DEADLINE_S = 10.0  # a request body must arrive whole within this, however it trickles in
_BUSY = json.dumps({"error": f"the server is serving {MAX_CONNECTIONS} connections; retry"}).encode()
_BUSY_REPLY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
               b"Content-Length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)

Route = Callable[[dict[str, Any]], dict[str, Any]]


class RobotServer:
    """Serves `backend` on http://host:port. ``port=0`` picks a free port (see ``.port``).

    ``start()`` serves from a daemon thread; ``serve_forever()`` blocks; ``stop()`` closes the
    socket (the backend keeps running: a restarted server can serve it again).

    Args:
        limits: what pose commands may ask for; default: the backend's own
            (``backend.default_limits()``), and a backend without any (a real arm) refuses to
            be served without them.
        token: the shared secret every request must carry (None or "": none). Required when
            `host` is not a loopback address.
    """

    def __init__(
        self,
        backend: RobotBackend,
        host: str = "127.0.0.1",
        port: int = 5000,
        limits: MotionLimits | None = None,
        token: str | None = None,
    ):
        limits = limits if limits is not None else backend.default_limits()
        if limits is None:
            raise ValueError(
                f"the {backend.name} backend needs motion limits: give the experiment "
                "(--exp_name, whose env.workspace_low/high become the box) or --workspace_low and "
                "--workspace_high, so that no client can drive the arm outside its workspace"
            )
        if not (token or "").strip() and not _is_loopback(host):
            raise ValueError(
                f"binding {host!r} serves the arm to other machines: set a shared token "
                f"({TOKEN_ENV}=... in the environment of the server and of every actor), or bind 127.0.0.1"
            )
        self.backend, self.limits = backend, limits
        token = (token or "").strip()
        if any(c.isspace() for c in token):
            raise ValueError(f"the shared token ({TOKEN_ENV}) must not contain white space")
        self._token = token.encode()
        self.counts: Counter[str] = Counter()  # limits applied and requests refused, by kind
        self._counts_lock = threading.Lock()
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
        self._httpd = _HTTPServer((host, port), _make_handler(self))
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
        with self._counts_lock:
            counts = dict(self.counts)
        return {
            "ok": True, **self.backend.describe(), "uptime_s": time.monotonic() - self._started,
            "limits": self.limits.describe(), "token_required": bool(self._token), "counts": counts,
        }

    def count(self, kind: str) -> None:
        with self._counts_lock:
            self.counts[kind] += 1

    def authorized(self, header: str | None) -> bool:
        if not self._token:
            return True
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    def _pose(self, body: dict[str, Any]) -> dict[str, Any]:
        pose = validate_pose(_require(body, "pose"))
        state = self.backend.state()
        pose, limited = self.limits.apply(pose, state["tcp_pose"], state.get("target_pose"))
        self.backend.set_pose_target(pose)
        for kind in limited:
            self.count(f"limited_{kind}")
        return {"ok": True, "target": pose.tolist(), "limited": limited}

    def _gripper(self, body: dict[str, Any]) -> dict[str, Any]:
        command = _require(body, "command")
        if command not in GRIPPER_COMMANDS:
            raise RequestError(f"gripper command must be one of {list(GRIPPER_COMMANDS)}, got {short_repr(command)}")
        self.backend.set_gripper(command)
        return {"ok": True, "command": command}

    def _set_impedance(self, body: dict[str, Any]) -> dict[str, Any]:
        params = validate_impedance(body, self.backend.get_impedance())
        return self.backend.set_impedance(params)

    def _reset(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"qpos", "scene"}
        if unknown:
            raise RequestError(f"unknown /reset fields {short_repr(sorted(unknown))}; known: ['qpos', 'scene']")
        qpos = body.get("qpos")
        if qpos is not None:
            qpos = validate_qpos(qpos, self.backend.n_joints, self.backend.joint_limits())
            tool = self.backend.tool_position(qpos)
            if tool is not None and not self.limits.contains(tool):
                raise RequestError(
                    f"qpos puts the tool at {np.round(tool, 3).tolist()}, outside the workspace box "
                    f"{self.limits.workspace_low}..{self.limits.workspace_high}")
        scene = body.get("scene", False)
        if not isinstance(scene, bool):
            raise RequestError(f"'scene' must be true or false, got {short_repr(scene)}")
        self.backend.joint_reset(qpos, scene=scene)
        return self.backend.state()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: whatever it resolves to now may change
        return False


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most MAX_CONNECTIONS of them (a flood of slow clients
    cannot take every thread the process can make); past that a 503 at once."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, *args: Any, **kwargs: Any):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(_BUSY_REPLY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A client that went away mid-reply (broken pipe, reset): not the server's failure.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


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

        def do_PUT(self) -> None:  # noqa: N802 (a JSON 405 / 404, not http.server's HTML 501)
            self._dispatch("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._dispatch("DELETE")

        def do_PATCH(self) -> None:  # noqa: N802
            self._dispatch("PATCH")

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if not server.authorized(self.headers.get("Authorization")):
                server.count("unauthorized")
                self.close_connection = True  # do not read an unauthenticated body
                self._reply(HTTPStatus.UNAUTHORIZED, {"error": f"missing or wrong token (Authorization: Bearer ...; "
                                                               f"the client reads {TOKEN_ENV})"},
                            headers={"WWW-Authenticate": 'Bearer realm="robot"'})
                return
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
            except _BadBody as error:
                server.count("bad_request")
                self.close_connection = True  # the rest of the stream cannot be trusted
                self._reply(error.status, {"error": str(error)})
            except RequestError as error:
                server.count("bad_request")
                self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            except RobotFault as error:
                self._reply(HTTPStatus.CONFLICT, {"error": str(error)})
            except NotSupported as error:
                self._reply(HTTPStatus.NOT_IMPLEMENTED, {"error": str(error)})
            except Exception as error:  # the server must answer, whatever the backend raised
                log.exception("%s %s failed", method, path)
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"})

        def _read_body(self) -> dict[str, Any]:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                raise _BadBody(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted; send Content-Length")
            header = self.headers.get("Content-Length")
            if header is None:
                return {}
            header = header.strip()
            if not (header.isascii() and header.isdigit()) or len(header) > 12:
                raise _BadBody(HTTPStatus.BAD_REQUEST, f"bad Content-Length header {header[:40]!r}")
            length = int(header)
            if length > MAX_BODY_BYTES:
                raise _BadBody(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
            raw = self._read_exactly(length)
            if len(raw) < length:
                raise _BadBody(HTTPStatus.BAD_REQUEST, f"body ended after {len(raw)} of {length} bytes")
            if not raw.strip():
                return {}
            try:
                body = json.loads(raw)
            except RecursionError:
                raise _BadBody(HTTPStatus.BAD_REQUEST, "malformed JSON body: nested too deeply") from None
            except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError, an over-long integer
                raise _BadBody(HTTPStatus.BAD_REQUEST, f"malformed JSON body: {str(error)[:200]}") from None
            if not isinstance(body, dict):
                raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
            return body

        def _read_exactly(self, length: int) -> bytes:
            """Up to `length` bytes of body (fewer: the client closed), within BODY_DEADLINE_S in all."""
            deadline = time.monotonic() + BODY_DEADLINE_S
            chunks, received = [], 0
            while received < length:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _BadBody(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {BODY_DEADLINE_S:g} s")
                self.connection.settimeout(min(self.timeout, remaining))
                try:
                    chunk = self.rfile.read1(min(length - received, 65536))
                except TimeoutError:
                    raise _BadBody(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {BODY_DEADLINE_S:g} s") from None
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
            return b"".join(chunks)

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


class _BadBody(Exception):
    """The request's body cannot be read as a JSON object (its status says why)."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
