"""The training harness: checkpoints + sidecars, resume, determinism by seed, refusal of foreign checkpoints, CLIs."""

from __future__ import annotations

import json

import pytest
import torch

from nets.base import ModelError
from nets.models.netvlad import NetVLAD
from nets.server import ConfigError, load_models
from nets.train.checkpoint import state_path
from nets.train.cli import eval_main, train_main
from nets.train.loop import TrainSettings, train
from nets.train.data import render_synth

FAST = {"batch_queries": 4, "kmeans_images": 16}  # tiny batches: each epoch of one room is a second or two


def _settings(**kw) -> TrainSettings:
    return TrainSettings(**{"epochs": 1, "seed": 0, "device": "cpu", "size": "tiny", "conf": FAST,
                            "progress": False, "evaluate": False, **kw})


def _weights(path) -> dict:
    return torch.load(path, weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_and_sidecar_round_trip(train_clips, tmp_path):
    clips = train_clips[:1]  # one traversal of one room: ten batches an epoch
    out = tmp_path / "nv.pt"
    sidecar = train("netvlad", clips, out, _settings(command="slam-train netvlad --size tiny"))
    on_disk = json.loads((tmp_path / "nv.json").read_text())
    assert on_disk["architecture"] == {"model": "netvlad", "version": "1", "image_width": 64, "image_height": 48,
                                       "channels": [8, 16, 32], "clusters": 8}
    assert on_disk["input_size"] == [64, 48] and on_disk["seed"] == 0 and on_disk["epochs"] == 1
    assert on_disk["command"] == "slam-train netvlad --size tiny" and on_disk["commit"] and on_disk["date"]
    assert [d["name"] for d in on_disk["data"]["train"]] == [c.name for c in clips]
    assert sidecar["conf"]["batch_queries"] == 4
    model = NetVLAD(on_disk["conf"])
    model.load_weights(out)
    assert model.describe()["trained"] and _same(model.net.state_dict(), _weights(out))
    trained = model.descriptors(clips[0].images[:3])
    fresh = NetVLAD(on_disk["conf"]).descriptors(clips[0].images[:3])
    assert not torch.allclose(torch.from_numpy(trained), torch.from_numpy(fresh))  # weights really loaded


def test_resumed_run_equals_uninterrupted_run_and_seed_decides_weights(train_clips, tmp_path, caplog):
    clips = train_clips[:1]
    train("netvlad", clips, tmp_path / "full.pt", _settings(epochs=2))
    train("netvlad", clips, tmp_path / "part.pt", _settings(epochs=1))
    after_one = _weights(tmp_path / "part.pt")
    assert torch.load(state_path(tmp_path / "part.pt"), weights_only=True)["epoch"] == 1
    with caplog.at_level("INFO", logger="nets.train.loop"):
        sidecar = train("netvlad", clips, tmp_path / "part.pt", _settings(epochs=2, resume=True))
    assert "resuming" in caplog.text and "from epoch 1 of 2" in caplog.text and sidecar["epochs"] == 2
    assert not _same(after_one, _weights(tmp_path / "part.pt"))  # it trained on
    assert _same(_weights(tmp_path / "full.pt"), _weights(tmp_path / "part.pt"))  # ... exactly as without a break
    train("netvlad", clips, tmp_path / "other.pt", _settings(epochs=1, seed=1))
    assert not _same(after_one, _weights(tmp_path / "other.pt"))
    with pytest.raises(ModelError, match="--seed 0, this one has --seed 1"):
        train("netvlad", clips, tmp_path / "part.pt", _settings(epochs=3, seed=1, resume=True))


def test_checkpoint_of_another_input_size_is_refused(train_clips, tmp_path):
    out = tmp_path / "tiny.pt"
    sidecar = train("netvlad", train_clips[:1], out, _settings())
    with pytest.raises(ModelError, match="another architecture or input size.*image_width: checkpoint 64 vs model 160"):
        NetVLAD().load_weights(out)  # the small size: 160x120, other channels
    with pytest.raises(ModelError, match="a checkpoint of model 'netvlad', not 'brightness_depth'"):
        from tests.nets.toy_models import BrightnessDepth

        BrightnessDepth().load_weights(out)
    with pytest.raises(ConfigError, match="models\\[0\\].*image_width"):
        load_models({"models": [{"model": "netvlad", "checkpoint": str(out)}]}, "cpu")
    (tmp_path / "tiny.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="expected a JSON object"):
        NetVLAD(NetVLAD.sizes["tiny"]).load_weights(out)
    (tmp_path / "tiny.json").write_text(json.dumps(sidecar))
    served = load_models({"models": [{"model": "netvlad", "checkpoint": str(out), "conf": NetVLAD.sizes["tiny"]}]},
                         "cpu")
    assert served["descriptor"].describe()["trained"]


def test_cli_trains_on_sequence_folders_and_evaluates(synth_cache, tmp_path, capsys):
    folders = [str(p) for p in render_synth(0, synth_cache)]  # read back through slam.datasets like any sequence
    out = tmp_path / "cli.pt"
    rc = train_main(["netvlad", "--data", *folders, "--out", str(out), "--size", "tiny", "--epochs", "1",
                     "--device", "cpu", "--conf", json.dumps(FAST), "--no-progress", "--no-eval"])
    assert rc == 0 and out.is_file() and state_path(out).is_file()
    rc = eval_main(["netvlad", str(out), "--data", *folders, "--device", "cpu", "--json", str(tmp_path / "e.json")])
    assert rc == 0
    record = json.loads((tmp_path / "e.json").read_text())
    m = record["metrics"]
    assert m["queries"] > 0 and 0 <= m["netvlad"]["recall@1"] <= 1 and m["baselines_fitted_on"] == "evaluation clips"
    assert "orb_vlad" in capsys.readouterr().out
    rc = train_main(["netvlad", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--size", "tiny"])
    assert rc == 2 and "nowhere" in capsys.readouterr().err
