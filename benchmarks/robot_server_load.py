"""Load on the robot server: many clients at once, each with the project's own client.

    python benchmarks/robot_server_load.py                      # 50 clients x 20 requests
    python benchmarks/robot_server_load.py --clients 100 --requests 50 --timeout 0.5

One MuJoCo-backed server (the physics thread runs as it does for a real actor) on loopback;
each client thread alternates GET /state and POST /pose (the home pose: the arm stays put) with
:class:`~robot_infra.robot_server.RobotClient` at the real-arm env's defaults (0.5 s timeout,
2 retries, 0.1 s backoff, from ``robot_infra.envs.real_arm_env.default_config()``). Prints the
failures, the requests per second and the latency percentiles as one JSON line.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("clients", 50, "Concurrent client threads.")
flags.DEFINE_integer("requests", 20, "Requests per client.")
flags.DEFINE_float("timeout", -1.0, "Seconds per attempt (-1: the real-arm env's default).")


def main(argv: list[str]) -> None:
    del argv
    import sim_envs  # noqa: F401  (headless GL before mujoco)
    from robot_infra.envs.real_arm_env import default_config
    from robot_infra.robot_server import RobotClient, RobotServer, make_backend

    env = default_config()
    timeout = env.request_timeout if FLAGS.timeout < 0 else FLAGS.timeout
    backend = make_backend("mujoco", seed=0)
    server = RobotServer(backend, port=0).start()
    home = RobotClient(server.url).state()["tcp_pose"]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one_client() -> None:
        client = RobotClient(server.url, timeout=timeout, retries=env.retries, backoff=env.retry_backoff)
        for i in range(FLAGS.requests):
            started = time.perf_counter()
            try:
                client.state() if i % 2 else client.set_pose(home)
                with lock:
                    latencies.append(time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 (counted and reported, whatever it is)
                with lock:
                    failures.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=one_client) for _ in range(FLAGS.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    server.stop()
    backend.close()
    ms = np.array(latencies) * 1000.0
    print(json.dumps({
        "clients": FLAGS.clients, "requests": FLAGS.clients * FLAGS.requests, "failures": len(failures),
        "first_failures": failures[:3], "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "latency_ms_max": round(float(ms.max()), 2) if len(ms) else None, "timeout_s": timeout,
    }))


if __name__ == "__main__":
    app.run(main)
