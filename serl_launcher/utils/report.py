"""A run's report: plots of success rate, episode return, intervention rate and evaluation cycle
time against wall-clock and env steps, and a summary (``report.json`` / ``report.md``), written
into the run folder.

Reads what the roles wrote (nothing else is needed, so any run folder can be reported again):

    metrics.jsonl              the learner's records: replay/ (intervention rate of the received
                               transitions), and actor/<id>/ episode stats relayed by actors;
                               the evaluator's (or the in-process loop's) eval/ records
    actor-<id>/metrics.jsonl   each actor's own records: one actor/ record per episode
    eval_<step>.json           evaluations of a learner checkpoint (scripts/train_rlpd.py)
    eval_<step>.mp4            their videos

An actor's episodes come from its own file; the copies the learner received are used only for
actors whose folder is not here (actors on other machines). Episodes of all actors are merged in
wall-clock order: "env steps" is the total over actors (a running sum of episode lengths) and
"wall-clock" counts minutes from the first record of the run. A crashed run may end in a
truncated line, a run that just started may have empty files, a run that stopped on a NaN has
that NaN in its last record: all are read (bad lines skipped and listed under ``problems``).

    python scripts/report.py RUN_FOLDER [--window 20]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_WINDOW = 20
# A change of the intervention rate between the first and the last window smaller than this
# (in share of steps) is called "flat".
FLAT_TREND = 0.02
PLOT_FILES = {
    "success_rate": "report_success_rate.png",
    "episode_return": "report_episode_return.png",
    "intervention_rate": "report_intervention_rate.png",
    "cycle_time": "report_cycle_time.png",
}


def read_records(path: str | Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The step records (those with a ``step``) of a JSON-lines metrics file, tolerantly.

    Lines that do not parse (a truncated last line after a crash, say) are skipped and described
    in `problems` when given. NaN and Infinity, which the metrics writer may have written just
    before stopping a run, read as floats.
    """
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if problems is not None:
                where = "truncated last line (a crashed run?)" if number == len(lines) else "unreadable line"
                problems.append(f"{path}:{number}: {where}; skipped")
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _number(value: Any) -> float:
    """A metric value as a float; NaN for what is missing or not a number."""
    if isinstance(value, bool | int | float):
        return float(value)
    return math.nan


def rolling_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last `window` entries (fewer at the start), NaNs left out.

    Entry i is the mean of the finite values among ``values[max(0, i - window + 1) : i + 1]``
    (NaN if there are none).
    """
    return rolling_ratio(values, np.ones(len(values)), window)


def rolling_ratio(numerators: Sequence[float], denominators: Sequence[float], window: int) -> np.ndarray:
    """Trailing ``sum(numerators) / sum(denominators)`` over the last `window` entries, leaving out
    entries where either is NaN (NaN where nothing is left or the denominators sum to 0)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    valid = np.isfinite(num) & np.isfinite(den)
    num_sum = np.concatenate([[0.0], np.cumsum(np.where(valid, num, 0.0))])
    den_sum = np.concatenate([[0.0], np.cumsum(np.where(valid, den, 0.0))])
    end = np.arange(1, len(num) + 1)
    start = np.maximum(0, end - window)
    top, bottom = num_sum[end] - num_sum[start], den_sum[end] - den_sum[start]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)


@dataclass
class Episodes:
    """Per-episode arrays (all shaped (episodes,)), in wall-clock order."""

    time: np.ndarray  # Unix seconds at the episode's end
    actor: list[str]
    success: np.ndarray  # 0 / 1
    ret: np.ndarray
    length: np.ndarray
    intervention_steps: np.ndarray  # NaN where the actor had no intervention wrapper

    def __len__(self) -> int:
        return len(self.time)

    @property
    def env_steps(self) -> np.ndarray:
        """Total env steps over all actors at each episode's end."""
        return np.cumsum(np.nan_to_num(self.length))


@dataclass
class RunData:
    run_dir: Path
    episodes: Episodes
    learner: list[dict[str, Any]]  # the learner's step records
    evaluations: list[dict[str, Any]]  # {"learner_step"?, "time"?, "env_steps"?, "success_rate", "source"}
    metrics_files: list[Path]
    start_time: float  # Unix seconds of the run's first record (NaN if no record has a time)
    end_time: float
    problems: list[str] = field(default_factory=list)


def _episode_row(record: dict[str, Any], prefix: str, actor: str) -> dict[str, Any]:
    get = lambda name: _number(record.get(prefix + name))  # noqa: E731
    steps, rate, length = get("intervention_steps"), get("intervention_rate"), get("length")
    if math.isnan(steps) and not math.isnan(rate):  # an older record with only the rate
        steps = rate * length
    return {"time": _number(record.get("time")), "actor": actor, "success": get("success"),
            "ret": get("return"), "length": length, "intervention_steps": steps}


def _episodes(rows: list[dict[str, Any]]) -> Episodes:
    # Stable sort on time; records without a time keep their file order at the end.
    rows = sorted(rows, key=lambda r: r["time"] if math.isfinite(r["time"]) else math.inf)
    column = lambda name: np.array([r[name] for r in rows], dtype=np.float64)  # noqa: E731
    return Episodes(time=column("time"), actor=[r["actor"] for r in rows], success=column("success"),
                    ret=column("ret"), length=column("length"),
                    intervention_steps=column("intervention_steps"))


def load_run(run_dir: str | Path) -> RunData:
    """Reads a run folder's metrics files and evaluations.

    Raises:
        FileNotFoundError: naming the folder, when it does not exist or holds no metrics file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    learner_path = run_dir / "metrics.jsonl"
    actor_paths = sorted(run_dir.glob("actor-*/metrics.jsonl"))
    metrics_files = ([learner_path] if learner_path.is_file() else []) + actor_paths
    if not metrics_files:
        raise FileNotFoundError(f"{run_dir} has neither metrics.jsonl nor actor-*/metrics.jsonl: "
                                "is it a run folder (experiments/<exp>/runs/<name>)?")
    problems: list[str] = []
    rows, times = [], []
    local_actors = set()
    for path in actor_paths:
        actor = path.parent.name.removeprefix("actor-")
        local_actors.add(actor)
        for record in read_records(path, problems):
            times.append(_number(record.get("time")))
            if "actor/success" in record or "actor/return" in record:
                rows.append(_episode_row(record, "actor/", actor))
    learner = read_records(learner_path, problems) if learner_path.is_file() else []
    for record in learner:
        times.append(_number(record.get("time")))
        relayed = {key.rsplit("/", 1)[0].removeprefix("actor/") for key in record
                   if key.startswith("actor/") and key.count("/") >= 2}
        for actor in sorted(relayed - local_actors):
            prefix = f"actor/{actor}/"
            if prefix + "success" in record or prefix + "return" in record:
                rows.append(_episode_row(record, prefix, actor))
    evaluations = [_eval_record(r) for r in learner if "eval/success_rate" in r]  # live evaluations
    for path in sorted(run_dir.glob("eval_*.json"), key=_step_of):
        try:
            stats = json.loads(path.read_text())
            evaluations.append({"source": path.name, "learner_step": int(stats["step"]),
                                "success_rate": _number(stats["success_rate"])})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            problems.append(f"{path}: not an evaluation result ({error!r}); skipped")
    finite = [t for t in times if math.isfinite(t)]
    return RunData(run_dir=run_dir, episodes=_episodes(rows), learner=learner, evaluations=evaluations,
                   metrics_files=metrics_files, start_time=min(finite, default=math.nan),
                   end_time=max(finite, default=math.nan), problems=problems)


def evaluated_at(record: dict[str, Any]) -> float:
    """Unix time an eval/ record's policy was taken: the record is written when its episodes are
    done (``eval/seconds`` later)."""
    return _number(record.get("time")) - _number(record.get("eval/seconds", 0.0))


def _eval_record(record: dict[str, Any]) -> dict[str, Any]:
    """An eval/ record (evaluator or in-process loop) as an evaluation: placed at the time its
    policy was taken (the record is written when the episodes are done)."""
    evaluation = {"source": "eval/ record", "success_rate": _number(record["eval/success_rate"]),
                  "time": evaluated_at(record),
                  "env_steps": _number(record.get("eval/env_steps"))}
    if "eval/learner_step" in record:
        evaluation["learner_step"] = int(_number(record["eval/learner_step"]))
    for key in ("success_ci_low", "success_ci_high", "cycle_steps", "cycle_s", "episodes"):
        if f"eval/{key}" in record:
            evaluation[key] = _number(record[f"eval/{key}"])
    return evaluation


def _step_of(path: Path) -> tuple[int, str]:
    match = re.fullmatch(r"eval_(\d+)(?:-\d+)?\.\w+", path.name)  # eval_<step>[-<k>]: a re-evaluation
    return (int(match.group(1)) if match else -1, path.name)


def _place_evaluations(run: RunData) -> None:
    """Gives each checkpoint evaluation the wall-clock time its learner step was reached (from
    the learner's records) and the env steps collected by then (from the episodes)."""
    step_time: dict[int, float] = {}
    for record in run.learner:  # a resumed learner redoes some steps: the later time wins
        if any(k.startswith(("train/", "replay/")) for k in record) and math.isfinite(_number(record.get("time"))):
            step_time[int(record["step"])] = float(record["time"])
    steps = sorted(step_time)
    episodes = run.episodes
    timed = np.isfinite(episodes.time)
    for evaluation in run.evaluations:
        if evaluation["source"] != "eval/ record" and "learner_step" in evaluation:
            evaluation["time"] = (float(np.interp(evaluation["learner_step"], steps, [step_time[s] for s in steps]))
                                  if steps else math.nan)
            evaluation["env_steps"] = (
                float(np.interp(evaluation["time"], episodes.time[timed], episodes.env_steps[timed]))
                if timed.any() and math.isfinite(evaluation["time"]) else math.nan)


def _window_rate(episodes: Episodes, part: slice) -> float:
    steps, length = episodes.intervention_steps[part], episodes.length[part]
    valid = np.isfinite(steps) & np.isfinite(length)
    total = length[valid].sum()
    return float(steps[valid].sum() / total) if total > 0 else math.nan


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _last_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else math.nan


def summarize(run: RunData, window: int) -> dict[str, Any]:
    """The numbers of the report (NaN written as null)."""
    e = run.episodes
    n = len(e)
    first, last = _window_rate(e, slice(0, window)), _window_rate(e, slice(max(0, n - window), n))
    change = last - first
    trend = None if math.isnan(change) else "flat" if abs(change) < FLAT_TREND else \
        "falling" if change < 0 else "rising"
    replay = [r for r in run.learner if "replay/received" in r]
    learner_rates = np.array([_number(r.get("replay/intervention_rate")) for r in replay])
    learner_steps = [int(r["step"]) for r in run.learner if any(k.startswith("train/") for k in r)]
    with np.errstate(invalid="ignore"):
        overall_success = float(np.nanmean(e.success)) if np.isfinite(e.success).any() else math.nan
        overall_return = float(np.nanmean(e.ret)) if np.isfinite(e.ret).any() else math.nan
    return {
        "run_dir": str(run.run_dir),
        "window": window,
        "episodes": n,
        "actors": sorted(set(e.actor)),
        "env_steps": int(e.env_steps[-1]) if n else 0,
        "wall_clock_min": _finite_or_none((run.end_time - run.start_time) / 60),
        "learner_steps": max(learner_steps, default=None),
        "success_rate": {
            "final_rolling": _finite_or_none(_last_finite(rolling_mean(e.success, window))),
            "overall": _finite_or_none(overall_success),
        },
        "episode_return": {
            "final_rolling": _finite_or_none(_last_finite(rolling_mean(e.ret, window))),
            "overall": _finite_or_none(overall_return),
        },
        "intervention_rate": {
            "first_window": _finite_or_none(first),
            "last_window": _finite_or_none(last),
            "change": _finite_or_none(change),
            "trend": trend,
            "windows_overlap": n < 2 * window,  # too few episodes for two separate windows
            "learner_last": _finite_or_none(_last_finite(learner_rates)),
            "learner_intervened_total": int(replay[-1].get("replay/intervened_total", 0)) if replay else None,
        },
        "evaluations": [
            {"source": ev["source"], "learner_step": ev.get("learner_step"),
             "env_steps": _finite_or_none(ev.get("env_steps", math.nan)),
             "wall_clock_min": _finite_or_none((ev.get("time", math.nan) - run.start_time) / 60),
             "success_rate": _finite_or_none(ev["success_rate"]),
             **{key: _finite_or_none(ev[key]) for key in ("success_ci_low", "success_ci_high", "cycle_steps",
                                                          "cycle_s", "episodes") if key in ev}}
            for ev in run.evaluations
        ],
        "problems": list(run.problems),
    }


# ---------------------------------------------------------------------------------- plotting


@dataclass
class _Series:
    label: str
    time: np.ndarray  # Unix seconds
    env_steps: np.ndarray
    values: np.ndarray
    style: str  # "line", "dots" or "markers"


def _plot(path: Path, title: str, ylabel: str, series: Iterable[_Series], start_time: float,
          ylim: tuple[float, float] | None = None, empty_note: str = "no episodes recorded yet") -> Path:
    # The object-oriented API with an Agg canvas: no pyplot state, no display, no backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    series = [s for s in series if np.isfinite(s.values).any()]
    for ax, xlabel in zip(axes, ("wall-clock (min)", "env steps (all actors)"), strict=True):
        for s in series:
            x = (s.time - start_time) / 60 if ax is axes[0] else s.env_steps
            keep = np.isfinite(x) & np.isfinite(s.values)
            if s.style == "dots":
                ax.scatter(x[keep], s.values[keep], s=6, alpha=0.25, color="gray", label=s.label)
            elif s.style == "markers":
                ax.plot(x[keep], s.values[keep], "D", color="tab:red", markersize=6, label=s.label)
            else:
                ax.plot(x[keep], s.values[keep], linewidth=1.8, label=s.label)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if not series:
            ax.text(0.5, 0.5, empty_note, transform=ax.transAxes, ha="center", va="center", color="gray")
    axes[0].set_ylabel(ylabel)
    if series:
        axes[1].legend(loc="best", fontsize=8)
    figure.suptitle(title)
    figure.savefig(path, dpi=90)
    return path


def write_plots(run: RunData, window: int) -> dict[str, Path]:
    """The three report figures (each: against wall-clock minutes, and against env steps)."""
    e, start = run.episodes, run.start_time
    steps = e.env_steps
    evals = [ev for ev in run.evaluations if math.isfinite(ev.get("success_rate", math.nan))]
    paths = {}
    paths["success_rate"] = _plot(
        run.run_dir / PLOT_FILES["success_rate"], "Success rate (training episodes: interventions help)", "success rate", [
            _Series("episode (0 / 1)", e.time, steps, e.success, "dots"),
            _Series(f"rolling mean, {window} episodes", e.time, steps, rolling_mean(e.success, window), "line"),
            _Series("evaluation (deterministic, no interventions)",
                    np.array([ev.get("time", math.nan) for ev in evals], dtype=np.float64),
                    np.array([ev.get("env_steps", math.nan) for ev in evals], dtype=np.float64),
                    np.array([ev["success_rate"] for ev in evals], dtype=np.float64), "markers"),
        ], start, ylim=(-0.05, 1.05))
    paths["episode_return"] = _plot(
        run.run_dir / PLOT_FILES["episode_return"], "Episode return (training episodes)", "return", [
            _Series("episode", e.time, steps, e.ret, "dots"),
            _Series(f"rolling mean, {window} episodes", e.time, steps, rolling_mean(e.ret, window), "line"),
        ], start)
    replay = [r for r in run.learner if "replay/intervention_rate" in r]
    replay_time = np.array([_number(r.get("time")) for r in replay], dtype=np.float64)
    timed = np.isfinite(e.time)
    replay_steps = (np.interp(replay_time, e.time[timed], steps[timed]) if timed.any()
                    else np.full(len(replay), np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_episode = e.intervention_steps / e.length
    paths["intervention_rate"] = _plot(
        run.run_dir / PLOT_FILES["intervention_rate"], "Intervention rate (share of env steps intervened)",
        "intervention rate", [
            _Series("episode", e.time, steps, per_episode, "dots"),
            _Series(f"rolling, {window} episodes", e.time, steps,
                    rolling_ratio(e.intervention_steps, e.length, window), "line"),
            _Series("learner: received transitions", replay_time, replay_steps,
                    np.array([_number(r["replay/intervention_rate"]) for r in replay], dtype=np.float64), "line"),
        ], start, ylim=(-0.05, 1.05), empty_note="no interventions recorded")
    cycles = [ev for ev in evals if math.isfinite(ev.get("cycle_steps", math.nan))]
    paths["cycle_time"] = _plot(
        run.run_dir / PLOT_FILES["cycle_time"], "Cycle time (evaluation: mean length of the successful episodes)",
        "env steps per success", [
            _Series("evaluation (deterministic, no interventions)",
                    np.array([ev.get("time", math.nan) for ev in cycles], dtype=np.float64),
                    np.array([ev.get("env_steps", math.nan) for ev in cycles], dtype=np.float64),
                    np.array([ev["cycle_steps"] for ev in cycles], dtype=np.float64), "markers"),
        ], start, empty_note="no successful evaluation episode yet")
    return paths


# ---------------------------------------------------------------------------------- the report


def _latest_video(run_dir: Path) -> Path | None:
    videos = sorted(run_dir.glob("eval_*.mp4"), key=_step_of)
    return videos[-1] if videos else None


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if percent else f"{value:.3g}"


def _markdown(summary: dict[str, Any]) -> str:
    s, i = summary, summary["intervention_rate"]
    wall = s["wall_clock_min"]
    lines = [
        f"# Run report: {Path(s['run_dir']).name}", "",
        f"{s['episodes']} training episodes, {s['env_steps']} env steps over {len(s['actors'])} actor(s) "
        f"in {wall:.1f} min of wall-clock" if wall is not None else
        f"{s['episodes']} training episodes, {s['env_steps']} env steps", "",
        f"| | rolling ({s['window']} episodes), final | all episodes |", "|---|---|---|",
        f"| success rate | {_fmt(s['success_rate']['final_rolling'], True)} | {_fmt(s['success_rate']['overall'], True)} |",
        f"| episode return | {_fmt(s['episode_return']['final_rolling'])} | {_fmt(s['episode_return']['overall'])} |",
        "",
        f"Intervention rate: first {s['window']} episodes {_fmt(i['first_window'], True)}, last {s['window']} "
        f"{_fmt(i['last_window'], True)} ({i['trend'] or 'no data'}"
        f"{'; the windows overlap' if i['windows_overlap'] else ''}); learner, latest window of received "
        f"transitions: {_fmt(i['learner_last'], True)}.", "",
    ]
    if s["evaluations"]:
        lines += ["| evaluation | wall-clock (min) | learner step | env steps | success rate (95 % CI) "
                  "| cycle (steps / s) |", "|---|---|---|---|---|---|"]
        lines += [f"| {ev['source']} | {_fmt(ev['wall_clock_min'])} | "
                  f"{ev['learner_step'] if ev['learner_step'] is not None else '-'} | "
                  f"{_fmt(ev['env_steps'])} | {_fmt(ev['success_rate'], True)}"
                  + (f" ({_fmt(ev['success_ci_low'], True)}-{_fmt(ev['success_ci_high'], True)})"
                     if ev.get("success_ci_low") is not None else "")
                  + f" | {_fmt(ev.get('cycle_steps'))} / {_fmt(ev.get('cycle_s'))} |" for ev in s["evaluations"]]
        lines.append("")
    lines += [f"![{name}]({Path(path).name})" for name, path in s["plots"].items()]
    lines += ["", f"Video: {s['video'] or 'none'}", "", "Metrics:", *[f"- {p}" for p in s["metrics"]]]
    if s["problems"]:
        lines += ["", "Problems while reading:", *[f"- {p}" for p in s["problems"]]]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, window: int = DEFAULT_WINDOW) -> dict[str, Any]:
    """Writes the plots, ``report.json`` and ``report.md`` into `run_dir`; returns the summary
    (with ``plots``, ``video``, ``metrics`` and ``report`` paths as strings)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    run = load_run(run_dir)
    _place_evaluations(run)
    summary = summarize(run, window)
    summary["plots"] = {name: str(path) for name, path in write_plots(run, window).items()}
    video = _latest_video(run.run_dir)
    summary["video"] = str(video) if video else None
    summary["metrics"] = [str(p) for p in run.metrics_files]
    summary["report"] = {"json": str(run.run_dir / "report.json"), "markdown": str(run.run_dir / "report.md")}
    (run.run_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    (run.run_dir / "report.md").write_text(_markdown(summary))
    return summary


def report_lines(summary: dict[str, Any]) -> list[str]:
    """What an entry point prints about a report: the training numbers, problems met while reading,
    the plots, video and metrics files, and the run folder last."""
    s, i = summary, summary["intervention_rate"]
    lines = [f"training: {s['episodes']} episodes, {s['env_steps']} env steps; rolling success rate "
             f"{_fmt(s['success_rate']['final_rolling'], True)}; intervention rate "
             f"{_fmt(i['first_window'], True)} in the first {s['window']} episodes, "
             f"{_fmt(i['last_window'], True)} in the last {s['window']}"]
    lines += [f"warning: {problem}" for problem in s["problems"]]
    lines += [f"plot: {path}" for path in s["plots"].values()]
    lines.append(f"video: {summary['video'] or 'none (no eval_*.mp4 in the run folder)'}")
    lines += [f"metrics: {path}" for path in summary["metrics"]]
    lines.append(f"report: {summary['report']['markdown']}")
    lines.append(f"run folder: {summary['run_dir']}")
    return lines
