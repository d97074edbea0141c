"""slam-infer: models from the config, batched answers, errors as answers, heartbeats; checkpoints with sidecars."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from nets.base import ModelError, load_checkpoint
from nets.server import ConfigError, InferenceService, load_models
from slam.bus.codec import Message
from slam.bus.rpc import RpcClient

TOY = "tests.nets.toy_models"


def _image(value: int) -> np.ndarray:
    return np.full((4, 6, 3), value, np.uint8)


def test_batches_per_task_and_answers_errors_per_request():
    models = load_models({"models": [{"model": f"{TOY}:BrightnessDepth", "conf": {"scale": 2.0}},
                                     {"model": f"{TOY}:Broken"}]}, "cpu")
    service = InferenceService(models)
    reqs = [Message("infer", "depth", i, float(i), {}, {"image": _image(51 * i)}) for i in range(3)]
    reqs += [Message("infer", "pose", 3, 3.0, {}, {"image": _image(0)}),  # no model for this task
             Message("infer", "depth", 4, 4.0, {}, {}),  # input missing
             Message("infer", "descriptor", 5, 5.0, {}, {"image": _image(0)})]  # the model fails
    out = service.handle_batch(reqs)
    for i in range(3):
        assert out[i].type == "depth" and out[i].seq == i and out[i].meta["batch"] == 3
        np.testing.assert_allclose(out[i].arrays["depth"], 2.0 * 51 * i / 255.0, rtol=1e-6)
        assert out[i].meta["model"]["name"] == "brightness_depth" and not out[i].meta["model"]["trained"]
    assert isinstance(out[3], ModelError) and "no model answers 'pose'" in str(out[3])
    assert isinstance(out[4], ModelError) and "missing ['image']" in str(out[4])
    assert isinstance(out[5], RuntimeError)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"models": [{"model": "no_such_model"}]}, "unknown model 'no_such_model'"),
        ({"models": [{"model": f"{TOY}:BrightnessDepth", "conf": {"scal": 1}}]}, "unknown settings \\['scal'\\]"),
        ({"models": [{"model": f"{TOY}:BrightnessDepth", "checkpoint": "/nowhere/w.pt"}]}, "no such checkpoint"),
        ({"models": [{"model": f"{TOY}:BrightnessDepth"}, {"model": f"{TOY}:BrightnessDepth"}]}, "two models"),
        ({"models": [{"model": "json:loads"}]}, "not a nets.base.BaseModel"),
    ],
)
def test_bad_model_configs_are_clear_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        load_models(config, "cpu", "models.yaml")


def test_checkpoint_needs_its_sidecar_and_loads_tensors_only(tmp_path):
    import torch

    path = tmp_path / "w.pt"
    torch.save({"weight": torch.ones(3)}, path)
    with pytest.raises(ModelError, match="missing sidecar"):
        load_checkpoint(path)
    (tmp_path / "w.json").write_text(json.dumps({"data": "synthetic demo", "command": "slam-train x"}))
    state, sidecar = load_checkpoint(path)
    assert torch.equal(state["weight"], torch.ones(3)) and sidecar["data"] == "synthetic demo"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot load checkpoint"):
        load_checkpoint(path)


def test_server_process_answers_heartbeats_and_requests_and_stops_on_sigterm(tmp_path):
    cfg = tmp_path / "models.yaml"
    cfg.write_text(f"max_batch: 4\nmodels:\n  - model: '{TOY}:BrightnessDepth'\n")
    endpoint = f"ipc://{tmp_path}/infer"
    proc = subprocess.Popen([sys.executable, "-m", "nets.server", "--bind", endpoint, "--device", "cpu",
                             "--config", str(cfg)], stderr=subprocess.PIPE, text=True)
    client = RpcClient(None, endpoint, heartbeat_s=0.2)
    try:
        deadline = time.monotonic() + 20
        answers = []
        while time.monotonic() < deadline and not answers:
            client.submit(Message("infer", "depth", 0, 1.0, {}, {"image": _image(255)}), deadline_s=2.0)
            t_end = time.monotonic() + 0.5
            while time.monotonic() < t_end and not answers:
                answers = [r for r in client.poll() if r.ok]
                time.sleep(0.01)
        assert answers, "no answer from slam-infer"
        reply = answers[0].reply
        np.testing.assert_allclose(reply.arrays["depth"], 1.0)
        assert reply.meta["server"]["name"] == "slam-infer" and reply.meta["model"]["version"] == "test-1"
        while client.server_info is None and time.monotonic() < deadline:  # the heartbeat's answer
            client.poll()
            time.sleep(0.02)
        assert any("brightness_depth" in m for m in client.server_info["models"])
    finally:
        client.close()
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "serving on" in err and "stopped after" in err


def test_server_refuses_a_bad_config_with_status_2(tmp_path):
    cfg = tmp_path / "models.yaml"
    cfg.write_text("models:\n  - model: no_such_model\n")
    r = subprocess.run([sys.executable, "-m", "nets.server", "--bind", f"ipc://{tmp_path}/x", "--device", "cpu",
                        "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown model 'no_such_model'" in r.stderr and "models.yaml" in r.stderr
