"""Train an experiment's reward classifier from the frames record_success_fail.py recorded.

    cd experiments/pick_cube_sim_vision
    python ../../scripts/train_classifier.py --exp_name pick_cube_sim_vision

Reads every ``experiments/<exp>/<classifier.data_dir>/*.npz`` (or ``--data``), holds out whole
episodes (``classifier.holdout_fraction``), trains with class-balanced batches and random-shift
augmentation, and prints accuracy / precision / recall of the success decision on the held-out
episodes at the config's ``classifier.threshold`` (and at a few other thresholds, to help choose
it). The checkpoint goes to ``experiments/<exp>/<classifier.checkpoint>/`` (or ``--output``)
with the metrics in its ``classifier.json``; the experiment's env uses it for its reward.
``--set classifier.KEY=VALUE`` overrides the config (e.g. ``classifier.num_classes=3``).
"""

from __future__ import annotations

import json
import time

from absl import app, flags

from experiments import cli

_DATA = flags.DEFINE_multi_string("data", [], "Frames files (default: the experiment's data_dir/*.npz).")
_OUTPUT = flags.DEFINE_string("output", None, "Checkpoint folder (default: experiments/<exp>/<classifier.checkpoint>).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed (split, initialisation, batches).")


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in ("accuracy", "precision", "recall"))


def main(argv: list[str]) -> None:
    del argv
    from tqdm import tqdm

    from experiments.mappings import experiment_dir, resolve_path
    from serl_launcher.classifier import load_frames, save_classifier, train_classifier

    exp, config = cli.load()
    if "classifier" not in config:
        raise app.UsageError(f"experiment {cli.exp_name()!r} has no reward classifier (no 'classifier' config)")
    c = config.classifier
    from serl_launcher.networks.encoders import check_frozen_backbone

    try:
        check_frozen_backbone(c, "classifier")
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    paths = [resolve_path(cli.exp_name(), p) for p in _DATA.value]
    if not paths:
        data_dir = experiment_dir(cli.exp_name()) / c.data_dir
        paths = sorted(data_dir.glob("*.npz"))
        if not paths:
            raise app.UsageError(f"no frames in {data_dir}; record them first: python ../../scripts/"
                                 f"record_success_fail.py --exp_name {cli.exp_name()}")
    frames = load_frames(paths)
    n, ok = len(frames["success"]), int(frames["success"].sum())
    print(f"{n} frames ({ok} success, {n - ok} failure) from {len(set(frames['episode'].tolist()))} "
          f"episodes in {len(paths)} file(s)", flush=True)

    bar = tqdm(total=c.steps, desc="classifier", unit="step")
    start = time.perf_counter()
    _, params, report = train_classifier(frames, c, seed=_SEED.value,
                                         progress=lambda step, loss: (bar.update(step - bar.n), bar.set_postfix(loss=f"{loss:.4f}")))
    bar.close()
    report["train_seconds"] = time.perf_counter() - start
    report["data"] = [str(p) for p in paths]
    out = resolve_path(cli.exp_name(), _OUTPUT.value or c.checkpoint)
    shapes = {k: tuple(frames["images"][k].shape[1:]) for k in report["image_keys"]}
    save_classifier(out, params, report["image_keys"], shapes, c, report)

    print(f"held out: {report['heldout_frames']} frames from {report['heldout_episodes']} episodes "
          f"({report['heldout_success_frames']} success)")
    print(f"at threshold {c.threshold}: {_fmt(report['heldout'])}")
    for t, m in report["heldout_by_threshold"].items():
        print(f"  threshold {t}: {_fmt(m)}")
    if "heldout_stage_accuracy" in report:
        print(f"stage accuracy ({c.num_classes} classes): {report['heldout_stage_accuracy']:.3f}")
    print(f"saved the classifier to {out} ({report['train_seconds']:.0f} s of training)")
    print(json.dumps({"heldout": report["heldout"], "threshold": c.threshold}))


if __name__ == "__main__":
    cli.run(main)
