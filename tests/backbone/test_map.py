"""The shared map: covisibility, spanning tree, point bookkeeping, local window, save/load, threads."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from slam.errors import DataError
from slam.backbone.frontend.features import Features
from slam.geometry import PinholeCamera, inv_pose, make_pose, so3_exp
from slam.backbone.map.map import Map
from slam.backbone.map.map_io import load_map, map_to_arrays, save_map
from slam.backbone.map.mappoint import MapPoint, most_distinctive, predict_levels


def make_features(n: int, rng: np.random.Generator, octave: int = 0) -> Features:
    uv = rng.uniform(0, 640, (n, 2))
    return Features(
        uv=uv,
        uv_und=uv + 0.25,
        octave=np.full(n, octave, dtype=np.int32),
        angle=rng.uniform(0, 360, n).astype(np.float32),
        desc=rng.integers(0, 256, (n, 32), dtype=np.uint8),
        depth=rng.uniform(0.5, 5.0, n),
        u_right=rng.uniform(0, 640, n),
    )


def build(n_kf: int, n_kp: int = 200, seed: int = 0, **kw) -> Map:
    """A map of ``n_kf`` keyframes one metre apart along x, no points."""
    rng = np.random.default_rng(seed)
    m = Map(**kw)
    for i in range(n_kf):
        T_w_c = make_pose(np.eye(3), [float(i), 0.0, 0.0])
        m.new_keyframe(10 * i, 0.5 * i, inv_pose(T_w_c), make_features(n_kp, rng))
    return m


def share(m: Map, kf_ids: list[int], n: int) -> list[MapPoint]:
    """Create ``n`` points seen by all of ``kf_ids``, each on the next free keypoint of every keyframe."""
    out = []
    for _ in range(n):
        kfs = [m.keyframes[k] for k in kf_ids]
        slots = [int(np.flatnonzero(kf.point_ids < 0)[0]) for kf in kfs]
        p = m.new_point(np.array([0.5, 0.0, 4.0]), kfs[0], slots[0])
        for kf, i in zip(kfs[1:], slots[1:]):
            m.associate(kf, i, p)
        out.append(p)
    return out


def tree_is_connected(m: Map) -> bool:
    for k in m.keyframes:
        seen = set()
        while k != m.root_id:
            if k in seen or k not in m.keyframes or m.keyframes[k].parent_id < 0:
                return False
            seen.add(k)
            k = m.keyframes[k].parent_id
    return True


# ------------------------------------------------------------ covisibility
def test_covisibility_weights_order_and_min_weight_rule():
    m = build(4)
    share(m, [0, 1], 20)
    share(m, [0, 2], 16)
    share(m, [1, 2], 5)
    share(m, [0, 1, 2], 3)
    share(m, [2, 3], 4)
    share(m, [1, 3], 2)
    for k in range(4):
        m.keyframes[k].update_connections(m)
    kf0, kf1, kf2, kf3 = (m.keyframes[k] for k in range(4))
    # weights 0-1: 23, 0-2: 19, 1-2: 8 (below 15: dropped), 2-3: 4, 1-3: 2
    assert kf0.connections == {1: 23, 2: 19}
    assert kf1.connections == {0: 23}
    assert kf2.connections == {0: 19, 3: 4}  # 3 keeps only its best (4 < 15), mirrored on 2
    assert kf3.connections == {2: 4}
    assert kf0.covisibles() == [1, 2]
    assert kf0.covisibles(n=1) == [1]
    assert kf0.covisibles(min_weight=20) == [1]
    assert kf2.covisibles(min_weight=15) == [0]
    assert [kf.parent_id for kf in (kf0, kf1, kf2, kf3)] == [-1, 0, 0, 2]
    assert kf0.children == {1, 2} and kf2.children == {3}
    # a lower threshold keeps the weak edge, on both sides, and the cache follows
    kf1.update_connections(m, min_weight=5)
    assert kf1.connections == {0: 23, 2: 8}  # 1-3 shares 2 < 5: still dropped
    assert kf1.covisibles()[:2] == [0, 2] and kf2.weight(1) == 8
    kf1.update_connections(m)  # back to the strict rule: the edge to 2 goes from both sides
    assert 2 not in kf1.connections and 1 not in kf2.connections
    assert m.check_consistency() == []
    assert kf0.tracked_points() == 39 and kf0.tracked_points(min_obs=3) == 3


def test_erase_observation_turns_point_bad_below_min_obs():
    m = build(3)
    (p,) = share(m, [0, 1, 2], 1)
    i0 = p.observations[0]
    assert p.ref_kf_id == 0
    assert m.erase_observation(0, p) is False  # two left: still good; the reference moves on
    assert p.ref_kf_id == 1 and not p.bad and m.keyframes[0].point_ids[i0] == -1
    i1 = p.observations[1]
    assert m.erase_observation(2, p) is True  # one left: bad and erased everywhere
    assert p.bad and p.id not in m.points and m.keyframes[1].point_ids[i1] == -1
    assert not m.valid_mask([p.id])[0]
    assert m.check_consistency(spanning_tree=False) == []

    m1 = build(2, min_point_obs=1)
    (q,) = share(m1, [0, 1], 1)
    assert m1.erase_observation(1, q) is False and not q.bad


def test_associate_moves_links():
    m = build(2)
    a, b = share(m, [0], 2)
    kf0, kf1 = m.keyframes[0], m.keyframes[1]
    m.associate(kf1, 7, a)
    m.associate(kf1, 9, a)  # same keyframe, other keypoint: the old link goes
    assert kf1.point_ids[7] == -1 and kf1.point_ids[9] == a.id and a.observations[1] == 9
    m.associate(kf1, 9, b)  # keypoint taken over by b: a loses keyframe 1
    assert 1 not in a.observations and b.observations[1] == 9
    assert m.check_consistency(spanning_tree=False) == []
    m.erase_point(a)
    with pytest.raises(ValueError):
        m.associate(kf0, 50, a)


# ------------------------------------------------------------ spanning tree
def test_erase_keyframe_reparents_children_and_keeps_tree_connected():
    m = build(5)
    share(m, [0, 1], 30)
    share(m, [1, 2], 30)
    share(m, [0, 2], 16)
    share(m, [1, 3], 25)
    share(m, [2, 3], 18)
    share(m, [1, 4], 20)
    for k in range(5):
        m.keyframes[k].update_connections(m)
    assert [m.keyframes[k].parent_id for k in range(5)] == [-1, 0, 1, 1, 1]
    T1_kf = m.keyframes[1]
    T1 = T1_kf.T_c_w.copy()
    assert m.erase_keyframe(0) is False  # the root stays
    assert m.erase_keyframe(1) is True
    assert T1_kf.bad and T1_kf.T_c_parent is not None
    assert 1 not in m.keyframes
    # 2 joins 0 (16 shared), then 3 joins 2 (18 shared); 4 sees neither and goes to 0
    assert m.keyframes[2].parent_id == 0 and m.keyframes[3].parent_id == 2 and m.keyframes[4].parent_id == 0
    assert m.keyframes[0].children == {2, 4} and m.keyframes[2].children == {3}
    assert tree_is_connected(m)
    assert all(1 not in kf.connections for kf in m.keyframes.values())
    assert all(1 not in p.observations for p in m.points.values())
    assert len(m.points) == 16 + 18  # points seen only by 1 and one other lost their second observation
    np.testing.assert_allclose(m.keyframe_pose(1), T1, atol=1e-12)
    assert m.check_consistency() == []
    assert m.erase_keyframe(2) and tree_is_connected(m) and m.keyframes[3].parent_id == 0
    with pytest.raises(ValueError, match="not a good keyframe"):
        m.new_point([0.0, 0.0, 1.0], T1_kf, 0)


def test_root_of_a_later_map_is_never_erased():
    """After tracking is lost a new map starts in the same Map: its first keyframe has no parent.

    Erasing it would leave frames tracked against it without a pose (a KeyError when the
    trajectory is written, after the whole run).
    """
    m = build(4)
    share(m, [0, 1], 30)
    share(m, [2, 3], 30)  # keyframes 2, 3: a second map, not connected to 0, 1
    m.origins.add(2)  # as the tracker's new_keyframe(..., starts_map=True) marks it
    for k in range(4):
        m.keyframes[k].update_connections(m)
    assert [m.keyframes[k].parent_id for k in range(4)] == [-1, 0, -1, 2]
    T3 = m.keyframes[3].T_c_w.copy()
    assert m.erase_keyframe(2) is False
    assert m.erase_keyframe(3) is True  # it has a parent: erased, its pose kept relative to 2
    np.testing.assert_allclose(m.keyframe_pose(3), T3, atol=1e-12)
    assert m.check_consistency() == []


# ---------------------------------------------------------------- fusion
def test_replace_point_merges_observations():
    m = build(3)
    old = m.new_point([1.0, 0.0, 4.0], 0, 5)
    m.associate(1, 6, old)
    new = m.new_point([1.0, 0.0, 4.1], 1, 7)
    m.associate(2, 8, new)
    old.n_visible, old.n_found = 5, 3
    new.n_visible, new.n_found = 4, 2
    out = m.replace_point(old, new)
    assert out is new
    assert new.observations == {1: 7, 2: 8, 0: 5}
    assert m.keyframes[0].point_ids[5] == new.id and m.keyframes[1].point_ids[6] == -1
    assert old.bad and old.replaced_by == new.id and old.id not in m.points
    assert m.resolve_point_id(old.id) == new.id and m.resolve_point_id(new.id) == new.id
    assert (new.n_visible, new.n_found) == (9, 5) and new.found_ratio == pytest.approx(5 / 9)
    assert m.check_consistency(spanning_tree=False) == []
    # a chain of fusions resolves to the survivor; an erased point to -1
    third = m.new_point([0.0, 0.0, 3.0], 0, 20)
    m.replace_point(new, third)
    assert m.resolve_point_id(old.id) == third.id
    m.erase_point(third)
    assert m.resolve_point_id(old.id) == -1


# ------------------------------------------------------------ local window
def test_local_window_on_a_chain():
    m = build(6)
    for i in range(5):  # keyframes i and i+1 share 16 + i points
        share(m, [i, i + 1], 16 + i)
    for k in range(6):
        m.keyframes[k].update_connections(m)
    assert m.keyframes[3].covisibles() == [4, 2]
    win = m.local_window(3, n_covisible=1)
    assert win.keyframe_ids == [3, 4]
    assert win.point_ids.dtype == np.int64 and len(win.point_ids) == 18 + 19 + 20
    assert win.fixed_ids == [5, 2]
    kf_ids, point_ids, fixed = m.local_window(3, n_covisible=2, max_fixed=1)
    assert kf_ids == [3, 4, 2] and len(point_ids) == 17 + 18 + 19 + 20 and fixed == [5]
    assert np.all(np.diff(point_ids) > 0) and np.all(m.valid_mask(point_ids))
    assert m.local_window(0, n_covisible=5).fixed_ids == [2]


# ------------------------------------------------------ point descriptors
def nested(nbits: int) -> np.ndarray:
    """A descriptor whose first ``nbits`` bits are set: Hamming distance between two is the difference."""
    return np.packbits(np.arange(256) < nbits)


def test_distinctive_descriptor_closed_form():
    # bit counts 10, 0, 4, 3, 2: lower medians of |i - j| are 7, 3, 2, 1, 2 -> the 3-bit one (index 3)
    descs = np.array([nested(b) for b in (10, 0, 4, 3, 2)])
    assert most_distinctive(descs) == 3
    m = build(5)
    p = m.new_point([0.0, 0.0, 2.0], 0, 0)
    for k in range(5):
        m.keyframes[k].features.desc[k] = descs[k]
        m.associate(k, k, p)
    m.update_point(p)
    np.testing.assert_array_equal(p.descriptor, descs[3])
    np.testing.assert_array_equal(m.descriptors_of([p.id])[0], descs[3])


def test_normal_and_distance_range():
    m = Map(scale_factor=1.2, n_levels=8)
    rng = np.random.default_rng(2)
    a = m.new_keyframe(0, 0.0, np.eye(4), make_features(10, rng, octave=2))
    b = m.new_keyframe(1, 0.1, inv_pose(make_pose(np.eye(3), [5.0, 0.0, 0.0])), make_features(10, rng))
    np.testing.assert_allclose(b.center, [5.0, 0.0, 0.0])
    p = m.new_point([0.0, 0.0, 5.0], a, 3)
    m.associate(b, 4, p)
    m.update_point(p)
    n = np.array([0.0, 0.0, 1.0]) + np.array([-1.0, 0.0, 1.0]) / np.sqrt(2)
    np.testing.assert_allclose(p.normal, n / np.linalg.norm(n), atol=1e-12)
    assert p.max_distance == pytest.approx(5.0 * 1.2**2)
    assert p.min_distance == pytest.approx(5.0 * 1.2**2 / 1.2**7)
    np.testing.assert_allclose(m.distance_ranges_of([p.id])[0], [p.min_distance, p.max_distance])
    assert p.predict_scale(5.0, 1.2, 8) == 2  # seen from where it was created: same level
    assert p.predict_scale(5.0 * 1.2, 1.2, 8) == 1
    assert p.predict_scale(1.0, 1.2, 8) == 7 and p.predict_scale(100.0, 1.2, 8) == 0
    np.testing.assert_array_equal(predict_levels(np.full(3, 7.2), [5.0, 6.0, 50.0], 1.2, 8), [2, 1, 0])


def test_point_arrays_follow_point_edits_and_growth():
    m = build(2, n_kp=3000)
    pts = [m.new_point([float(i), 0.0, 1.0], 0, i) for i in range(3000)]  # beyond the first capacity
    ids = np.array([p.id for p in pts])
    np.testing.assert_array_equal(m.points_array(ids)[:, 0], np.arange(3000.0))
    pts[10].position = [1.0, 2.0, 3.0]
    pts[11].position += 1.0
    np.testing.assert_array_equal(m.points_array([10, 11]), [[1.0, 2.0, 3.0], [12.0, 1.0, 2.0]])
    m.set_positions([12], [[7.0, 7.0, 7.0]])
    np.testing.assert_array_equal(pts[12].position, [7.0, 7.0, 7.0])
    m.count_visible([5, 5, 6])
    m.count_found([5])
    assert (pts[5].n_visible, pts[5].n_found, pts[6].n_visible) == (3, 2, 2)
    with pytest.raises(ValueError):
        m.points_array([-1])
    # a free-standing point moves its numbers into the map when added
    q = MapPoint(-1, [9.0, 9.0, 9.0], np.full(32, 3, np.uint8), ref_kf_id=1)
    q.add_observation(1, 0)
    m.keyframes[1].point_ids[0] = m.add_point(q).id
    np.testing.assert_array_equal(m.points_array([q.id])[0], [9.0, 9.0, 9.0])
    assert m.descriptors_of([q.id])[0, 0] == 3 and m.check_consistency(spanning_tree=False) == []
    with pytest.raises(ValueError, match="never reused"):
        m.add_point(MapPoint(5, [0.0, 0.0, 0.0]))


def test_trajectory_stats_reset():
    m = build(3)
    m.keyframes[0].timestamp = 9.0  # out of id order: the trajectory sorts by time
    share(m, [0, 1], 3)
    traj = m.keyframe_trajectory()
    np.testing.assert_array_equal(traj.timestamps, [0.5, 1.0, 9.0])
    np.testing.assert_allclose(traj.positions[:, 0], [1.0, 2.0, 0.0])
    s = m.stats()
    assert s["keyframes"] == 3 and s["points"] == 3 and s["observations"] == 6
    m.reset()
    assert m.stats()["keyframes"] == 0 and m.next_point_id == 0 and len(m.keyframe_trajectory()) == 0


# ------------------------------------------------------------- save / load
def rich_map() -> Map:
    cam = PinholeCamera(640, 480, 500.0, 505.0, 320.0, 240.0, (0.1, -0.01, 0.001, 0.0))
    m = build(6, seed=3, camera=cam, scale_factor=1.25, n_levels=6)
    rng = np.random.default_rng(4)
    for i in range(5):
        for p in share(m, [i, i + 1], 15 + i):
            p.position = rng.normal(size=3)
    share(m, [0, 2, 4], 5)
    for k in range(6):
        m.keyframes[k].update_connections(m)
        m.keyframes[k].T_c_w = inv_pose(make_pose(np.eye(3), rng.normal(size=3)))
    ids = m.point_ids()
    m.count_visible(ids[::2], 3)
    m.count_found(ids[::3])
    m.replace_point(int(ids[0]), int(ids[1]))
    m.keyframes[0].loop_edges.add(5)
    m.keyframes[5].loop_edges.add(0)
    m.erase_keyframe(3)
    assert m.check_consistency() == []
    return m


def assert_maps_equal(a: Map, b: Map) -> None:
    assert (a.camera, a.scale_factor, a.n_levels, a.min_point_obs) == (b.camera, b.scale_factor, b.n_levels, b.min_point_obs)
    assert (a.next_kf_id, a.next_point_id, a.root_id, a.replaced) == (b.next_kf_id, b.next_point_id, b.root_id, b.replaced)
    assert a.erased_keyframes.keys() == b.erased_keyframes.keys()
    for k, (parent, T) in a.erased_keyframes.items():
        assert b.erased_keyframes[k][0] == parent and np.array_equal(b.erased_keyframes[k][1], T)
    assert list(a.keyframes) == list(b.keyframes)
    for k, ka in a.keyframes.items():
        kb = b.keyframes[k]
        assert (ka.frame_index, ka.timestamp, ka.parent_id, ka.children, ka.loop_edges, ka.bad) == (
            kb.frame_index, kb.timestamp, kb.parent_id, kb.children, kb.loop_edges, kb.bad
        )
        assert ka.connections == kb.connections and ka.covisibles() == kb.covisibles()
        assert np.array_equal(ka.T_c_w, kb.T_c_w) and np.array_equal(ka.point_ids, kb.point_ids)
        for name in ("uv", "uv_und", "octave", "angle", "desc", "depth", "u_right"):
            fa, fb = getattr(ka.features, name), getattr(kb.features, name)
            assert fa.dtype == fb.dtype and np.array_equal(fa, fb), name
        assert (ka.thumbnail is None) == (kb.thumbnail is None)
        assert ka.thumbnail is None or np.array_equal(ka.thumbnail, kb.thumbnail)
    assert sorted(a.points) == sorted(b.points)
    for pid, pa in a.points.items():
        pb = b.points[pid]
        assert list(pa.observations.items()) == list(pb.observations.items())
        assert (pa.ref_kf_id, pa.first_kf_id, pa.n_visible, pa.n_found, pa.bad) == (
            pb.ref_kf_id, pb.first_kf_id, pb.n_visible, pb.n_found, pb.bad
        )
        assert (pa.min_distance, pa.max_distance) == (pb.min_distance, pb.max_distance)
        for name in ("position", "normal", "descriptor"):
            assert np.array_equal(getattr(pa, name), getattr(pb, name)), name


def test_save_load_round_trip_is_exact(tmp_path):
    m = rich_map()
    path = tmp_path / "map.npz"
    save_map(m, path)
    with np.load(path, allow_pickle=False) as z:  # no pickle anywhere in the file
        assert json.loads(str(z["meta"][()]))["version"] == 1
    m2 = load_map(path)
    assert_maps_equal(m, m2)
    assert m2.check_consistency() == []
    a1, a2 = map_to_arrays(m), map_to_arrays(m2)
    assert a1.keys() == a2.keys() and all(np.array_equal(a1[k], a2[k]) for k in a1)
    # the loaded map keeps working: new ids continue, keyframe 3's pose still resolves
    p = m2.new_point([0.0, 0.0, 1.0], 0, 199)
    assert p.id == m.next_point_id
    np.testing.assert_array_equal(m2.keyframe_pose(3), m.keyframe_pose(3))
    assert m2.keyframes[2].tracked_points(2) == m.keyframes[2].tracked_points(2)


def test_thumbnails_round_trip(tmp_path):
    m = rich_map()
    rng = np.random.default_rng(9)
    for k in (0, 2, 5):  # keyframes 1 and 4 have none
        m.keyframes[k].thumbnail = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    save_map(m, tmp_path / "map.npz")
    with np.load(tmp_path / "map.npz", allow_pickle=False) as z:
        assert z["kf_thumbnail"].shape == (5, 120, 160, 3) and z["kf_has_thumbnail"].tolist() == [1, 0, 1, 0, 1]
    assert_maps_equal(m, load_map(tmp_path / "map.npz"))
    a = map_to_arrays(m)
    rewrite(tmp_path / "map.npz", kf_thumbnail=a["kf_thumbnail"][:, :60].copy())
    with pytest.raises(DataError, match="kf_thumbnail"):
        load_map(tmp_path / "map.npz")


def test_empty_map_round_trip(tmp_path):
    save_map(Map(), tmp_path / "empty.npz")
    m = load_map(tmp_path / "empty.npz")
    assert m.stats()["keyframes"] == 0 and m.camera is None


def test_failed_save_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "map.npz"
    m1 = rich_map()
    save_map(m1, path)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    m2 = build(2)
    with pytest.raises(OSError, match="disk full"):
        save_map(m2, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["map.npz"]  # the temporary file is gone
    assert_maps_equal(m1, load_map(path))


def rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("truncate", "not a readable map file"),
        ("garbage", "not a readable map file"),
        ("version", "version"),
        ("shape", "pt_position"),
        ("missing", "observations"),
        ("reference", "unknown id"),
        ("nan", "NaN"),
    ],
)
def test_corrupt_file_raises_data_error(tmp_path, damage, reason):
    path = tmp_path / "map.npz"
    m = rich_map()
    save_map(m, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a map" * 100)
    else:
        a = map_to_arrays(m)
        if damage == "version":
            meta = json.loads(str(a["meta"][()]))
            meta["version"] = 99
            rewrite(path, meta=np.array(json.dumps(meta)))
        elif damage == "shape":
            rewrite(path, pt_position=a["pt_position"][:, :2].copy())
        elif damage == "missing":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k != "observations"}
            with open(path, "wb") as f:
                np.savez(f, **arrays)
        elif damage == "reference":
            obs = a["observations"].copy()
            obs[0, 1] = 1000
            rewrite(path, observations=obs)
        elif damage == "nan":
            pos = a["pt_position"].copy()
            pos[0, 0] = np.nan
            rewrite(path, pt_position=pos)
    with pytest.raises(DataError, match=reason) as e:
        load_map(path)
    assert str(path) in str(e.value)


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_map(tmp_path / "nope.npz")


# ---------------------------------------------------------------- threads
def test_threads_adding_and_erasing_points_keep_the_map_consistent():
    m = build(4, n_kp=400)
    errors: list[BaseException] = []
    stop = time.monotonic() + 0.4

    def adder(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while time.monotonic() < stop:
                with m.lock:  # several calls that must see one state
                    a, b = (m.keyframes[int(k)] for k in rng.choice(4, 2, replace=False))
                    fa, fb = np.flatnonzero(a.point_ids < 0), np.flatnonzero(b.point_ids < 0)
                    if len(fa) == 0 or len(fb) == 0:
                        continue
                    p = m.new_point(rng.normal(size=3), a, int(rng.choice(fa)))
                    m.associate(b, int(rng.choice(fb)), p)
                kf = m.keyframes[int(rng.integers(4))]
                kf.update_connections(m)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    def eraser(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while time.monotonic() < stop:
                ids = m.point_ids()
                if len(ids) == 0:
                    continue
                pid = int(rng.choice(ids))
                with m.lock:
                    if pid in m.points:
                        if rng.random() < 0.5:
                            m.erase_point(pid)
                        else:
                            m.erase_observation(next(iter(m.points[pid].observations)), pid)
                kf = m.keyframes[int(rng.integers(4))]
                with m.lock:
                    _, pids = kf.matched()
                    assert np.all(m.valid_mask(pids))
                    m.points_array(pids)
                m.local_window(kf, n_covisible=2)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=adder, args=(1,)), threading.Thread(target=eraser, args=(2,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert m.check_consistency() == []
    assert m.next_point_id > 0


def test_new_points_batch_equals_one_by_one():
    rng = np.random.default_rng(7)
    feats = make_features(50, rng)
    feats.octave[:] = rng.integers(0, 8, 50)
    T_c_w = make_pose(np.eye(3), [0.3, -0.2, 0.1])
    X = rng.uniform([-1, -1, 2], [1, 1, 5], size=(20, 3))
    idx = rng.choice(50, 20, replace=False)
    one, batch = Map(), Map()
    kf1 = one.new_keyframe(0, 0.0, T_c_w, feats)
    kf2 = batch.new_keyframe(0, 0.0, T_c_w, feats)
    ids1 = [one.new_point(x, kf1, int(i)).id for x, i in zip(X, idx)]
    ids2 = batch.new_points(X, kf2, idx)
    assert list(ids2) == ids1 and np.array_equal(kf1.point_ids, kf2.point_ids)
    for a, b in zip(ids1, ids2):
        p, q = one.points[a], batch.points[int(b)]
        assert p.observations == q.observations and np.array_equal(p.descriptor, q.descriptor)
        np.testing.assert_allclose(q.normal, p.normal, atol=1e-12)
        np.testing.assert_allclose([q.min_distance, q.max_distance], [p.min_distance, p.max_distance], rtol=1e-12)
    with pytest.raises(ValueError, match="already have a map point"):
        batch.new_points(X[:1], kf2, idx[:1])


def _random_observed_map(seed: int) -> Map:
    """12 keyframes in random poses, 300 points each seen by 1..12 of them (random keypoints, octaves)."""
    rng = np.random.default_rng(seed)
    m = Map(scale_factor=1.2, n_levels=8)
    for i in range(12):
        f = make_features(400, rng)
        f.octave[:] = rng.integers(0, 8, 400)
        f.desc[:] = rng.integers(0, 256, (1, 32), dtype=np.uint8) ^ (rng.random((400, 32)) < 0.1).astype(np.uint8)
        m.new_keyframe(i, float(i), inv_pose(make_pose(so3_exp(rng.normal(0, 0.3, 3)), rng.normal(0, 1, 3))), f)
    for _ in range(300):
        kfs = rng.choice(12, int(rng.integers(1, 13)), replace=False)
        slots = [int(rng.choice(np.flatnonzero(m.keyframes[int(k)].point_ids < 0))) for k in kfs]
        p = m.new_point(rng.normal([0, 0, 4], 1.0), int(kfs[0]), slots[0], update=False)
        for k, i in zip(kfs[1:], slots[1:]):
            m.associate(int(k), i, p)
        p.ref_kf_id = int(rng.choice(kfs)) if rng.random() < 0.8 else 99  # 99: no such keyframe
    return m


def _refresh_point_plain(m: Map, p: MapPoint) -> None:
    """ORB-SLAM's UpdateNormalAndDepth and ComputeDistinctiveDescriptors, one point, written plainly."""
    obs = [(m.keyframes[k], i) for k, i in p.observations.items() if k in m.keyframes]
    if not obs:
        return
    if p.ref_kf_id not in [kf.id for kf, _ in obs]:
        p.ref_kf_id = obs[0][0].id
    rays = [p.position - kf.center for kf, _ in obs]
    mean = sum(r / np.linalg.norm(r) for r in rays)
    p.normal = mean / np.linalg.norm(mean)
    j = [kf.id for kf, _ in obs].index(p.ref_kf_id)
    p.max_distance = float(np.linalg.norm(rays[j])) * m.scale_factor ** int(obs[j][0].features.octave[obs[j][1]])
    p.min_distance = p.max_distance / m.scale_factor ** (m.n_levels - 1)
    descs = [kf.features.desc[i] for kf, i in obs]
    medians = [sorted(int(np.unpackbits(a ^ b).sum()) for b in descs)[(len(descs) - 1) // 2] for a in descs]
    p.descriptor = descs[int(np.argmin(medians))]


def test_refresh_points_equals_a_plain_per_point_reference():
    one, batch = _random_observed_map(3), _random_observed_map(3)
    # a culled keyframe: points it was the reference of fall back to their first remaining observation
    for m in (one, batch):
        m.erase_keyframe(5)
    ids = one.point_ids()
    for pid in ids.tolist():
        _refresh_point_plain(one, one.points[pid])
    batch.refresh_points(np.concatenate([ids, ids[:5], [10**6 - 1]]))  # duplicates and unknown ids are skipped
    a, b = one._arrays, batch._arrays
    np.testing.assert_allclose(b.normal[ids], a.normal[ids], atol=1e-12)
    np.testing.assert_allclose(b.distance[ids], a.distance[ids], rtol=1e-12)
    np.testing.assert_array_equal(b.descriptor[ids], a.descriptor[ids])
    assert [batch.points[i].ref_kf_id for i in ids.tolist()] == [one.points[i].ref_kf_id for i in ids.tolist()]
    n_obs = np.array([len(one.points[i].observations) for i in ids.tolist()])
    assert (n_obs >= 3).sum() > 100  # the grouped median path is exercised, with many group sizes
    assert len(np.unique(n_obs)) > 6


def test_refresh_points_normals_only_keeps_descriptors():
    m = _random_observed_map(4)
    before = m._arrays.descriptor.copy()
    m.refresh_points(m.point_ids(), descriptors=False)
    np.testing.assert_array_equal(m._arrays.descriptor, before)
    assert np.all(np.abs(np.linalg.norm(m._arrays.normal[m.point_ids()], axis=1) - 1.0) < 1e-12)


def test_tracked_points_counts_good_points_by_observations():
    m = _random_observed_map(5)
    kf = m.keyframes[2]
    ids = kf.point_ids[kf.point_ids >= 0]
    m.erase_point(int(ids[0]))
    for min_obs in (0, 1, 2, 4):
        expect = sum(1 for pid in kf.point_ids[kf.point_ids >= 0].tolist()
                     if pid in m.points and not m.points[pid].bad and len(m.points[pid].observations) >= min_obs)
        assert kf.tracked_points(min_obs) == expect


def test_observation_table_lists_good_observations_by_point():
    m = _random_observed_map(6)
    for kf in list(m.keyframes.values()):
        kf.update_connections(m)  # a spanning tree, so a keyframe can be erased
    gone = next(k for k in range(1, 12) if m.erase_keyframe(k))
    ids = np.concatenate([m.point_ids()[:40], [10**6 - 1]])  # an unknown id contributes nothing
    row, kf, kp = m.observation_table(ids)
    expected = [(r, k, i) for r, pid in enumerate(ids.tolist()) if pid in m.points
                for k, i in m.points[pid].observations.items() if k in m.keyframes]
    assert list(zip(row.tolist(), kf.tolist(), kp.tolist())) == expected
    assert gone not in kf.tolist() and len(expected) > 100


# ------------------------------------------------------------ oversized map files (issue 14 item 6)
def peak_bytes_of(fn) -> tuple[object, int]:
    """``fn()``'s result (or the DataError it raised) and the peak of Python/numpy allocations while it ran."""
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            out = fn()
        except DataError as e:
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def write_with_zero_member(src, dst, name: str, n_bytes: int) -> None:
    """``src``'s members copied to ``dst`` with member ``name`` (replaced or added) an int64 array of ``n_bytes``
    of zeros, deflated while written (a few hundred KB on disk)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for info in zin.infolist():
            if info.filename != name + ".npy":
                zout.writestr(info.filename, zin.read(info))
        with zout.open(name + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (n_bytes // 8,)})
            chunk = bytes(1 << 22)
            for _ in range(n_bytes // len(chunk)):
                f.write(chunk)


ZEROS = 1 << 27  # 128 MiB: what the old loader held in memory for such a member


def test_huge_next_point_id_is_a_data_error_without_allocating(tmp_path):
    path = tmp_path / "map.npz"
    save_map(rich_map(), path)
    meta = json.loads(str(map_to_arrays(rich_map())["meta"][()]))
    meta["next_point_id"] = 10**13
    rewrite(path, meta=np.array(json.dumps(meta)))
    err, peak = peak_bytes_of(lambda: load_map(path))  # was a MemoryError (point arrays reserved per id)
    assert isinstance(err, DataError) and str(path) in str(err), err
    assert "next_point_id 10000000000000 / next_kf_id 6 beyond what this loader accepts" in str(err)
    assert peak < 8 << 20


def test_member_larger_than_the_header_allows_is_refused_before_reading(tmp_path):
    good, bad = tmp_path / "map.npz", tmp_path / "bad.npz"
    save_map(rich_map(), good)
    write_with_zero_member(good, bad, "erased_kf_id", ZEROS)
    err, peak = peak_bytes_of(lambda: load_map(bad))  # was read whole (128 MiB), then refused for its shape
    assert isinstance(err, DataError) and str(err).startswith(f"{bad}: member 'erased_kf_id' holds {ZEROS + 128} "
                                                              "bytes, more than the"), err
    assert peak < 8 << 20


def test_unknown_member_is_not_read(tmp_path):
    good, extra = tmp_path / "map.npz", tmp_path / "extra.npz"
    m = rich_map()
    save_map(m, good)
    write_with_zero_member(good, extra, "junk", ZEROS)
    m2, peak = peak_bytes_of(lambda: load_map(extra))  # was read whole (128 MiB) and dropped
    assert isinstance(m2, Map), m2
    assert_maps_equal(m, m2)
    assert peak < 32 << 20


def test_member_whose_array_header_claims_more_than_it_holds(tmp_path):
    import io
    import zipfile

    good, bad = tmp_path / "map.npz", tmp_path / "bad.npz"
    save_map(rich_map(), good)
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "replaced.npy":  # 2**40 rows declared, none there
                head = np.lib.format.header_data_from_array_1_0(np.zeros((0, 2), np.int64))
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, {**head, "shape": (1 << 40, 2)})
                data = buf.getvalue()
            zout.writestr(info.filename, data)
    err, peak = peak_bytes_of(lambda: load_map(bad))
    assert isinstance(err, DataError) and "member 'replaced' declares shape (1099511627776, 2)" in str(err), err
    assert peak < 8 << 20


def test_members_expanding_far_beyond_the_file_are_refused(tmp_path, monkeypatch):
    from slam.backbone.map import map_io

    path = tmp_path / "map.npz"
    save_map(rich_map(), path, compress=True)
    load_map(path)  # within the limits
    monkeypatch.setattr(map_io, "MIN_EXPANSION_BYTES", 0)
    monkeypatch.setattr(map_io, "MAX_EXPANSION", 1)  # numpy's deflate makes this map 1.4x smaller
    with pytest.raises(DataError, match=r"members decompress to \d+ bytes from a \d+-byte file"):
        load_map(path)
