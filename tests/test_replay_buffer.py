"""ReplayBuffer invariants, mixed sampling, save/load and prefetch.

Frames encode (episode id, step) in the state and in every pixel, and actions encode the step
the transition starts from, so every sampled pair can be checked for being two consecutive
frames of one episode.
"""

import json
import threading

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from serl_launcher.data import (
    BufferFormatError,
    Prefetcher,
    ReplayBuffer,
    sample_mixed,
)
from serl_launcher.data import replay_buffer as rb_module

IMG = 8
CAMS = ("front", "wrist")


def make_spaces(img=IMG, cams=CAMS, action_dim=2):
    obs = {"state": spaces.Box(-np.inf, np.inf, (3,), np.float32)}
    obs.update({c: spaces.Box(0, 255, (img, img, 3), np.uint8) for c in cams})
    return spaces.Dict(obs), spaces.Box(-1e6, 1e6, (action_dim,), np.float32)


def frame(ep, step, img=IMG, cams=CAMS):
    pixel = np.array([ep % 256, step % 256, ep // 256], np.uint8)
    out = {"state": np.array([ep, step, 0.5], np.float32)}
    out.update({c: np.broadcast_to(pixel, (img, img, 3)).copy() for c in cams})
    return out


def transition(ep, step, done=False, terminated=False, intervened=False, **kw):
    return {
        "observations": frame(ep, step, **kw),
        "next_observations": frame(ep, step + 1, **kw),
        "actions": np.array([ep, step], np.float32),
        "rewards": np.float32(terminated),
        "masks": np.float32(not terminated),
        "dones": done or terminated,
        "intervened": intervened,
    }


def episode(ep, length, end="terminated"):
    """One episode; `end`: terminated, truncated (done, mask 1) or open (no done)."""
    out = [transition(ep, s) for s in range(length)]
    out[-1]["dones"] = end != "open"
    out[-1]["masks"] = np.float32(end != "terminated")
    return out


def check_batch(batch, cams=CAMS):
    """Assert every sampled pair is consecutive in one episode; return the set of (ep, step)."""
    obs, nxt = batch["observations"], batch["next_observations"]
    ep, step = obs["state"][:, 0], obs["state"][:, 1]
    np.testing.assert_array_equal(nxt["state"][:, 0], ep)
    np.testing.assert_array_equal(nxt["state"][:, 1], step + 1)
    np.testing.assert_array_equal(batch["actions"], obs["state"][:, :2])
    for cam in cams:
        for images, steps in ((obs[cam], step), (nxt[cam], step + 1)):
            pixels = images.reshape(len(images), -1, 3)
            assert (pixels == pixels[:, :1]).all(), "an image mixes two frames"
            np.testing.assert_array_equal(pixels[:, 0, 0] + 256 * pixels[:, 0, 2].astype(int), ep)
            np.testing.assert_array_equal(pixels[:, 0, 1], steps % 256)
    assert batch["rewards"].dtype == np.float32 and batch["dones"].dtype == bool
    return {(int(e), int(s)) for e, s in zip(ep, step, strict=True)}


def expected_valid(episodes, capacity):
    """Sampleable (ep, step) pairs: model of the row stream when every episode is its own chain."""
    rows = []
    for ts in episodes:
        rows.append(None)  # first row
        rows.extend((int(t["actions"][0]), int(t["actions"][1])) for t in ts)
    held = rows[-capacity:]
    return {r for i, r in enumerate(held) if i > 0 and r is not None}


def test_pairs_stay_in_episode_through_wraparound():
    rng = np.random.default_rng(0)
    capacity = 64
    buf = ReplayBuffer(*make_spaces(), capacity=capacity, seed=0)
    episodes = [
        episode(ep, int(rng.integers(1, 15)), end=("terminated", "truncated", "open")[ep % 3])
        for ep in range(40)
    ]
    for i, ts in enumerate(episodes):
        for t in ts:
            buf.insert(t)
        if i in (3, 17, 39):  # mid-stream checks as well as at the end
            assert buf.rows <= capacity
            want = expected_valid(episodes[: i + 1], capacity)
            assert len(buf) == len(want)
            assert check_batch(buf.sample(4000)) == want


def test_intervention_segments_are_never_stitched():
    # The original's bug B1: steps 0, 1, 5, 6, 9 of one episode with no dones in between.
    buf = ReplayBuffer(*make_spaces(), capacity=32, seed=0)
    buf.insert_many([transition(0, s) for s in (0, 1, 5, 6, 9)])
    assert len(buf) == 5 and buf.rows == 3 + 3 + 2  # three chains, one first row each
    assert check_batch(buf.sample(500)) == {(0, 0), (0, 1), (0, 5), (0, 6), (0, 9)}


def test_transitions_come_back_oldest_first_and_interventions_alone():
    buf = ReplayBuffer(*make_spaces(), capacity=24, seed=0)
    stream = [transition(ep, s, intervened=s % 3 == 0) for ep in range(4) for s in range(6)]
    for t in stream:
        t["dones"] = t["actions"][1] == 5
    buf.insert_many(stream)  # 28 rows into 24: the oldest episode's first rows are gone
    held = buf.transitions()
    assert len(held) == len(buf)
    pairs = [tuple(int(x) for x in t["actions"]) for t in held]
    assert pairs == sorted(pairs) and pairs[-1] == (3, 5)
    check_batch({k: (np.stack([t[k] for t in held]) if k not in ("observations", "next_observations")
                     else {c: np.stack([t[k][c] for t in held]) for c in held[0][k]}) for k in held[0]})
    interventions = buf.transitions(intervened_only=True)
    assert [tuple(int(x) for x in t["actions"]) for t in interventions] == [p for p in pairs if p[1] % 3 == 0]
    assert all(t["intervened"] for t in interventions)
    copy = ReplayBuffer(*make_spaces(), capacity=64)
    assert copy.insert_many(interventions) == len(interventions)  # they insert as transitions


def test_contiguous_steps_share_frames():
    buf = ReplayBuffer(*make_spaces(), capacity=32)
    buf.insert_many(episode(0, 10, end="open"))
    buf.insert(transition(0, 10, done=True))  # continues: same frame, no new first row
    buf.insert(transition(0, 11))  # after dones a new chain starts even if frames matched
    assert len(buf) == 12 and buf.rows == 1 + 11 + 2


def test_overwritten_predecessor_is_never_sampled():
    buf = ReplayBuffer(*make_spaces(), capacity=5, seed=1)
    buf.insert_many(episode(0, 12))
    # Rows held: transitions starting at steps 7..11; step 7's observation frame is overwritten.
    assert len(buf) == 4
    assert check_batch(buf.sample(500)) == {(0, 8), (0, 9), (0, 10), (0, 11)}


def test_sampling_is_seeded_and_empty_buffer_raises():
    a, b = (ReplayBuffer(*make_spaces(), capacity=50, seed=3) for _ in range(2))
    with pytest.raises(ValueError, match="no sampleable"):
        a.sample(4)
    for buf in (a, b):
        buf.insert_many(episode(0, 20))
    sa, sb = a.sample(32), b.sample(32)
    np.testing.assert_array_equal(sa["observations"]["front"], sb["observations"]["front"])
    np.testing.assert_array_equal(sa["actions"], sb["actions"])


def _bad(mutate):
    t = transition(0, 0)
    mutate(t)
    return t


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (
            _bad(lambda t: t["observations"].update(front=np.zeros((4, 4, 3), np.uint8))),
            r"observations\['front'\]: shape",
        ),
        (
            _bad(lambda t: t["next_observations"].update(wrist=np.zeros((IMG, IMG, 3)))),
            r"next_observations\['wrist'\]: dtype",
        ),
        (
            _bad(lambda t: t["observations"].pop("state")),
            r"observations: missing key\(s\) \['state'\]",
        ),
        (
            _bad(lambda t: t["observations"].update(depth=np.zeros(2))),
            r"unexpected key\(s\) \['depth'\]",
        ),
        (_bad(lambda t: t.update(actions=np.array([np.nan, 0.0]))), "actions: contains NaN"),
        (_bad(lambda t: t.update(actions=np.zeros(3))), "actions: shape"),
        (_bad(lambda t: t.pop("rewards")), "missing key.*rewards"),
        (_bad(lambda t: t.update(dones=2)), "dones: expected a bool"),
        ("not a dict", "expected a transition dict"),
    ],
)
def test_insert_rejects_bad_transitions(bad, match):
    buf = ReplayBuffer(*make_spaces(), capacity=8)
    with pytest.raises(ValueError, match=match):
        buf.insert(bad)
    assert buf.rows == 0


def test_grasp_penalty_is_required_when_enabled_and_insert_many_is_atomic():
    buf = ReplayBuffer(*make_spaces(), capacity=16, include_grasp_penalty=True)
    with pytest.raises(ValueError, match="grasp_penalty"):
        buf.insert(transition(0, 0))
    ts = [dict(transition(0, s), grasp_penalty=-0.1 * s) for s in range(4)]
    ts[2]["actions"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="transition 2: actions"):
        buf.insert_many(ts)
    assert buf.rows == 0
    ts[2]["actions"] = np.array([0, 2], np.float32)
    assert buf.insert_many(ts) == 4
    batch = buf.sample(64)
    np.testing.assert_allclose(batch["grasp_penalty"], -0.1 * batch["actions"][:, 1], rtol=1e-6)


def test_float64_state_and_python_scalars_are_accepted():
    buf = ReplayBuffer(*make_spaces(), capacity=16)
    for s in range(3):
        t = transition(0, s)
        for key in ("observations", "next_observations"):
            t[key]["state"] = t[key]["state"].astype(np.float64) + 0.1  # not exact in float32
        t.update(rewards=0, masks=1.0, dones=False, intervened=0)
        buf.insert(t)
    assert buf.rows == 4  # still one chain: frames compared after casting to the stored dtype


def test_memory_is_about_one_frame_per_transition():
    capacity = 200
    buf = ReplayBuffer(*make_spaces(img=32), capacity=capacity)
    frame_bytes = sum(v.nbytes for v in frame(0, 0, img=32).values())
    naive = capacity * (2 * frame_bytes + 2 * 4 + 4 + 4 + 1 + 1)  # obs + next_obs + the rest
    assert capacity * frame_bytes < buf.nbytes < 0.55 * naive


def test_mixed_batches_have_the_requested_proportions():
    online = ReplayBuffer(*make_spaces(), capacity=256, seed=0)
    demo = ReplayBuffer(*make_spaces(), capacity=256, seed=1)
    for ep in range(10):
        online.insert_many(episode(ep, 12))
    with pytest.raises(ValueError, match="demo buffer is empty"):
        sample_mixed(online, demo, 256)
    with pytest.raises(ValueError, match="online and demo buffers differ"):
        sample_mixed(online, ReplayBuffer(*make_spaces(img=4), capacity=8), 256)
    all_online = sample_mixed(online, demo, 256, allow_empty_demo=True)
    assert (all_online["observations"]["state"][:, 0] < 1000).all()
    for ep in range(1000, 1005):
        demo.insert_many([dict(t, intervened=True) for t in episode(ep, 12)])
    for fraction, n_demo in ((0.5, 128), (0.25, 64), (0.0, 0), (1.0, 256)):
        batch = sample_mixed(online, demo, 256, demo_fraction=fraction)
        check_batch(batch)
        from_demo = batch["observations"]["state"][:, 0] >= 1000
        assert from_demo.tolist() == [False] * (256 - n_demo) + [True] * n_demo
        np.testing.assert_array_equal(batch["intervened"], from_demo)
    # Per-minibatch mixing: reshaped to (utd, B), every minibatch is half demo.
    batch = sample_mixed(online, demo, 4 * 64, num_minibatches=4)
    from_demo = (batch["observations"]["state"][:, 0] >= 1000).reshape(4, 64)
    assert from_demo.sum(axis=1).tolist() == [32] * 4
    with pytest.raises(ValueError, match="not divisible"):
        sample_mixed(online, demo, 100, num_minibatches=3)


# ---------------------------------------------------------------------- save / load


def _filled(capacity=64, n_episodes=25, seed=0):
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(*make_spaces(), capacity=capacity, seed=seed)
    for ep in range(n_episodes):
        ts = episode(ep, int(rng.integers(1, 12)), end=("terminated", "truncated", "open")[ep % 3])
        buf.insert_many(ts[::2] if ep % 4 == 0 else ts)  # some non-contiguous segments too
    return buf


def assert_same(a, b, n=512):
    assert (len(a), a.rows, a.num_inserted) == (len(b), b.rows, b.num_inserted)
    a.seed(7)
    b.seed(7)
    sa, sb = a.sample(n), b.sample(n)
    for key in ("actions", "rewards", "masks", "dones", "intervened"):
        np.testing.assert_array_equal(sa[key], sb[key])
    for key in ("observations", "next_observations"):
        for k in sa[key]:
            np.testing.assert_array_equal(sa[key][k], sb[key][k])
    check_batch(sa)


def test_save_load_round_trip(tmp_path):
    buf = _filled()
    manifest = buf.save(tmp_path, chunk_bytes=20 * 500)  # small chunks: several files
    info = json.loads(manifest.read_text())
    assert len(info["chunks"]) > 1 and info["rows_written"] > buf.capacity
    loaded = ReplayBuffer.load(tmp_path, *make_spaces())
    assert_same(buf, loaded)
    # The open chain survives: the same continuation goes on without a new first row.
    for b in (buf, loaded):
        b.insert_many([transition(500, 0), transition(500, 1)])
        b.insert(transition(500, 2, done=True))
    assert_same(buf, loaded)
    # Other capacities keep the most recent rows, with the episode structure.
    bigger = ReplayBuffer.load(tmp_path, *make_spaces(), capacity=200)
    assert len(bigger) == len(ReplayBuffer.load(tmp_path, *make_spaces()))
    smaller = ReplayBuffer.load(tmp_path, *make_spaces(), capacity=10)
    assert smaller.rows == 10 and 0 < len(smaller) < 10
    check_batch(smaller.sample(200))


def test_incremental_save(tmp_path):
    buf = ReplayBuffer(*make_spaces(), capacity=64, seed=0)
    buf.insert_many(episode(0, 10))
    buf.save(tmp_path)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("chunk-*.npz")}
    buf.insert_many(episode(1, 10))
    buf.save(tmp_path)
    second = {p.name: p.read_bytes() for p in tmp_path.glob("chunk-*.npz")}
    assert len(second) == len(first) + 1 and all(second[k] == v for k, v in first.items())
    buf.insert_many(episode(2, 60))  # wraps: the first chunks' rows are all overwritten
    buf.save(tmp_path)
    third = {p.name: p.read_bytes() for p in tmp_path.glob("chunk-*.npz")}
    assert not third.keys() & first.keys()
    loaded = ReplayBuffer.load(tmp_path, *make_spaces())
    assert_same(buf, loaded)
    # A restored buffer keeps appending to the directory it came from.
    loaded.insert_many(episode(3, 5))
    loaded.save(tmp_path)
    fourth = {p.name: p.read_bytes() for p in tmp_path.glob("chunk-*.npz")}
    assert len(fourth.keys() - third.keys()) == 1
    assert all(fourth[k] == third[k] for k in fourth.keys() & third.keys())
    assert_same(loaded, ReplayBuffer.load(tmp_path, *make_spaces()))


def test_crash_mid_save_leaves_the_previous_save(tmp_path, monkeypatch):
    buf = _filled(capacity=200, n_episodes=10)
    buf.save(tmp_path, chunk_bytes=4000)
    snapshot = ReplayBuffer.load(tmp_path, *make_spaces(), capacity=200)
    buf.insert_many(episode(99, 40))
    real, calls = rb_module._atomic_write, []

    def crashing(path, payload):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(path, payload)

    monkeypatch.setattr(rb_module, "_atomic_write", crashing)
    with pytest.raises(OSError, match="disk full"):
        buf.save(tmp_path, chunk_bytes=4000)
    monkeypatch.undo()
    assert not list(tmp_path.glob(".tmp-*"))
    assert_same(snapshot, ReplayBuffer.load(tmp_path, *make_spaces(), capacity=200))
    buf.save(tmp_path)  # and the next save completes it
    assert_same(buf, ReplayBuffer.load(tmp_path, *make_spaces(), capacity=200))


def test_save_while_inserting_keeps_chunks_contiguous(tmp_path, monkeypatch):
    buf = _filled(capacity=64, n_episodes=10)
    real = rb_module._atomic_write

    def insert_during_save(path, payload):
        real(path, payload)
        if path.name.startswith("chunk-") and buf.num_inserted < 200:
            buf.insert_many(episode(buf.num_inserted + 1000, 30))  # overwrites unsaved rows

    monkeypatch.setattr(rb_module, "_atomic_write", insert_during_save)
    buf.save(tmp_path, chunk_bytes=20 * 500)
    monkeypatch.undo()
    loaded = ReplayBuffer.load(tmp_path, *make_spaces())
    assert 0 < len(loaded) < len(buf) and loaded.rows <= 64
    check_batch(loaded.sample(500))


def _saved(tmp_path):
    buf = _filled()
    buf.save(tmp_path, chunk_bytes=20 * 500)
    return json.loads((tmp_path / "manifest.json").read_text())


def test_corrupt_or_missing_chunk_is_named(tmp_path):
    chunk = tmp_path / _saved(tmp_path)["chunks"][1]["file"]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(BufferFormatError, match=f"{chunk.name}: checksum mismatch"):
        ReplayBuffer.load(tmp_path, *make_spaces())
    chunk.unlink()
    buf = _filled(seed=1)
    with pytest.raises(BufferFormatError, match=f"{chunk.name}: chunk file is missing"):
        buf.restore(tmp_path)
    assert buf.rows == 0  # a failed restore leaves the buffer empty, not half-filled


def test_bad_manifest_and_mismatched_spaces_are_named(tmp_path):
    _saved(tmp_path)
    with pytest.raises(
        BufferFormatError, match=r"observation 'front' saved as .*\[8, 8, 3\].*\[16, 16, 3\]"
    ):
        ReplayBuffer.load(tmp_path, *make_spaces(img=16))
    with pytest.raises(BufferFormatError, match="action saved as"):
        ReplayBuffer.load(tmp_path, *make_spaces(action_dim=3))
    with pytest.raises(BufferFormatError, match="observation 'wrist'"):
        ReplayBuffer.load(tmp_path, *make_spaces(cams=("front",)))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])
    with pytest.raises(BufferFormatError, match="manifest.json: unreadable manifest"):
        ReplayBuffer.load(tmp_path, *make_spaces())
    with pytest.raises(FileNotFoundError, match="no buffer manifest"):
        ReplayBuffer.load(tmp_path / "nothing", *make_spaces())


# ---------------------------------------------------------------------- prefetch


def test_prefetch_delivers_in_order_and_transforms_in_its_thread():
    counter = iter(range(1000))
    with Prefetcher(
        lambda: next(counter), depth=3, transform=lambda x: (x, threading.current_thread().name)
    ) as pf:
        got = [next(pf) for _ in range(20)]
    assert [x for x, _ in got] == list(range(20))
    assert {name for _, name in got} == {"prefetch"}
    assert not pf.alive
    with pytest.raises(RuntimeError, match="closed"):
        pf.get()


def test_prefetch_reraises_sampler_errors():
    calls = iter(range(1000))

    def sampler():
        i = next(calls)
        if i == 3:
            raise KeyError("boom")
        return i

    pf = Prefetcher(sampler, depth=2)
    assert [pf.get(timeout=5) for _ in range(3)] == [0, 1, 2]
    for _ in range(2):
        with pytest.raises(KeyError, match="boom"):
            pf.get(timeout=5)
    pf.close()
    assert not pf.alive


def test_insert_while_prefetching():
    buf = ReplayBuffer(*make_spaces(), capacity=300, seed=0)
    buf.insert_many(episode(0, 10))
    with Prefetcher(lambda: buf.sample(64), depth=2) as pf:
        for ep in range(1, 60):
            buf.insert_many(episode(ep, 8))
            check_batch(next(pf))


# ---------------------------------------------------------------------- the real env


def test_real_env_transitions_insert_and_sample():
    import sim_envs  # noqa: F401  (registers the envs)

    env = gym.make("PandaPickCubeVision-v0", image_height=32, image_width=32, max_episode_steps=6)
    buf = ReplayBuffer(env.observation_space, env.action_space, capacity=100, seed=0)
    recorded = {}
    env.action_space.seed(0)
    for episode_seed in range(2):
        obs, _ = env.reset(seed=episode_seed)
        done = False
        while not done:
            action = env.action_space.sample()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            t = dict(
                observations=obs,
                next_observations=next_obs,
                actions=action,
                rewards=reward,
                masks=1.0 - terminated,
                dones=done,
                intervened=False,
            )
            buf.insert(t)
            recorded[next_obs["state"].tobytes()] = t
            obs = next_obs
    env.close()
    assert len(buf) == len(recorded) == 12 and buf.rows == 14
    batch = buf.sample(64)
    assert batch["observations"]["front"].shape == (64, 32, 32, 3)
    for i in range(64):
        t = recorded[batch["next_observations"]["state"][i].tobytes()]
        for key, value in t["observations"].items():
            np.testing.assert_array_equal(batch["observations"][key][i], value)
        np.testing.assert_array_equal(
            batch["next_observations"]["wrist"][i], t["next_observations"]["wrist"]
        )
        np.testing.assert_array_equal(batch["actions"][i], t["actions"])
