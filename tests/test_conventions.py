import numpy as np
import pytest

from serl_launcher import conventions
from serl_launcher.conventions import StateLayout


def test_state_layout_slices_pack_and_unpack():
    layout = StateLayout.from_names(("tcp_pose", "gripper_pose", "cube_pos"), {"cube_pos": 3})
    assert layout.size == 11
    assert layout.slice("tcp_pose") == slice(0, 7)
    assert layout.slice("gripper_pose") == slice(7, 8)
    assert layout.slice("cube_pos") == slice(8, 11)
    values = {"tcp_pose": np.arange(7), "gripper_pose": [0.5], "cube_pos": [1.0, 2.0, 3.0]}
    vec = layout.pack(values)
    assert vec.dtype == np.float32
    np.testing.assert_array_equal(vec, [0, 1, 2, 3, 4, 5, 6, 0.5, 1, 2, 3])
    batch = np.stack([vec, vec * 2])
    unpacked = layout.unpack(batch)
    np.testing.assert_array_equal(unpacked["cube_pos"], [[1, 2, 3], [2, 4, 6]])


def test_state_layout_rejects_bad_fields():
    with pytest.raises(ValueError, match="unknown state fields"):
        StateLayout.from_names(("tcp_pose", "cube_pos"))
    with pytest.raises(ValueError, match="duplicate"):
        StateLayout((("a", 1), ("a", 2)))
    layout = StateLayout.from_names(("tcp_pose",))
    with pytest.raises(KeyError, match="no state field 'tcp_vel'"):
        layout.slice("tcp_vel")
    with pytest.raises(ValueError, match="needs 7"):
        layout.unpack(np.zeros(6))


def test_quaternion_order_and_sign():
    wxyz = np.array([0.5, 0.1, 0.2, 0.3])
    np.testing.assert_array_equal(conventions.wxyz_to_xyzw(wxyz), [0.1, 0.2, 0.3, 0.5])
    np.testing.assert_array_equal(conventions.xyzw_to_wxyz(conventions.wxyz_to_xyzw(wxyz)), wxyz)
    ref = np.array([1.0, 0.0, 0.0, 0.0])
    q = np.array([-0.99, 0.1, 0.0, 0.0])
    np.testing.assert_array_equal(conventions.align_quat_sign(q, ref), -q)
    np.testing.assert_array_equal(conventions.align_quat_sign(-q, ref), -q)


def test_a_chosen_state_layout_keeps_the_offered_order_and_refuses_bad_choices():
    from serl_launcher.conventions import StateLayout

    known = ("tcp_pose", "tcp_vel", "gripper_pose", "tcp_force")
    layout = StateLayout.choose(("tcp_force", "gripper_pose", "tcp_pose"), known, owner="RealArmEnv")
    assert layout.fields == (("tcp_pose", 7), ("gripper_pose", 1), ("tcp_force", 3))
    for names, problem in (((), "empty"), (("tcp_pose", "nope"), r"unknown \['nope'\]"),
                           (("tcp_pose", "tcp_pose"), r"given twice \['tcp_pose'\]")):
        with pytest.raises(ValueError, match=f"{problem}; RealArmEnv offers"):
            StateLayout.choose(names, known, owner="RealArmEnv")
    with pytest.raises(ValueError, match="is one string; give a tuple"):  # --set env.state_fields=tcp_pose
        StateLayout.choose("tcp_pose", known)
    with pytest.raises(ValueError, match=r"missing \['gripper_pose'\].*needs \['gripper_pose'\]"):
        StateLayout.choose(("tcp_pose",), known, required=("gripper_pose",))
