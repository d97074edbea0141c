"""``slam-run SEQ --map OLD/map.npz``: relocalise in a saved map and go on in its frame; bad maps refused."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from slam.backbone.map.map_io import check_map_for_run, load_map
from slam.cli.run import main
from slam.datasets import open_sequence
from slam.errors import DataError
from slam.eval import compute
from slam.synth.generate import generate
from slam.trajectory import read_tum
from tests.conftest import small_demo

N, FIRST, LATER = 50, 30, 15  # frames; the first run maps 0-29, the second pass runs over 15-49


def _later_part(seq, dest, start: int):
    """The sequence from frame ``start`` on (same files, shorter lists): a later visit of the same place."""
    dest.mkdir()
    for name in ("camera.yaml", "synth.json", "groundtruth.txt"):
        shutil.copy(seq / name, dest / name)
    for name in ("rgb", "depth"):
        (dest / name).symlink_to(seq / name)
        lines = (seq / f"{name}.txt").read_text().splitlines(keepends=True)
        (dest / f"{name}.txt").write_text("".join(lines[:1] + lines[1 + start:]))
    return dest


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """50 frames of the demo trajectory at 320x240 (RGB-D), the first 30 mapped; and frames 15-49 of it."""
    root = tmp_path_factory.mktemp("map")
    seq = generate(small_demo(N, imu=False, stereo=False), root / "seq", progress=False)
    out = root / "run1"
    assert main([str(seq), "--out", str(out), "--max-frames", str(FIRST), "--sync-mapping", "--no-progress"]) == 0
    return seq, out, _later_part(seq, root / "later", LATER)


def _ate_in_first_runs_frame(seq, run1, run2) -> float:
    """ATE RMSE (m) of run2 against the ground truth aligned to run1 (no alignment of run2 of its own)."""
    gt = open_sequence(seq).groundtruth()
    T = compute(gt, read_tum(run1 / "trajectory.txt"), "se3").T_align
    est = read_tum(run2 / "trajectory.txt")
    idx = np.searchsorted(gt.timestamps, est.timestamps - 1e-6)
    p = est.positions @ T[:3, :3].T + T[:3, 3]
    return float(np.sqrt(np.mean(np.sum((p - gt.positions[idx]) ** 2, axis=1))))


def test_second_pass_relocalises_in_the_saved_map_and_tracks_in_its_frame(first_run, tmp_path):
    seq, run1, later = first_run
    old = load_map(run1 / "map.npz")
    out = tmp_path / "run2"
    assert main([str(later), "--out", str(out), "--map", str(run1 / "map.npz"), "--sync-mapping",
                 "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["loaded_map"]["file"] == str(run1 / "map.npz") and s["loaded_map"]["keyframes"] == len(old.keyframes)
    assert s["loaded_map"]["relocalized_at_frame"] == 0 and s["initialising_frames"] == 0
    assert s["relocalizations"][0]["frame"] == 0 and s["relocalizations"][0]["loaded_map"]
    assert s["lost_frames"] == [] and s["tracked_frames"] == N - LATER and [m["id"] for m in s["maps"]] == [0]
    # the saved map holds the old keyframes and the new ones mapped past the first run's end, ids continuing
    new = load_map(out / "map.npz")
    added = set(new.keyframes) - set(old.keyframes)
    assert len(set(old.keyframes) & set(new.keyframes)) >= len(old.keyframes) - 1  # (culling may take one)
    assert added and min(added) >= old.next_kf_id and new.next_point_id > old.next_point_id
    assert s["keyframes"] == len(new.keyframes)
    ate = _ate_in_first_runs_frame(seq, run1, out)
    # Without the map the run starts in a frame of its own (its first pose the identity), off by the 20 frames'
    # motion: the trivial answer, measured the same way.
    plain = tmp_path / "plain"
    assert main([str(later), "--out", str(plain), "--sync-mapping", "--no-progress"]) == 0
    ate_plain = _ate_in_first_runs_frame(seq, run1, plain)
    print(f"\n  second pass with --map: ATE {1e3 * ate:.1f} mm in the first run's frame; "
          f"without: {1e3 * ate_plain:.0f} mm")
    assert ate <= 0.01 < 0.1 * ate_plain


def _refused(argv, out, capsys) -> str:
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    assert main(argv + ["--out", str(out), "--no-progress"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # nothing written, nothing overwritten
    return capsys.readouterr().err


def test_map_of_another_camera_or_feature_pyramid_is_refused(first_run, tmp_path, capsys):
    seq, run1, later = first_run
    other = tmp_path / "other"
    shutil.copytree(later, other, symlinks=True)
    cam = (other / "camera.yaml").read_text()
    (other / "camera.yaml").write_text(cam.replace("fx: 262.5", "fx: 300.0"))
    assert "fx: 300.0" in (other / "camera.yaml").read_text()
    err = _refused([str(other), "--map", str(run1 / "map.npz")], tmp_path / "o1", capsys)
    assert str(run1 / "map.npz") in err and "camera fx 262.5 in the map, 300 for this sequence" in err
    err = _refused([str(later), "--map", str(run1 / "map.npz"), "--set", "features.n_levels=6"],
                   tmp_path / "o2", capsys)
    assert str(run1 / "map.npz") in err and "features.n_levels 8 in the map, 6" in err


@pytest.mark.parametrize("damage,message", [("truncated", "not a readable map file"),
                                            ("not a zip", "not a readable map file"),
                                            ("version", "unsupported map file version 99")])
def test_corrupt_map_is_refused_naming_the_file(first_run, tmp_path, capsys, damage, message):
    _, run1, later = first_run
    data = (run1 / "map.npz").read_bytes()
    bad = tmp_path / "map.npz"
    if damage == "version":
        with np.load(run1 / "map.npz") as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"][()]))
        arrays["meta"] = np.array(json.dumps({**meta, "version": 99}))
        np.savez(bad, **arrays)
    else:
        bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"hello" * 100)
    err = _refused([str(later), "--map", str(bad)], tmp_path / "out", capsys)
    assert str(bad) in err and message in err


def test_monocular_map_is_refused_for_a_run_with_depth(first_run):
    _, run1, _ = first_run
    m = load_map(run1 / "map.npz")
    for kf in m.keyframes.values():  # as a monocular run leaves them: no depth measurement
        kf.features.u_right[:] = -1.0
        kf.features.depth[:] = 0.0
    path = run1 / "map.npz"
    check_map_for_run(m, path, m.camera, m.scale_factor, m.n_levels, "mono")  # mono may use it
    with pytest.raises(DataError, match="built monocularly"):
        check_map_for_run(m, path, m.camera, m.scale_factor, m.n_levels, "rgbd")


def test_map_with_launch_or_camera_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--camera", "0", "--map", str(tmp_path / "map.npz"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "--map: only for a replay" in capsys.readouterr().err


def test_loaded_map_that_never_relocalises_gives_way_to_a_new_map(first_run):
    """Frames of a place the map has not seen (mirrored): after reloc_max_frames a map of their own starts."""
    from slam.backbone.config import SlamConfig
    from slam.backbone.frontend.tracking import State
    from slam.backbone.system import System

    _, run1, later = first_run
    old = load_map(run1 / "map.npz")
    n_old, next_old, first_old = len(old.keyframes), old.next_kf_id, min(old.keyframes)
    seq = open_sequence(later)
    seq.use_streams("rgbd")
    cfg = SlamConfig()
    cfg.tracking.reloc_max_frames = 3
    system = System(seq.camera, "rgbd", cfg, threaded=False, initial_map=old)
    frames = [f for _, f in zip(range(6), seq)]
    mirrored = [dataclasses.replace(f, image=np.ascontiguousarray(f.image[:, ::-1]),
                                    depth=np.ascontiguousarray(f.depth[:, ::-1])) for f in frames]
    states = [system.process(f).state for f in mirrored]
    system.shutdown()
    # not relocalised: "initialising" (no pose, not lost tracking) until the third failure, then a new map
    assert states[:3] == [State.NOT_INITIALIZED] * 3 and states[3:] == [State.OK] * 3
    assert system.tracker.relocalizations == [] and system.tracker.map_id == 1
    assert {r.map_id for r in system.records} == {1}
    new_kfs = [k for k in system.map.keyframes if k >= next_old]
    assert new_kfs and len(system.map.keyframes) >= n_old + 1
    assert all(system.keyframe_maps[k] == 1 for k in new_kfs) and system.keyframe_maps[first_old] == 0
