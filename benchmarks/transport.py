"""Actor -> learner throughput of the durable path next to the in-memory one, learner restart time,
and the params publish-to-use latency of serl_launcher.transport.

    python benchmarks/transport.py [--transitions 2000] [--repeats 3] [--actors 1,4]
        [--payloads state,image] [--sinks count,memory,durable] [--restart_state 100000]
        [--restart_image 20000] [--params_mb 3] [--latency_samples 20]

Throughput: N actor processes (spawned, each its own ActorClient) send `--transitions` each to a
LearnerServer in this process on loopback. Payloads: "state" (pick-cube's 17-D state and 4-D
action) and "image" (plus two 128x128x3 uint8 cameras, 19-D state, 7-D action; ~197 KB of arrays
per transition). Each actor sends one chain of consecutive transitions (observations = the
previous next_observations), as an env does. Sinks, interleaved in every repeat:
  - count: the transport alone (the callback counts);
  - memory: the learner's path before the data store, inserting into a ReplayBuffer in memory
    (what an acknowledgement meant before: nothing on disk);
  - durable: the learner's path now, serl_launcher.data.store.DataStore with log_sync "fsync":
    each message validated, logged and fsynced (group commit) before it is acknowledged.
The clock starts when all actors are connected and told to go (so each actor's encoding is
inside it) and stops when the learner has counted every transition; MB/s counts array bytes.
Disk cost: bytes the store's log holds per transition, and bytes a buffer snapshot adds.

Restart: a data store holding `--restart_state` state transitions and `--restart_image` image
transitions (80 % in a snapshot, 20 % in the log after it, as between two snapshots) is opened
as a restarted learner opens it; the time is recovery (snapshot restore + log replay). Then the
real learner (`experiments/pick_cube_sim/run_learner.sh`) is started on a run folder holding the
state store and timed from its start to its first update (JAX import and compile included).

Latency: one actor process polls latest_params() every 0.1 ms; the learner calls
publish_params(step, params) with a float32 tree of ~`--params_mb` MB and the time from that
call to the actor seeing the new step is recorded.

Each throughput measurement repeats `--repeats` times; the table shows the median and range.
Results: benchmarks/results/transport.json (or --json_out).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from absl import app, flags

_TRANSITIONS = flags.DEFINE_integer("transitions", 2000, "Transitions per actor per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Repeats of every measurement.")
_ACTORS = flags.DEFINE_list("actors", ["1", "4"], "Actor process counts to measure.")
_PAYLOADS = flags.DEFINE_list("payloads", ["state", "image"], "state and/or image.")
_SINKS = flags.DEFINE_list("sinks", ["count", "memory", "durable"], "Learner sides to compare.")
_STATE_FACTOR = flags.DEFINE_integer("state_factor", 10, "State payloads send this many times more transitions.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Camera height and width.")
_RESTART_STATE = flags.DEFINE_integer("restart_state", 100_000, "State transitions in the restart test (0: skip).")
_RESTART_IMAGE = flags.DEFINE_integer("restart_image", 20_000, "Image transitions in the restart test (0: skip).")
_LEARNER_RESTART = flags.DEFINE_bool("learner_restart", True, "Also time the real learner script's restart.")
_PARAMS_MB = flags.DEFINE_float("params_mb", 3.0, "Size of the published params tree, MB.")
_LATENCY_SAMPLES = flags.DEFINE_integer("latency_samples", 20, "Publishes per latency repeat (0: skip).")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Where to write the results JSON.")

MB = 1e6
REPO = Path(__file__).resolve().parent.parent


def _shapes(payload: str, image_size: int) -> dict:
    if payload == "state":
        return {"state": 17, "action": 4, "cameras": ()}
    return {"state": 19, "action": 7, "cameras": ("front", "wrist"), "size": image_size}


def _spaces(payload: str, image_size: int):
    import numpy as np
    from gymnasium import spaces

    s = _shapes(payload, image_size)
    obs = {"state": spaces.Box(-np.inf, np.inf, (s["state"],), np.float32)}
    obs.update({c: spaces.Box(0, 255, (image_size, image_size, 3), np.uint8) for c in s["cameras"]})
    return spaces.Dict(obs), spaces.Box(-1, 1, (s["action"],), np.float32)


def _chain(payload: str, image_size: int, seed: int, n: int) -> list[dict]:
    """n consecutive transitions (each one's observations are the previous next_observations);
    the last one ends its episode, so cycling the list restarts cleanly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    s = _shapes(payload, image_size)

    def frame():
        out = {"state": rng.standard_normal(s["state"]).astype(np.float32)}
        out.update({c: rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8) for c in s["cameras"]})
        return out

    frames = [frame() for _ in range(n + 1)]
    return [{"observations": frames[i], "next_observations": frames[i + 1],
             "actions": rng.uniform(-1, 1, s["action"]).astype(np.float32), "rewards": np.float32(0.0),
             "masks": np.float32(1.0), "dones": i == n - 1, "intervened": i % 10 == 0} for i in range(n)]


def _array_bytes(tree) -> int:
    if isinstance(tree, dict):
        return sum(_array_bytes(v) for v in tree.values())
    return getattr(tree, "nbytes", 0)


def _actor_process(config_kwargs: dict, actor_id: str, n: int, payload: str, image_size: int,
                   go: mp.Event, done: mp.Queue) -> None:
    from serl_launcher.transport import ActorClient, TransportConfig

    pool = _chain(payload, image_size, seed=sum(map(ord, actor_id)), n=32)
    client = ActorClient(TransportConfig(**config_kwargs), actor_id).start()
    go.wait()
    t0 = time.perf_counter()
    for i in range(n):
        client.send_transition(pool[i % len(pool)])
    queued = time.perf_counter() - t0
    flushed = client.flush(600.0)
    done.put({"actor": actor_id, "queue_s": queued, "flushed": flushed,
              "dropped": client.dropped, "retransmits": client.retransmits})
    client.close()


def _make_sink(kind: str, payload: str, image_size: int, capacity: int, folder: Path):
    """(sink for LearnerServer, counter list, closer, disk-usage function)."""
    from serl_launcher.data import ReplayBuffer
    from serl_launcher.data.store import DataStore

    count = [0]
    if kind == "count":
        def on_transitions(actor_id, transitions):
            count[0] += len(transitions)
        return on_transitions, count, lambda: None, lambda: {}
    if kind == "memory":
        online = ReplayBuffer(*_spaces(payload, image_size), capacity)
        demo = ReplayBuffer(*_spaces(payload, image_size), capacity)

        def on_transitions(actor_id, transitions):
            for t in transitions:  # what the learner's callback did before the data store
                online.insert(t)
                if t["intervened"]:
                    demo.insert(t)
            count[0] += len(transitions)
        return on_transitions, count, lambda: None, lambda: {}
    store = DataStore(folder, *_spaces(payload, image_size), capacity, sync="fsync")

    class Counting:
        delivered = store.delivered

        def deliver(self, actor_id, session, start, transitions):
            reasons = store.deliver(actor_id, session, start, transitions)
            count[0] += len(reasons)
            return reasons

        def commit(self):
            store.commit()

    def disk():
        log = store.log_bytes
        t0 = time.perf_counter()
        store.snapshot()
        snap = sum(p.stat().st_size for p in (folder / "online").glob("chunk-*"))
        return {"log_bytes": log, "snapshot_bytes": snap, "snapshot_s": time.perf_counter() - t0}

    return Counting(), count, store.close, disk


def _throughput(n_actors: int, payload: str, sink_kind: str, n: int, image_size: int) -> dict:
    from serl_launcher.transport import LearnerServer, TransportConfig

    total = n_actors * n
    folder = Path(tempfile.mkdtemp(prefix="serl-transport-bench-"))
    sink, count, close_sink, disk = _make_sink(sink_kind, payload, image_size, total + 64, folder)
    finished = threading.Event()
    server = LearnerServer(TransportConfig(data_port=0, param_port=0), sink).start()
    config_kwargs = {"data_port": server.data_port, "param_port": server.param_port}
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_actor_process, daemon=True,
                         args=(config_kwargs, f"actor-{k}", n, payload, image_size, go, done))
             for k in range(n_actors)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 120
    while server.stats["accepted"] < n_actors and time.monotonic() < deadline:  # their hellos
        time.sleep(0.01)

    def watch():
        while count[0] < total and not finished.is_set():
            time.sleep(0.0005)
        end[0] = time.perf_counter()
        finished.set()

    end = [0.0]
    cpu0 = time.process_time()
    start = time.perf_counter()
    go.set()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ok = finished.wait(900)
    cpu = time.process_time() - cpu0
    reports = [done.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    stats = server.stats
    server.close()
    usage = disk() if ok else {}
    close_sink()
    shutil.rmtree(folder, ignore_errors=True)
    if not ok:
        raise RuntimeError(f"only {count[0]} of {total} transitions arrived")
    wall = end[0] - start
    per = _array_bytes(_chain(payload, image_size, 0, 1)[0])
    out = {"transitions_per_s": total / wall, "mb_per_s": total * per / wall / MB, "seconds": wall,
           "learner_cpu_over_wall": cpu / wall, "bytes_per_transition": per,
           "duplicates": stats["duplicates"], "messages": stats["accepted"],
           "retransmits": sum(r["retransmits"] for r in reports),
           "dropped": sum(r["dropped"] for r in reports)}
    if usage:
        out.update({"log_bytes_per_transition": usage["log_bytes"] / total,
                    "snapshot_bytes_per_transition": usage["snapshot_bytes"] / total,
                    "snapshot_s": usage["snapshot_s"]})
    return out


def _fill_store(folder: Path, payload: str, image_size: int, n: int):
    """A data store as a learner leaves it: 80 % of `n` in a snapshot, the rest in the log."""
    from serl_launcher.data.store import DataStore

    store = DataStore(folder, *_spaces(payload, image_size), n + 1000)
    pool = _chain(payload, image_size, 1, 100)
    batch, seq = 64, 0
    while seq < n:
        k = min(batch, n - seq)
        store.deliver("actor-0", "00ff", seq, [pool[(seq + i) % len(pool)] for i in range(k)])
        store.commit()
        seq += k
        if seq >= int(0.8 * n) and store.snapshots == 1:
            store.snapshot()
    store.close()


def _restart(payload: str, n: int, image_size: int) -> dict:
    from serl_launcher.data.store import DataStore

    folder = Path(tempfile.mkdtemp(prefix="serl-restart-bench-"))
    try:
        _fill_store(folder, payload, image_size, n)
        disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        os.sync()
        t0 = time.perf_counter()
        store = DataStore(folder, *_spaces(payload, image_size), n + 1000, resuming=True)
        seconds = time.perf_counter() - t0
        assert store.online.num_inserted == n, store.describe_recovery()
        r = store.recovery
        store.close()
        return {"transitions": n, "recovery_s": seconds, "from_log": r["online_from_log"],
                "disk_bytes": disk}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _learner_restart(n: int) -> dict:
    """The real learner script on a run folder whose store holds `n` pick-cube state
    transitions: seconds from its start to its first update, and its recovery line."""
    from experiments.mappings import load_experiment

    exp = load_experiment("pick_cube_sim")
    config = exp.get_config()
    env = exp.make_env(config)
    spaces_ = env.observation_space, env.action_space
    env.close()
    run = Path(tempfile.mkdtemp(prefix="serl-learner-restart-"))
    try:
        from serl_launcher.data.store import DataStore

        store = DataStore(run / "buffers", *spaces_, config.learner.replay_capacity,
                          include_grasp_penalty=config.agent.learned_gripper)
        spaces_[0].seed(0)
        spaces_[1].seed(0)
        seq = 0
        while seq < n:
            batch = []
            for _ in range(min(100, n - seq)):
                obs, nxt = spaces_[0].sample(), spaces_[0].sample()
                batch.append({"observations": obs, "next_observations": nxt, "actions": spaces_[1].sample(),
                              "rewards": 0.0, "masks": 1.0, "dones": True, "intervened": False,
                              "grasp_penalty": 0.0})
            store.deliver("actor-0", "00ff", seq, batch)
            store.commit()
            seq += len(batch)
            if seq >= int(0.8 * n) and store.snapshots == 1:
                store.snapshot()
        store.close()
        sys.path.insert(0, str(REPO))
        from experiments.launch import free_port

        cmd = ["bash", str(REPO / "experiments/pick_cube_sim/run_learner.sh"), "--checkpoint_path", str(run),
               "--set", f"transport.data_port={free_port()}", "--set", f"transport.param_port={free_port()}",
               "--set", "learner.max_steps=1", "--set", "learner.log_period=1"]
        env_vars = {**os.environ, "SERL_PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
        t0, wall0 = time.perf_counter(), time.time()
        out = subprocess.run(cmd, env=env_vars, capture_output=True, text=True, timeout=600)
        total = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
        first = next(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                     if '"train/' in line)
        recovery = next(line for line in out.stdout.splitlines() if "[learner] recovered" in line)
        return {"transitions": n, "process_s": total, "to_first_update_s": first["time"] - wall0,
                "recovery_line": recovery}
    finally:
        shutil.rmtree(run, ignore_errors=True)


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
    server = LearnerServer(TransportConfig(data_port=0, param_port=0), lambda a, t: None).start()
    ctx = mp.get_context("spawn")
    ready, seen = ctx.Event(), ctx.Queue()
    config_kwargs = {"data_port": server.data_port, "param_port": server.param_port}
    proc = ctx.Process(target=_latency_actor, args=(config_kwargs, samples, ready, seen), daemon=True)
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
    return {"median_ms": 1e3 * statistics.median(latencies), "min_ms": 1e3 * min(latencies),
            "max_ms": 1e3 * max(latencies), "publish_call_ms": 1e3 * statistics.median(encode_times),
            "params_bytes": _array_bytes(params)}


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str]) -> None:
    del argv
    size = _IMAGE_SIZE.value
    runs: dict[str, list[dict]] = {}
    for _ in range(_REPEATS.value):
        for payload in _PAYLOADS.value:
            n = _TRANSITIONS.value * (_STATE_FACTOR.value if payload == "state" else 1)
            for actors in (int(a) for a in _ACTORS.value):
                for sink in _SINKS.value:  # interleaved: count, memory, durable, count, ...
                    result = _throughput(actors, payload, sink, n, size)
                    runs.setdefault(f"{payload}:{actors}:{sink}", []).append(result)

    rows = []
    print(f"\n{'payload':>7} {'actors':>6} {'sink':>8} {'transitions/s':>22} {'MB/s':>18} "
          f"{'vs memory':>9} {'log B/tr':>9} {'snap B/tr':>9}")
    for name, results in runs.items():
        payload, actors, sink = name.split(":")
        tps = _summary([r["transitions_per_s"] for r in results])
        mbs = _summary([r["mb_per_s"] for r in results])
        memory = runs.get(f"{payload}:{actors}:memory")
        ratio = (statistics.median(r["transitions_per_s"] / m["transitions_per_s"]
                                   for r, m in zip(results, memory, strict=True)) if memory else None)
        log_b = statistics.median(r.get("log_bytes_per_transition", 0) for r in results)
        snap_b = statistics.median(r.get("snapshot_bytes_per_transition", 0) for r in results)
        rows.append({"payload": payload, "actors": int(actors), "sink": sink, "transitions_per_s": tps,
                     "mb_per_s": mbs, "ratio_to_memory": ratio, "log_bytes_per_transition": log_b,
                     "snapshot_bytes_per_transition": snap_b, "runs": results})
        print(f"{payload:>7} {actors:>6} {sink:>8} {tps['median']:>8.0f} ({tps['min']:.0f}-{tps['max']:.0f})"
              f" {mbs['median']:>7.0f} ({mbs['min']:.0f}-{mbs['max']:.0f})"
              f" {ratio if ratio is not None else float('nan'):>9.2f} {log_b:>9.0f} {snap_b:>9.0f}")

    restarts = []
    for payload, n in (("state", _RESTART_STATE.value), ("image", _RESTART_IMAGE.value)):
        if n:
            r = _restart(payload, n, size)
            restarts.append({"payload": payload, **r})
            print(f"\nrestart, {payload}: {n} transitions ({r['from_log']} from the log), "
                  f"{r['disk_bytes'] / MB:.0f} MB on disk: recovered in {r['recovery_s']:.2f} s")
    learner = None
    if _LEARNER_RESTART.value and _RESTART_STATE.value:
        learner = _learner_restart(_RESTART_STATE.value)
        print(f"learner script on {learner['transitions']} state transitions: first update "
              f"{learner['to_first_update_s']:.1f} s after start ({learner['recovery_line']})")

    latency = [_latency(_PARAMS_MB.value, _LATENCY_SAMPLES.value)
               for _ in range(_REPEATS.value if _LATENCY_SAMPLES.value else 0)]
    lat = None
    if latency:
        lat = _summary([s["median_ms"] for s in latency])
        pub = statistics.median(s["publish_call_ms"] for s in latency)
        print(f"\nparams publish -> latest_params ({latency[0]['params_bytes'] / MB:.1f} MB): "
              f"median {lat['median']:.1f} ms (repeat medians {lat['min']:.1f}-{lat['max']:.1f}); "
              f"publish_params call {pub:.1f} ms")
        lat.update(publish_call_ms=pub, runs=latency)

    out = Path(_JSON_OUT.value or Path(__file__).parent / "results" / "transport.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "transitions_per_actor": _TRANSITIONS.value, "state_factor": _STATE_FACTOR.value, "image_size": size,
        "repeats": _REPEATS.value, "throughput": rows, "restart": restarts, "learner_restart": learner,
        "params_latency_ms": lat,
    }, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    app.run(main)
