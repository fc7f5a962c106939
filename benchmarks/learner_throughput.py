"""Learner throughput: SAC critic updates per second, ours against sbx and LeRobot.

    python benchmarks/learner_throughput.py [--rounds 3] [--workloads W1,W2,W3]
        [--peers sbx,lerobot] [--seconds 9] [--unpinned]

Synthetic data, no simulator: obs 20, action 4, MLP 256x256, batch 256, Adam 3e-4, a 100k-row
random buffer (shared/BENCHMARKS.md section 1). Workloads:
  W1  2 critics, UTD 1: one full SAC update (critic + actor + temperature) per call.
  W2  2 LayerNorm critics, 20 critic updates + 1 actor/temperature update per call (HIL-SERL).
  W3  10 LayerNorm critics, target = min over a random subset of 2, UTD 20 (RLPD).

Each (implementation, workload) runs in its own process (benchmarks/peers/run_*.py), pinned to
one core (taskset -c 1) with one XLA thread and one torch thread, because in real use the other
core runs the simulator. The implementations are interleaved (ours, sbx, lerobot, ours, ...)
for --rounds rounds. In each process the first update call (XLA / torch.compile compilation)
is timed apart, then --seconds of calls are split into --repeats repeats; each repeat records
process-CPU / wall, and repeats under 0.95 (the process was kept off its core) are dropped and
made up for by extra repeats (at most as many again).
The table shows the median over rounds of updates/s, the ratio ours / peer (median over rounds,
with its range), compile time (first call less one steady call, in the first round: cold
caches) and achieved GFLOP/s against a one-core fp32 peak of ~262.
--unpinned adds a secondary run without taskset and with default threading (both cores).

Peers are installed on first use into benchmarks/.peers/ (benchmarks/peers/setup_peers.sh).
Results go to benchmarks/results/learner_throughput.json (or --json_out).

This file is standard-library only: the runners import WORKLOADS, flops_per_call and measure
from it in whichever virtual environment they run.

FLOP model (multiply-add = 2 FLOPs; matrix multiplies only: bias, activations, LayerNorm, the
loss and Adam are O(parameters) or O(batch x width) and left out). With B = batch, o = obs dim,
a = action dim, H = 256, N = critics, U = UTD:
  critic forward, per sample:  Mc = (o + a) H + H H + H
  actor forward, per sample:   Ma = o H + H H + 2 a H          (mean and log-std heads)
  one critic update:           Fc = 2 B (Ma + N Mc + 3 N Mc)   (next-action actor forward, N
                                 target critics forward, N critics forward + backward = 3x fwd)
  one actor+temperature update: Fa = 2 B (3 Ma + 2 N Mc)       (actor fwd + bwd, N critics
                                 forward + backward to the action input only = 2x fwd; the
                                 temperature loss reuses the actor's log-probs)
  per call:                     U Fc + Fa
W2 comes to 0.344 GFLOP per critic update (the actor update amortised over 20), as in
BENCHMARKS.md. This nominal count ("mlp") evaluates all N target critics, as sbx and LeRobot
do. Each implementation's GFLOP/s uses the work it actually does (ARCH): ours evaluates only
the M = 2 sampled target critics in W3 ("mlp_subset": N Mc -> M Mc in the target term, 19 %
less work per W3 call), and LeRobot's architecture is larger ("lerobot": a shared 20->256
LayerNorm+tanh state encoder in front of critics and actor, so the first critic layer is
260x256, and its temperature loss runs the actor forward again). The JSON has both counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"
RUNNERS = HERE / "peers"
REPO = HERE.parent

OBS_DIM = 20
ACTION_DIM = 4
HIDDEN = (256, 256)
BATCH = 256
LR = 3e-4
BUFFER_ROWS = 100_000
ONE_CORE_PEAK_GFLOPS = 262.0
MIN_CPU_OVER_WALL = 0.95

WORKLOADS = {
    "W1": {"num_qs": 2, "num_min_qs": None, "layer_norm": False, "utd": 1},
    "W2": {"num_qs": 2, "num_min_qs": None, "layer_norm": True, "utd": 20},
    "W3": {"num_qs": 10, "num_min_qs": 2, "layer_norm": True, "utd": 20},
}
IMPLEMENTATIONS = ("ours", "sbx", "lerobot")
ARCH = {"ours": "mlp_subset", "sbx": "mlp", "lerobot": "lerobot"}  # FLOP model of each
PINNED_ENV = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "BENCH_THREADS": "1",
}


def flops_per_call(workload: str, arch: str = "mlp") -> float:
    """Matrix-multiply FLOPs of one update call (see the module docstring for the model)."""
    w = WORKLOADS[workload]
    n, utd, h, o, a, b = w["num_qs"], w["utd"], HIDDEN[0], OBS_DIM, ACTION_DIM, BATCH
    if arch in ("mlp", "mlp_subset"):
        m = (w["num_min_qs"] or n) if arch == "mlp_subset" else n
        mc = (o + a) * h + h * h + h
        ma = o * h + h * h + 2 * a * h
        fc = 2 * b * (ma + m * mc + 3 * n * mc)
        fa = 2 * b * (3 * ma + 2 * n * mc)
    elif arch == "lerobot":
        enc = o * h  # shared state encoder, one pass per ensemble (or actor) call
        mc = (h + a) * h + h * h + h
        ma_body = h * h + h * h + 2 * a * h  # actor MLP on the latent + heads
        # critic update: actor fwd (next obs), target ensemble fwd, ensemble fwd + bwd (the
        # encoder is trained through the critic loss)
        fc = 2 * b * ((enc + ma_body) + (enc + n * mc) + 3 * (enc + n * mc))
        # actor: encoder fwd (detached) + body fwd/bwd, ensemble fwd + input-grad bwd;
        # temperature: a second actor forward
        fa = 2 * b * ((enc + 3 * ma_body) + 2 * (enc + n * mc) + (enc + ma_body))
    else:
        raise ValueError(arch)
    return float(utd * fc + fa)


def measure(step, updates_per_call: int, seconds: float, repeats: int) -> dict:
    """Time `step` (one blocking update call): first call apart, then timed repeats.

    Each repeat lasts seconds / repeats. Repeats go on until `repeats` of them kept process-CPU /
    wall >= 0.95, or 2 x `repeats` were run (a busy machine). Returns first_call_s, compile_s
    (first call less one steady call), warmup_calls and per repeat: calls, wall_s,
    updates_per_s, cpu_over_wall.
    """
    t0 = time.perf_counter()
    step()
    first_call_s = time.perf_counter() - t0
    warm_calls, t0 = 0, time.perf_counter()
    while warm_calls < 3 or time.perf_counter() - t0 < min(1.0, 0.1 * seconds):
        step()
        warm_calls += 1
    period = seconds / repeats
    runs = []
    while len(runs) < 2 * repeats:
        if sum(r["cpu_over_wall"] >= MIN_CPU_OVER_WALL for r in runs) >= repeats:
            break
        calls = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while True:
            step()
            calls += 1
            wall = time.perf_counter() - wall0
            if wall >= period:
                break
        cpu = time.process_time() - cpu0
        runs.append({
            "calls": calls, "wall_s": round(wall, 4),
            "updates_per_s": calls * updates_per_call / wall,
            "cpu_over_wall": round(cpu / wall, 4),
        })
    steady_call_s = min(r["wall_s"] / r["calls"] for r in runs)
    return {
        "first_call_s": first_call_s,
        "compile_s": max(0.0, first_call_s - steady_call_s),
        "warmup_calls": warm_calls,
        "repeats": runs,
    }


def runner_args(argv=None) -> argparse.Namespace:
    """Command line shared by benchmarks/peers/run_*.py."""
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    p.add_argument("--seconds", type=float, default=9.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def bench_threads() -> int | None:
    """1 when the driver pinned the run (BENCH_THREADS=1), else None (library default)."""
    value = os.environ.get("BENCH_THREADS")
    return int(value) if value else None


def emit(impl: str, workload: str, setup_s: float, result: dict, **extra) -> None:
    """Print the runner's one JSON result line (the last line of its stdout)."""
    utd = WORKLOADS[workload]["utd"]
    line = {
        "impl": impl, "workload": workload, "critic_updates_per_call": utd,
        "setup_s": round(setup_s, 3), **result, **extra,
    }
    kept = [r["updates_per_s"] for r in result["repeats"] if r["cpu_over_wall"] >= MIN_CPU_OVER_WALL]
    line["critic_updates_per_s"] = statistics.median(kept) if kept else None
    line["cpu_over_wall"] = [r["cpu_over_wall"] for r in result["repeats"]]
    print(json.dumps(line), flush=True)


# --------------------------------------------------------------------------------------------
# driver


def _python(impl: str) -> Path:
    if impl == "ours":
        return REPO / ".venv" / "bin" / "python"
    return PEERS_DIR / impl / "bin" / "python"


def _run_one(impl: str, workload: str, args, pinned: bool) -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE)])
    env["TORCHINDUCTOR_CACHE_DIR"] = args.inductor_cache  # fresh per benchmark run
    for key in PINNED_ENV:
        env.pop(key, None)
    if pinned:
        env.update(PINNED_ENV)
    cmd = [str(_python(impl)), str(RUNNERS / f"run_{impl}.py"), "--workload", workload,
           "--seconds", str(args.seconds), "--repeats", str(args.repeats)]
    if pinned:
        cmd = ["taskset", "-c", str(args.core), *cmd]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "workload": workload, "error": f"timeout after {args.timeout} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"impl": impl, "workload": workload,
                "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    result = json.loads(lines[-1])
    result["process_wall_s"] = round(wall, 2)
    return result


_PROBE = """
import time, jax, jax.numpy as jnp
x = jnp.ones((1024, 1024), jnp.float32)
f = jax.jit(lambda a: a @ a)
f(x).block_until_ready()
n, t0 = 0, time.perf_counter()
while n < 5 or time.perf_counter() - t0 < 1.5:
    f(x).block_until_ready()
    n += 1
print(n * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9)
"""


def _matmul_probe(args, pinned: bool) -> float | None:
    """GFLOP/s of a jitted 1024^3 fp32 matmul now, under the same pinning: the machine's state."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(PINNED_ENV if pinned else {})}
    cmd = [str(_python("ours")), "-c", _PROBE]
    if pinned:
        cmd = ["taskset", "-c", str(args.core), *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    try:
        return round(float(proc.stdout.strip().splitlines()[-1]), 1)
    except (ValueError, IndexError):
        return None


def _rounds(impls, workloads, args, pinned: bool, label: str) -> dict:
    """runs[workload][impl] = list of per-round results, interleaved impl-by-impl."""
    runs = {w: {i: [] for i in impls} for w in workloads}
    for rnd in range(args.rounds):
        for workload in workloads:
            for impl in impls:
                res = _run_one(impl, workload, args, pinned)
                res["round"] = rnd
                runs[workload][impl].append(res)
                rate = res.get("critic_updates_per_s")
                shown = (f"{rate:8.1f} upd/s" if rate else "ERROR " + res.get(
                    "error", "no repeat kept: CPU / wall < 0.95, the core was busy"))
                print(f"[{label} round {rnd + 1}/{args.rounds}] {workload} {impl:<8} {shown}",
                      flush=True)
    return runs


def _summarise(runs: dict, impls) -> dict:
    summary = {}
    for workload, per_impl in runs.items():
        summary[workload] = {}
        ours = [r.get("critic_updates_per_s") for r in per_impl.get("ours", [])]
        for impl in impls:
            rates = [r.get("critic_updates_per_s") for r in per_impl[impl]]
            good = [x for x in rates if x]
            compiles = [r["compile_s"] for r in per_impl[impl] if "compile_s" in r]
            first = per_impl[impl][0] if per_impl[impl] else {}
            cpu = [c for r in per_impl[impl] for c in r.get("cpu_over_wall", [])]
            dropped = sum(c < MIN_CPU_OVER_WALL for c in cpu)
            entry = {
                "critic_updates_per_s": statistics.median(good) if good else None,
                "per_round": rates,
                # first process of the run: cold caches (torch.compile's inductor cache is fresh
                # per benchmark run and warm in later rounds; JAX keeps no persistent cache)
                "compile_s": first.get("compile_s"),
                "compile_s_median": statistics.median(compiles) if compiles else None,
                "repeats_dropped": dropped, "repeats_total": len(cpu),
                "errors": [r["error"] for r in per_impl[impl] if "error" in r],
            }
            if good:
                utd = WORKLOADS[workload]["utd"]
                calls_per_s = entry["critic_updates_per_s"] / utd
                entry["gflops"] = calls_per_s * flops_per_call(workload, ARCH[impl]) / 1e9
                entry["gflops_nominal"] = calls_per_s * flops_per_call(workload) / 1e9
                entry["pct_of_one_core_peak"] = 100 * entry["gflops"] / ONE_CORE_PEAK_GFLOPS
            if impl != "ours":
                ratios = [a / b for a, b in zip(ours, rates, strict=False) if a and b]
                if ratios:
                    entry["ratio_ours_over_peer"] = {
                        "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                        "per_round": ratios,
                    }
            summary[workload][impl] = entry
    return summary


def _table(summary: dict, impls, title: str) -> None:
    print(f"\n{title}")
    head = (f"{'wl':<3} {'impl':<8} {'upd/s':>8} {'ours/peer':>9} {'range':>11} "
            f"{'compile s':>9} {'GFLOP/s':>8} {'% peak':>6} {'dropped':>7}")
    print(head)
    print("-" * len(head))
    for workload, per_impl in summary.items():
        for impl in impls:
            e = per_impl[impl]
            rate = e["critic_updates_per_s"]
            r = e.get("ratio_ours_over_peer")
            ratio = f"{r['median']:.2f}" if r else "-"
            rng = f"{r['min']:.2f}-{r['max']:.2f}" if r else "-"
            comp = f"{e['compile_s']:.1f}" if e["compile_s"] is not None else "-"
            gf = f"{e['gflops']:.0f}" if "gflops" in e else "-"
            pct = f"{e['pct_of_one_core_peak']:.0f}" if "pct_of_one_core_peak" in e else "-"
            shown = f"{rate:8.1f}" if rate else f"{'n/a':>8}"
            print(f"{workload:<3} {impl:<8} {shown} {ratio:>9} {rng:>11} {comp:>9} {gf:>8} "
                  f"{pct:>6} {e['repeats_dropped']:>3}/{e['repeats_total']:<3}")
            for err in e["errors"][:1]:
                print(f"    error: {err[:160]}")
    print("upd/s: critic updates per second, median over rounds (each round: median of its kept "
          "repeats).\nratio: ours / peer per round, median and range. GFLOP/s: matrix-multiply FLOPs "
          "the implementation executes (see the docstring); % of the ~262 GFLOP/s one-core peak.")


def _versions() -> dict:
    out = {}
    probes = {
        "ours": "import jax, flax, optax; print(f'jax {jax.__version__}, flax {flax.__version__}, "
                "optax {optax.__version__}')",
        "sbx": "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
               "('sbx-rl', 'stable-baselines3', 'jax', 'flax', 'optax', 'torch')))",
        "lerobot": "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
                   "('lerobot', 'torch')))",
    }
    for impl, code in probes.items():
        python = _python(impl)
        if python.exists():
            proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
            out[impl] = proc.stdout.strip() or proc.stderr.strip().splitlines()[-1:]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workloads", default="W1,W2,W3")
    p.add_argument("--peers", default="sbx,lerobot")
    p.add_argument("--seconds", type=float, default=9.0,
                   help="measured seconds per (implementation, workload, round)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats within --seconds")
    p.add_argument("--core", type=int, default=1, help="core for taskset -c")
    p.add_argument("--unpinned", action="store_true",
                   help="also run one unpinned round set (both cores, default threading)")
    p.add_argument("--unpinned_rounds", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0, help="per-process timeout (s)")
    p.add_argument("--skip_setup", action="store_true", help="do not run setup_peers.sh")
    p.add_argument("--json_out", default=str(HERE / "results" / "learner_throughput.json"))
    args = p.parse_args(argv)

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    for name in workloads:
        if name not in WORKLOADS:
            p.error(f"unknown workload {name}")
    for name in peers:
        if name not in IMPLEMENTATIONS[1:]:
            p.error(f"unknown peer {name}")
    impls = ["ours", *peers]
    if peers and not args.skip_setup:
        subprocess.run(["bash", str(RUNNERS / "setup_peers.sh"), *peers], check=True)

    t0 = time.time()
    cache = tempfile.TemporaryDirectory(prefix="bench-inductor-")
    args.inductor_cache = cache.name
    probe_before = _matmul_probe(args, pinned=True)
    runs = _rounds(impls, workloads, args, pinned=True, label="pinned")
    probe_after = _matmul_probe(args, pinned=True)
    summary = _summarise(runs, impls)
    result = {
        "benchmark": "learner_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "versions": _versions(),
        "settings": {
            "rounds": args.rounds, "seconds": args.seconds, "repeats": args.repeats,
            "core": args.core, "pinned_env": PINNED_ENV, "min_cpu_over_wall": MIN_CPU_OVER_WALL,
            "obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "hidden": HIDDEN, "batch": BATCH,
            "lr": LR, "buffer_rows": BUFFER_ROWS, "workloads": WORKLOADS,
            "one_core_peak_gflops": ONE_CORE_PEAK_GFLOPS,
            "flops_per_call": {arch: {w: flops_per_call(w, arch) for w in workloads}
                               for arch in ("mlp", "mlp_subset", "lerobot")},
            "flops_model_of": ARCH,
        },
        "pinned": {"summary": summary, "runs": runs,
                   "matmul_probe_gflops": {"before": probe_before, "after": probe_after}},
    }
    _table(summary, impls, f"Learner throughput, one pinned core (taskset -c {args.core}), "
                           f"{args.rounds} interleaved rounds")
    print(f"XLA 1024^3 matmul on the pinned core: {probe_before} GFLOP/s before, {probe_after} "
          f"after (an idle core gives ~210 per BENCHMARKS.md; less: the other vCPU is busy)")
    if args.unpinned:
        urounds = argparse.Namespace(**{**vars(args), "rounds": args.unpinned_rounds})
        uruns = _rounds(impls, workloads, urounds, pinned=False, label="unpinned")
        uprobe = _matmul_probe(args, pinned=False)
        usummary = _summarise(uruns, impls)
        for workload, per_impl in usummary.items():
            for impl, entry in per_impl.items():
                pinned_rate = summary[workload][impl]["critic_updates_per_s"]
                if pinned_rate and entry["critic_updates_per_s"]:
                    entry["speedup_over_pinned"] = entry["critic_updates_per_s"] / pinned_rate
        result["unpinned"] = {"summary": usummary, "runs": uruns, "matmul_probe_gflops": uprobe}
        _table(usummary, impls, f"Secondary: unpinned (both cores, default threading), "
                                f"{args.unpinned_rounds} round(s)")
        print(f"XLA 1024^3 matmul unpinned: {uprobe} GFLOP/s")
        print("speedup unpinned / pinned: " + ", ".join(
            f"{w} {i} {e['speedup_over_pinned']:.2f}x" for w, pe in usummary.items()
            for i, e in pe.items() if "speedup_over_pinned" in e))
    cache.cleanup()
    result["total_wall_s"] = round(time.time() - t0, 1)
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out} ({result['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
