"""(Re)write the report of a run: success rate, episode return and intervention rate plots against
wall-clock and env steps, report.json and report.md, all in the run folder.

    python scripts/report.py experiments/pick_cube_sim/runs/quickstart-20260101-120000
    python scripts/report.py --exp_name pick_cube_sim first_run --window 50

Works on a running or crashed run too (it only reads the metrics files).
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from experiments import cli

_WINDOW = flags.DEFINE_integer("window", 20, "Episodes per rolling window.")


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: report.py RUN_FOLDER [--window N] [--exp_name EXP]")
    from serl_launcher.utils.report import report_lines, write_report

    if cli.overrides():
        raise app.UsageError("report.py reads a run's records: config overrides (--set, --config.<key>) do not apply")
    folder = Path(argv[1])
    exp_name = cli.exp_name(required=False)  # resolves RUN_FOLDER as a run of it when not a folder as given
    if not folder.is_dir() and exp_name:
        from experiments.mappings import run_dir

        folder = run_dir(exp_name, argv[1])
    if _WINDOW.value < 1:
        raise app.UsageError("--window must be at least 1")
    try:
        summary = write_report(folder, window=_WINDOW.value)
    except FileNotFoundError as error:
        raise SystemExit(f"report.py: {error}") from None
    print("\n".join(report_lines(summary)))


if __name__ == "__main__":
    cli.run(main)
