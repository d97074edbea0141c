"""Place recognition as slam-run and launch files set it: the System gets the factory, summary.json says which
describer ran and why, a bad checkpoint stops the run before it starts (exit 2, the file named)."""

from __future__ import annotations

import json

import pytest

import slam.cli.run as run_cli
from slam.cli.run import main
from slam.inference import place as place_mod
from slam.inference.place import IN_PROCESS
from slam.nodes.launch import load_launch
from slam.nodes.tracker import place_settings


@pytest.fixture
def systems(monkeypatch):
    """The place_describer each System of the run was built with."""
    seen = []
    real = run_cli.System

    def spy(*args, **kwargs):
        seen.append(kwargs.get("place_describer"))
        return real(*args, **kwargs)

    monkeypatch.setattr(run_cli, "System", spy)
    return seen


def test_slam_run_with_a_netvlad_checkpoint_hands_the_system_a_netvlad_factory(tum_path, tmp_path, tiny_checkpoint,
                                                                               systems):
    out = tmp_path / "out"
    assert main([str(tum_path), "--out", str(out), "--no-progress", "--max-frames", "3",
                 "--place-checkpoint", str(tiny_checkpoint)]) == 0
    assert len(systems) == 1 and systems[0].name == "netvlad"
    d = systems[0]()
    try:
        assert d.name == "netvlad" and d.dim == 256
    finally:
        d.close()
    place = json.loads((out / "summary.json").read_text())["place_recognition"]
    assert place["describer"] == "netvlad" and place["inference"] == IN_PROCESS
    assert place["checkpoint"] == str(tiny_checkpoint) and place["dim"] == 256


def test_slam_run_without_a_checkpoint_runs_with_orb_vlad_and_says_why(tum_path, tmp_path, monkeypatch, systems):
    monkeypatch.setattr(place_mod, "DEFAULT_CHECKPOINT", tmp_path / "none.pt")
    out = tmp_path / "out"
    assert main([str(tum_path), "--out", str(out), "--no-progress", "--max-frames", "3"]) == 0
    assert systems[0].name == "orb-vlad"
    place = json.loads((out / "summary.json").read_text())["place_recognition"]
    assert place["describer"] == "orb-vlad" and place["reason"] == "no NetVLAD checkpoint"


def test_slam_run_refuses_a_checkpoint_it_cannot_use_before_tracking(tum_path, tmp_path, capsys, systems):
    bad = tmp_path / "notes.pt"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "notes.json").write_text(json.dumps({"model": "netvlad", "architecture": {}}))
    assert main([str(tum_path), "--out", str(tmp_path / "out"), "--no-progress",
                 "--place-checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "notes.pt" in err and "slam-run: error:" in err
    assert systems == [] and not (tmp_path / "out" / "summary.json").exists()


def test_slam_run_refuses_an_inference_endpoint_that_is_not_one(tum_path, tmp_path, capsys):
    assert main([str(tum_path), "--out", str(tmp_path / "out"), "--no-progress", "--infer", "gpu-box:5555"]) == 2
    assert "endpoint 'gpu-box:5555' is not TRANSPORT://ADDRESS" in capsys.readouterr().err


def test_place_flags_belong_in_the_launch_file_with_launch(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli.parse_args(["--launch", "launch/tum_replay.yaml", "--out", str(tmp_path), "--place", "netvlad"])
    assert e.value.code == 2 and "processes.slam.place" in capsys.readouterr().err


def _launch(tmp_path, slam: str, inference: str, models: str | None = None):
    if models is not None:
        (tmp_path / "models.yaml").write_text(models)
    path = tmp_path / "graph.yaml"
    path.write_text("endpoints: {frames: 'ipc://{run}/frames', poses: 'ipc://{run}/poses', "
                    "inference: 'ipc://{run}/infer'}\n"
                    f"processes:\n  slam: {slam}\n  inference: {inference}\n")
    return load_launch(path)


def test_launch_file_place_settings(tmp_path, tiny_checkpoint):
    run = tmp_path / "run"
    cfg = tmp_path / "models.yaml"
    # the local server's config names a trained NetVLAD: auto asks it over the inference endpoint
    spec = _launch(tmp_path, "{mode: rgbd}", f"{{enabled: true, config: {cfg}, deadline_s: 0.25}}",
                   f"models:\n  - model: netvlad\n    checkpoint: {tiny_checkpoint}\n")
    s = place_settings(spec, run)
    assert (s.place, s.infer, s.server_serves_netvlad, s.deadline_s) == ("auto", f"ipc://{run}/infer", True, 0.25)
    # a server without models (the shipped launch files): not asked; auto falls back to ORB-VLAD
    spec = _launch(tmp_path, "{mode: rgbd}", "{enabled: true}")
    s = place_settings(spec, run)
    assert s.server_serves_netvlad is False
    assert place_mod.make_place_describer(s).name == "orb-vlad"
    # a server on another host: unknown, used when the launch file says place: netvlad
    spec = _launch(tmp_path, "{mode: rgbd, place: netvlad}", "{enabled: false}")
    s = place_settings(spec, run)
    assert (s.place, s.infer, s.server_serves_netvlad) == ("netvlad", f"ipc://{run}/infer", None)
    # a checkpoint in the launch file: NetVLAD in the SLAM process
    spec = _launch(tmp_path, f"{{mode: rgbd, place_checkpoint: {tiny_checkpoint}}}", "{enabled: true}")
    s = place_settings(spec, run)
    assert (s.infer, s.checkpoint) == (IN_PROCESS, str(tiny_checkpoint))
