"""Actor -> learner throughput and params publish-to-use latency of serl_launcher.transport.

    python benchmarks/transport.py [--transitions 2000] [--repeats 3] [--actors 1,4]
        [--variants plain,auth] [--params_mb 3] [--latency_samples 20]

Throughput: N actor processes (spawned, each its own ActorClient) send `--transitions` each to
a LearnerServer in this process on loopback, whose callback only counts. A transition is what
an image actor sends: observations and next_observations, each two 128x128x3 uint8 cameras and
a 19-D float32 state, plus actions / rewards / masks / dones / intervened (~197 KB of arrays).
The clock starts when all actors are connected and told to go (so each actor's encoding is
inside it) and stops when the learner has counted every transition; MB/s counts array bytes.
"auth" runs the same with a shared key (HMAC-SHA256 on every message). For orientation, a raw
pyzmq DEALER -> ROUTER stream of pre-built frames of one batch's size runs first (no encoding,
no acks): the ceiling of this machine.

Latency: one actor process polls latest_params() every 0.1 ms; the learner calls
publish_params(step, params) with a float32 tree of ~`--params_mb` MB and the time from that
call to the actor seeing the new step is recorded (CLOCK_MONOTONIC, shared by processes on one
machine). It includes encoding on the learner, the PUB/SUB hop and decoding on the actor.

Each measurement repeats `--repeats` times (variants interleaved); the table shows the median
and range. Results: benchmarks/results/transport.json (or --json_out).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import statistics
import threading
import time
from pathlib import Path

from absl import app, flags

_TRANSITIONS = flags.DEFINE_integer("transitions", 2000, "Transitions per actor per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Repeats of every measurement.")
_ACTORS = flags.DEFINE_list("actors", ["1", "4"], "Actor process counts to measure.")
_VARIANTS = flags.DEFINE_list("variants", ["plain", "auth"], "plain (no key) and/or auth (HMAC).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Camera height and width.")
_PARAMS_MB = flags.DEFINE_float("params_mb", 3.0, "Size of the published params tree, MB.")
_LATENCY_SAMPLES = flags.DEFINE_integer("latency_samples", 20, "Publishes per latency repeat.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Where to write the results JSON.")

KEY = "benchmark-shared-secret"
MB = 1e6


def _transition_pool(image_size: int, seed: int, n: int = 8) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)

    def obs():
        return {
            "state": rng.standard_normal(19).astype(np.float32),
            "front": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8),
        }

    return [{"observations": obs(), "next_observations": obs(),
             "actions": rng.uniform(-1, 1, 7).astype(np.float32), "rewards": np.float32(0.0),
             "masks": np.float32(1.0), "dones": False, "intervened": False} for _ in range(n)]


def _array_bytes(tree) -> int:
    if isinstance(tree, dict):
        return sum(_array_bytes(v) for v in tree.values())
    return getattr(tree, "nbytes", 0)


def _actor_process(config_kwargs: dict, actor_id: str, n: int, image_size: int,
                   go: mp.Event, done: mp.Queue) -> None:
    from serl_launcher.transport import ActorClient, TransportConfig

    pool = _transition_pool(image_size, seed=hash(actor_id) % 1000)
    client = ActorClient(TransportConfig(**config_kwargs), actor_id).start()
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        client.send_transition(pool[i % len(pool)])
    queued = time.perf_counter() - t0
    flushed = client.flush(300.0)
    done.put({"actor": actor_id, "queue_s": queued, "flushed": flushed,
              "dropped": client.dropped, "retransmits": client.retransmits})
    client.close()


def _throughput(n_actors: int, variant: str, n: int, image_size: int) -> dict:
    from serl_launcher.transport import LearnerServer, TransportConfig

    total = n_actors * n
    count = [0]
    finished = threading.Event()
    end = [0.0]

    def on_transitions(actor_id, transitions):
        count[0] += len(transitions)
        if count[0] >= total:
            end[0] = time.perf_counter()
            finished.set()

    key = KEY if variant == "auth" else None
    server = LearnerServer(TransportConfig(data_port=0, param_port=0, key=key), on_transitions,
                           bind_host="127.0.0.1").start()
    config_kwargs = {"data_port": server.data_port, "param_port": server.param_port, "key": key}
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_actor_process, daemon=True,
                         args=(config_kwargs, f"actor-{k}", n, image_size, go, done))
             for k in range(n_actors)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 120
    while len(server.actors) < n_actors and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu0 = time.process_time()
    start = time.perf_counter()
    go.set()
    ok = finished.wait(600)
    cpu = time.process_time() - cpu0
    reports = [done.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    stats = server.stats
    server.close()
    if not ok:
        raise RuntimeError(f"only {count[0]} of {total} transitions arrived")
    wall = end[0] - start
    per = _array_bytes(_transition_pool(image_size, 0, 1)[0])
    return {"transitions_per_s": total / wall, "mb_per_s": total * per / wall / MB,
            "seconds": wall, "learner_cpu_over_wall": cpu / wall,
            "bytes_per_transition": per, "duplicates": stats["duplicates"],
            "messages": stats["accepted"],
            "actor_queue_s": [r["queue_s"] for r in reports],
            "retransmits": sum(r["retransmits"] for r in reports),
            "dropped": sum(r["dropped"] for r in reports)}


def _raw_sender(port: int, frame_bytes: int, n: int, go: mp.Event) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 8)
    sock.connect(f"tcp://127.0.0.1:{port}")
    frame = os.urandom(frame_bytes)
    go.wait()
    for _ in range(n):
        sock.send(frame, copy=False)
    sock.recv()  # the receiver's "done": keeps the socket open until everything arrived
    sock.close(0)
    ctx.term()


def _raw_baseline(frame_bytes: int, n: int) -> dict:
    """Pre-built frames DEALER -> ROUTER on loopback: what pyzmq alone moves here."""
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    mpctx = mp.get_context("spawn")
    go = mpctx.Event()
    proc = mpctx.Process(target=_raw_sender, args=(port, frame_bytes, n, go), daemon=True)
    proc.start()
    time.sleep(1.0)  # the child imports zmq and connects
    start = time.perf_counter()
    go.set()
    for i in range(n):
        ident, _ = router.recv_multipart(copy=False)
        if i == n - 1:
            wall = time.perf_counter() - start
            router.send_multipart([ident.bytes, b"done"])
    proc.join(30)
    router.close()
    ctx.term()
    return {"mb_per_s": n * frame_bytes / wall / MB, "frame_bytes": frame_bytes}


def _latency_actor(config_kwargs: dict, samples: int, ready: mp.Event, seen: mp.Queue) -> None:
    from serl_launcher.transport import ActorClient, TransportConfig

    client = ActorClient(TransportConfig(**config_kwargs), "latency").start()
    ready.set()
    last = -1
    while last < samples:
        latest = client.latest_params()
        if latest is not None and latest[0] != last:
            seen.put((latest[0], time.perf_counter()))
            last = latest[0]
        time.sleep(0.0001)
    client.close()


def _latency(params_mb: float, samples: int) -> dict:
    import numpy as np

    from serl_launcher.transport import LearnerServer, TransportConfig

    n_floats = int(params_mb * MB / 4)
    rng = np.random.default_rng(0)
    hidden = 256
    rest = n_floats - 2 * hidden * hidden - 3 * hidden
    params = {"actor": {"encoder": {"kernel": rng.standard_normal(max(rest, 1), np.float32)},
                        "Dense_0": {"kernel": rng.standard_normal((hidden, hidden), np.float32),
                                    "bias": np.zeros(hidden, np.float32)},
                        "Dense_1": {"kernel": rng.standard_normal((hidden, hidden), np.float32),
                                    "bias": np.zeros(hidden, np.float32)},
                        "head": {"bias": np.zeros(hidden, np.float32)}}}
    server = LearnerServer(TransportConfig(data_port=0, param_port=0), lambda a, t: None,
                           bind_host="127.0.0.1").start()
    ctx = mp.get_context("spawn")
    ready, seen = ctx.Event(), ctx.Queue()
    config_kwargs = {"data_port": server.data_port, "param_port": server.param_port}
    proc = ctx.Process(target=_latency_actor, args=(config_kwargs, samples, ready, seen),
                       daemon=True)
    proc.start()
    ready.wait(120)
    server.publish_params(0, params)  # connect: the actor gets step 0 (publish or hello)
    assert seen.get(timeout=60)[0] == 0
    time.sleep(0.2)
    latencies, encode_times = [], []
    for step in range(1, samples + 1):
        t0 = time.perf_counter()
        server.publish_params(step, params)
        encode_times.append(time.perf_counter() - t0)
        got_step, t_seen = seen.get(timeout=30)
        assert got_step == step, (got_step, step)
        latencies.append(t_seen - t0)
        time.sleep(0.05)
    proc.join(30)
    server.close()
    return {"median_ms": 1e3 * statistics.median(latencies),
            "min_ms": 1e3 * min(latencies), "max_ms": 1e3 * max(latencies),
            "publish_call_ms": 1e3 * statistics.median(encode_times),
            "params_bytes": _array_bytes(params)}


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str]) -> None:
    del argv
    n, size = _TRANSITIONS.value, _IMAGE_SIZE.value
    per = _array_bytes(_transition_pool(size, 0, 1)[0])
    batch_frame = 64 * (per + 600)
    raw = [_raw_baseline(batch_frame, max(20, n * per // batch_frame))["mb_per_s"]
           for _ in range(_REPEATS.value)]
    runs: dict[str, list[dict]] = {}
    for _ in range(_REPEATS.value):
        for actors in (int(a) for a in _ACTORS.value):
            for variant in _VARIANTS.value:
                result = _throughput(actors, variant, n, size)
                runs.setdefault(f"{actors}:{variant}", []).append(result)
    latency = [_latency(_PARAMS_MB.value, _LATENCY_SAMPLES.value) for _ in range(_REPEATS.value)]

    rows = []
    print(f"\nraw pyzmq DEALER->ROUTER, {batch_frame / MB:.1f} MB frames: "
          f"{statistics.median(raw):.0f} MB/s (range {min(raw):.0f}-{max(raw):.0f})")
    print(f"\n{'actors':>6} {'variant':>7} {'transitions/s':>22} {'MB/s':>20} {'learner cpu':>11}")
    for name, results in runs.items():
        actors, variant = name.split(":")
        tps = _summary([r["transitions_per_s"] for r in results])
        mbs = _summary([r["mb_per_s"] for r in results])
        cpu = statistics.median(r["learner_cpu_over_wall"] for r in results)
        rows.append({"actors": int(actors), "variant": variant, "transitions_per_s": tps,
                     "mb_per_s": mbs, "learner_cpu_over_wall": cpu, "runs": results})
        print(f"{actors:>6} {variant:>7} {tps['median']:>8.0f} ({tps['min']:.0f}-{tps['max']:.0f})"
              f" {mbs['median']:>8.0f} ({mbs['min']:.0f}-{mbs['max']:.0f}) {cpu:>11.2f}")
    lat = _summary([s["median_ms"] for s in latency])
    pub = statistics.median(s["publish_call_ms"] for s in latency)
    params_mb = latency[0]["params_bytes"] / MB
    print(f"\nparams publish -> latest_params ({params_mb:.1f} MB): median {lat['median']:.1f} ms"
          f" (repeat medians {lat['min']:.1f}-{lat['max']:.1f}; all samples"
          f" {min(s['min_ms'] for s in latency):.1f}-{max(s['max_ms'] for s in latency):.1f});"
          f" publish_params call {pub:.1f} ms")

    out = Path(_JSON_OUT.value or Path(__file__).parent / "results" / "transport.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "transitions_per_actor": n, "image_size": size, "bytes_per_transition": per,
        "repeats": _REPEATS.value,
        "raw_pyzmq_mb_per_s": {**_summary(raw), "frame_bytes": batch_frame},
        "throughput": rows,
        "params_latency_ms": {**lat, "publish_call_ms": pub, "params_bytes":
                              latency[0]["params_bytes"], "runs": latency},
    }, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    app.run(main)
