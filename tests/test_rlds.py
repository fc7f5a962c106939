"""RLDS export (extra [rlds]; skipped where tensorflow-datasets is not installed, as in CI: see
README "Data in and out"): a round trip through tensorflow-datasets' own reader gives back the
same arrays, the final observation of every episode included, and the RLDS step flags."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from test_lerobot import episode_transitions  # noqa: E402

from serl_launcher.data.episodes import Episode  # noqa: E402
from serl_launcher.data.rlds import export_rlds, read_rlds  # noqa: E402


def test_rlds_round_trip_through_tensorflow_datasets(tmp_path):
    episodes = [Episode(episode_transitions(0, 4, terminal=True), complete=True),
                Episode(episode_transitions(1, 3, terminal=False), complete=True),   # truncated
                Episode(episode_transitions(2, 2, terminal=False), complete=False)]  # still open
    episodes[2].transitions[-1]["dones"] = False
    folder = export_rlds(tmp_path / "rlds", episodes, "pick_demos", source="test")
    assert folder == tmp_path / "rlds" / "pick_demos" / "1.0.0" and (folder / "dataset_info.json").is_file()

    # The RLDS layout as another tool reads it: N + 1 steps, flags, metadata.
    builder = tfds.builder_from_directory(str(folder))
    read = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
    assert [len(list(e["steps"])) for e in read] == [5, 4, 3]
    steps = list(read[0]["steps"])
    assert [bool(s["is_first"]) for s in steps] == [True, False, False, False, False]
    assert [bool(s["is_last"]) for s in steps] == [False, False, False, False, True]
    assert [bool(s["is_terminal"]) for s in steps] == [False, False, False, False, True]
    assert [float(s["discount"]) for s in steps[:-1]] == [1, 1, 1, 0]
    assert not list(read[1]["steps"])[-1]["is_terminal"]  # truncated: last, not terminal
    assert [bool(e["episode_metadata"]["complete"]) for e in read] == [True, True, False]
    assert [bool(e["episode_metadata"]["success"]) for e in read] == [True, False, False]
    np.testing.assert_array_equal([s["is_intervention"] for s in steps[:-1]],
                                  [t["intervened"] for t in episodes[0].transitions])

    back = read_rlds(folder)
    for ours, theirs in zip(episodes, back, strict=True):
        assert theirs.complete == ours.complete and len(theirs) == len(ours)
        for a, b in zip(ours.transitions, theirs.transitions, strict=True):
            for key in ("actions", "rewards", "masks", "dones", "intervened", "grasp_penalty"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            for name in ("observations", "next_observations"):  # the last next observation too
                for key in a[name]:
                    np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}[{key}]")
    with pytest.raises(FileExistsError):
        export_rlds(tmp_path / "rlds", episodes, "pick_demos")
    with pytest.raises(ValueError, match="lower-case"):
        export_rlds(tmp_path / "rlds", episodes, "Pick Demos")
