"""HTTP client of the robot server (standard library only), with short timeouts and bounded retries.

Every call either returns the server's JSON answer or raises, within
``attempts * timeout + sum(backoffs)`` seconds:

- :class:`RobotConnectionError` when the server did not answer (refused, reset, timed out, or a
  502/503/504 from a proxy) on any of ``1 + retries`` attempts; the message names the URL, the
  request and the last failure;
- :class:`RobotServerError` when it answered with an error (4xx/5xx); not retried, since the
  same request would fail the same way. ``.status`` and ``.message`` carry the server's answer.

Resending is safe because every command of the server is absolute (see ``server.py``).

The shared token, when the server has one, comes from the ``ROBOT_SERVER_TOKEN`` environment
variable (or ``token=``), never from a config file, so it does not land in a run's saved config.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

RETRIED_STATUSES = (502, 503, 504)
TOKEN_ENV = "ROBOT_SERVER_TOKEN"  # the server's name for it too (robot_infra.robot_server.server)


class RobotConnectionError(ConnectionError):
    """The robot server did not answer."""


class RobotServerError(RuntimeError):
    """The robot server answered with an error status."""

    def __init__(self, url: str, status: int, message: str):
        super().__init__(f"robot server {url} answered {status}: {message}")
        self.url, self.status, self.message = url, status, message


class RobotClient:
    """Talks to ``python -m robot_infra.robot_server`` at `url`.

    Args:
        url: e.g. "http://127.0.0.1:5000".
        timeout: seconds for one attempt of an ordinary request.
        retries: further attempts after a failed one (0: one attempt only).
        backoff: seconds before the first retry, doubled before each next one.
        reset_timeout: seconds for one attempt of a joint reset (the arm moves while it waits).
        token: the server's shared token; None: ``$ROBOT_SERVER_TOKEN`` if set, else none.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 0.5,
        retries: int = 2,
        backoff: float = 0.1,
        reset_timeout: float = 30.0,
        token: str | None = None,
    ):
        if timeout <= 0 or reset_timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(
                f"need timeout > 0, reset_timeout > 0, retries >= 0, backoff >= 0; got "
                f"{timeout}, {reset_timeout}, {retries}, {backoff}"
            )
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.backoff, self.reset_timeout = timeout, retries, backoff, reset_timeout
        # No proxy: the robot server is on the robot's network, and a proxy from the environment
        # would turn "server down" into a proxy's 502 after its own long timeout.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        token = (os.environ.get(TOKEN_ENV, "") if token is None else token).strip()
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never the token
        return f"RobotClient({self.url!r}, token={'set' if 'Authorization' in self._headers else 'none'})"

    # ------------------------------------------------------------------ endpoints

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def state(self) -> dict[str, Any]:
        return self.request("GET", "/state")

    def set_pose(self, pose: list[float]) -> dict[str, Any]:
        return self.request("POST", "/pose", {"pose": [float(v) for v in pose]})

    def gripper(self, command: str) -> dict[str, Any]:
        return self.request("POST", "/gripper", {"command": command})

    def impedance(self) -> dict[str, float]:
        return self.request("GET", "/impedance")

    def set_impedance(self, **params: float) -> dict[str, float]:
        return self.request("POST", "/impedance", params)

    def joint_reset(self, qpos: list[float] | None = None, scene: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"scene": scene}
        if qpos is not None:
            body["qpos"] = [float(v) for v in qpos]
        return self.request("POST", "/reset", body, timeout=self.reset_timeout)

    def clear_errors(self) -> list[str]:
        return self.request("POST", "/clear_errors", {})["cleared"]

    # ------------------------------------------------------------------ transport

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """One request with retries (see the module docstring)."""
        timeout = self.timeout if timeout is None else timeout
        data = None if body is None else json.dumps(body).encode()
        started = time.monotonic()
        delay = self.backoff
        last_failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2.0
            request = urllib.request.Request(
                self.url + path, data=data, method=method, headers=self._headers
            )
            try:
                with self._opener.open(request, timeout=timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                message = _error_message(error)
                if error.code not in RETRIED_STATUSES:
                    raise RobotServerError(self.url, error.code, f"{method} {path}: {message}") from None
                last_failure = f"HTTP {error.code}: {message}"
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                reason = getattr(error, "reason", error)
                if isinstance(reason, TimeoutError):
                    last_failure = f"no answer within {timeout:g} s"
                else:
                    last_failure = f"{type(reason).__name__}: {reason}"
            except json.JSONDecodeError as error:
                last_failure = f"the answer was not JSON ({error})"
        elapsed = time.monotonic() - started
        raise RobotConnectionError(
            f"robot server {self.url} did not answer {method} {path}: {self.retries + 1} attempt(s) "
            f"in {elapsed:.1f} s, last: {last_failure}. Is `python -m robot_infra.robot_server` "
            f"running there and reachable?"
        )


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(error.read())
        return str(payload.get("error", payload))
    except Exception:  # not JSON: a proxy's page, an empty body
        return error.reason if isinstance(error.reason, str) else str(error)
