"""Check our LeRobot datasets against LeRobot's own code (run in a venv with the full lerobot).

    # the venv: real torchvision is needed to decode video (about 7 GB: PyPI's torch is a CUDA build)
    python3 -m venv /tmp/lerobot-venv
    /tmp/lerobot-venv/bin/pip install torch==2.9.1 torchvision==0.24.1 && /tmp/lerobot-venv/bin/pip install lerobot==0.4.4

    # 1. a dataset exported here loads in LeRobotDataset and matches the demo file it came from
    python scripts/export_dataset.py --exp_name pick_cube_sim_vision --input demos.npz --output /tmp/ours
    /tmp/lerobot-venv/bin/python benchmarks/peers/lerobot_dataset_check.py read /tmp/ours demos.npz

    # 2. LeRobot writes a dataset (LeRobotDataset.create / add_frame / save_episode) from a demo
    #    file, gym-hil style: state with 4 extra components, a 'top' camera, gripper 0 = close .. 2
    #    = open; then import it here with the mapping the command prints
    /tmp/lerobot-venv/bin/python benchmarks/peers/lerobot_dataset_check.py write demos.npz /tmp/theirs

It imports only LeRobot, numpy and the standard library, never this project.
"""

from __future__ import annotations

import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only

import numpy as np  # noqa: E402


def read(root: str, demo: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("local/check", root=root, video_backend="pyav")
    print(f"LeRobotDataset: {dataset.num_episodes} episodes, {dataset.num_frames} frames, {dataset.fps} fps, "
          f"cameras {dataset.meta.camera_keys}")
    with np.load(demo) as d:
        actions, state = d["actions"], d["observations/state"]
        cameras = {k.removeprefix("observation.images."): d[f"observations/{k.removeprefix('observation.images.')}"]
                   for k in dataset.meta.camera_keys}
    assert dataset.num_frames == len(actions), (dataset.num_frames, len(actions))
    errors = {k: [] for k in cameras}
    for i in [*range(0, dataset.num_frames, 97), dataset.num_frames - 1]:
        item = dataset[i]
        np.testing.assert_allclose(item["action"].numpy(), actions[i])
        np.testing.assert_allclose(item["observation.state"].numpy(), state[i])
        for key, frames in cameras.items():
            image = (item[f"observation.images.{key}"].numpy().transpose(1, 2, 0) * 255).round()
            errors[key].append(np.abs(image - frames[i]).mean())
    print("actions and states equal; frames' mean absolute error (0..255): "
          + ", ".join(f"{k} {np.mean(v):.2f} (max {np.max(v):.2f})" for k, v in errors.items()))


def write(demo: str, root: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    shutil.rmtree(root, ignore_errors=True)
    with np.load(demo) as d:
        data = {k: d[k] for k in d.files if k != "manifest"}
    height, width = data["observations/front"].shape[1:3]
    video = {"dtype": "video", "shape": (height, width, 3), "names": ["height", "width", "channels"]}
    features = {
        "observation.state": {"dtype": "float32", "shape": (data["observations/state"].shape[1] + 4,), "names": None},
        "observation.images.top": video, "observation.images.wrist": video,
        "action": {"dtype": "float32", "shape": (4,), "names": ["delta_x", "delta_y", "delta_z", "gripper"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        "complementary_info.discrete_penalty": {"dtype": "float32", "shape": (1,), "names": ["discrete_penalty"]},
    }
    dataset = LeRobotDataset.create("local/hil", fps=10, root=root, features=features, use_videos=True)
    for i in range(len(data["actions"])):
        action = data["actions"][i].copy()
        action[3] = 1.0 - action[3]  # this project's +1 (close) .. -1 (open) -> 0 .. 2
        dataset.add_frame({
            "observation.state": np.concatenate([data["observations/state"][i], np.full(4, 7.0, np.float32)]),
            "observation.images.top": data["observations/front"][i], "observation.images.wrist": data["observations/wrist"][i],
            "action": action.astype(np.float32), "next.reward": np.array([data["rewards"][i]], np.float32),
            "next.done": np.array([data["dones"][i]]),
            "complementary_info.discrete_penalty": np.array([data.get("grasp_penalty", np.zeros(1))[i]], np.float32),
            "task": "pick the cube"})
        if data["dones"][i]:
            dataset.save_episode()
    dataset.finalize()
    state = data["observations/state"].shape[1]
    print(f"LeRobot wrote {dataset.num_episodes} episodes, {dataset.num_frames} frames to {root}; import it with\n"
          f"  python scripts/import_lerobot.py --exp_name pick_cube_sim_vision --dataset {root} "
          f"--set \"demos.lerobot.observations={{'state': 'observation.state[0:{state}]', 'front': "
          f"'observation.images.top'}}\" --set 'demos.lerobot.action_low=(-1,-1,-1,0)' "
          f"--set 'demos.lerobot.action_high=(1,1,1,2)' --set demos.lerobot.gripper_close=-1")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("read", "write"):
        sys.exit(__doc__)
    (read if sys.argv[1] == "read" else write)(sys.argv[2], sys.argv[3])
