"""The flags every entry point shares (experiments/cli.py), parsed by absl as a user's command
line is: --exp_name / --set, and ml_collections' --config file with typed --config.<key>
overrides, which reach the config and the processes a launcher starts."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import REPO

DRIVER = """
import json
from experiments import cli

def main(argv):
    exp, config = cli.load()
    print(json.dumps({"exp_name": cli.exp_name(), "overrides": cli.overrides(), "config_exp": config.exp_name,
                      "utd": config.agent.utd_ratio, "fields": list(config.env.get("state_fields", ())),
                      "devices": config.learner.devices, "module": exp.__name__}))

cli.run(main)
"""


@pytest.fixture
def driver(tmp_path, python, subprocess_env):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)

    def run(*args):
        return subprocess.run([python, str(script), *args], env=subprocess_env, capture_output=True, text=True,
                              timeout=120, cwd=REPO)
    return run


def test_a_config_file_with_typed_overrides_and_set_reaches_the_config(driver):
    result = driver("--config", "experiments/peg_insert_sim/config.py", "--config.agent.utd_ratio=8",
                    "--config.env.state_fields=('tcp_pose','tcp_vel','gripper_pose')", "--config.learner.devices=2",
                    "--set", "agent.utd_ratio=6")
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["exp_name"] == "peg_insert_sim"  # a registered experiment's file: its registered name
    assert out["module"] == "experiments.peg_insert_sim.config"
    assert out["utd"] == 6  # --set applies after --config.<key>
    assert out["fields"] == ["tcp_pose", "tcp_vel", "gripper_pose"]
    assert out["devices"] == "2"  # a text setting stays text
    # What a launcher passes its child processes: the same settings, as --set items.
    assert out["overrides"] == ["agent.utd_ratio=8", "env.state_fields=('tcp_pose', 'tcp_vel', 'gripper_pose')",
                                "learner.devices='2'", "agent.utd_ratio=6"]


def test_a_users_own_file_by_config_or_exp_name_is_the_same_experiment(driver):
    own = str(REPO / "examples" / "own_env.py")
    by_config = driver("--config", own, "--config.agent.utd_ratio=2")
    by_name = driver("--exp_name", own, "--set", "agent.utd_ratio=2")
    assert by_config.returncode == 0 and by_name.returncode == 0, by_config.stderr[-2000:] + by_name.stderr[-2000:]
    a, b = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (by_config, by_name))
    assert a["exp_name"] == b["exp_name"] == own and a["config_exp"] == b["config_exp"] == own
    assert a["utd"] == b["utd"] == 2


def test_a_whole_config_dict_given_as_an_override_reaches_the_children_as_a_literal(driver):
    result = driver("--config", "experiments/pick_cube_sim/config.py",
                    "--config.learner.distributed={'coordinator': 'h:1', 'num_processes': 2, 'process_id': 0}")
    assert result.returncode == 0, result.stderr[-2000:]
    overrides = json.loads(result.stdout.strip().splitlines()[-1])["overrides"]
    assert overrides == ["learner.distributed={'coordinator': 'h:1', 'num_processes': 2, 'process_id': 0}"]


def test_a_config_file_imports_its_neighbours_as_with_exp_name(tmp_path, driver):
    (tmp_path / "my_settings.py").write_text("UTD = 3\n")
    own = tmp_path / "task.py"
    own.write_text((REPO / "examples" / "own_env.py").read_text().replace(
        "c.agent.utd_ratio = 4", "from my_settings import UTD\n    c.agent.utd_ratio = UTD"))
    result = driver("--config", str(own), "--config.agent.batch_size=64")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["utd"] == 3


@pytest.mark.parametrize("args, message", [
    ((), "name the experiment: --exp_name"),
    (("--exp_name", "pick_cube_sim", "--config", "experiments/pick_cube_sim/config.py"), "both name the experiment"),
    (("--config", "experiments/pick_cube_sim/config.py", "--config.agent.nope=3"), "no config key 'nope'"),
    (("--config", "experiments/pick_cube_sim/config.py", "--config.agent.utd_ratio=abc"), "invalid literal for int"),
    (("--config.agent.utd_ratio=3", "--config", "experiments/pick_cube_sim/config.py"), "before a value for --config"),
    (("--exp_name", "pick_cube_sim", "--set", "agent.nope=3"), "no config key 'nope'"),
    (("--exp_name", "no_such_experiment"), "unknown experiment 'no_such_experiment'"),
    (("--config", "experiments/pick_cube_sim"), "is a folder: give its config file"),
    (("--config", "experiments/pick_cube_sim", "--config.agent.utd_ratio=3"), "cannot read the config file"),
    (("--config", "/no/such/file.py", "--config.agent.utd_ratio=3"), "cannot read the config file"),
    (("--config", "experiments/pick_cube_sim/config.py", "--config.agent.utd_ratio.x=1"), "does not exist"),
])
def test_bad_experiment_flags_are_one_line_errors(driver, args, message):
    result = driver(*args)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_an_entry_point_takes_the_config_file(tmp_path, python, subprocess_env):
    """record_demos.py with the experiment given as --config and a typed override, as a user runs it
    (that the overrides reach the config: the driver tests above)."""
    out = tmp_path / "demos.npz"
    result = subprocess.run(
        [python, str(REPO / "scripts/record_demos.py"), "--config", str(REPO / "examples/own_env.py"),
         "--config.env.max_steps=25", "--successes_needed", "2", "--output", str(out)],
        env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from serl_launcher.data import load_demos

    assert sum(bool(t["dones"]) for t in load_demos(out)) == 2  # two successful episodes, from the file's experiment
