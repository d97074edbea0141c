"""NetVLAD place descriptors through the inference client: in-process and over ipc the same, a dying server
degrades to error answers, bad checkpoints are refused naming the file, ORB-VLAD without a checkpoint."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slam.backbone.loop.place import OrbVladDescriber
from slam.errors import DataError
from slam.inference import place as place_mod
from slam.inference.client import InferenceClient
from slam.inference.local import LocalInferenceServer
from slam.inference.place import NetVladDescriber, PlaceSettings, make_place_describer

from tests.inference.conftest import TINY_DIM, textured


def _thumbnails(n: int) -> list[np.ndarray]:
    """Finely textured 120x160 RGB thumbnails, each different (resizing them to 64x48 changes the pixels)."""
    return [textured(100 + i) for i in range(n)]


def _collect(describer, keys: set, timeout_s: float = 10.0, want=lambda a: True) -> dict:
    """Poll until every key has an answer satisfying ``want`` (or the time is up): key -> last such answer."""
    got: dict = {}
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and set(got) < keys:
        for a in describer.poll():
            if want(a):
                got[a.key] = a
        time.sleep(0.01)
    return got


class _Server:
    """slam-infer serving the tiny checkpoint on ipc, as a process of its own."""

    def __init__(self, tmp: Path, checkpoint: Path):
        self.cfg = tmp / "models.yaml"
        conf = json.loads(Path(checkpoint).with_suffix(".json").read_text())["architecture"]
        conf = {k: v for k, v in conf.items() if k not in ("model", "version")}
        self.cfg.write_text(json.dumps({"models": [{"model": "netvlad", "checkpoint": str(checkpoint),
                                                    "conf": conf}]}))
        self.endpoint = f"ipc://{tmp}/infer"
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "nets.server", "--bind", self.endpoint,
                                          "--device", "cpu", "--config", str(self.cfg)],
                                         stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path, tiny_checkpoint):
    s = _Server(tmp_path, tiny_checkpoint)
    s.start()
    yield s
    s.stop()


def test_in_process_and_slam_infer_over_ipc_give_the_same_descriptors(server, tiny_checkpoint):
    local = make_place_describer(PlaceSettings(place="netvlad", checkpoint=str(tiny_checkpoint)))
    # over ipc without the sidecar: thumbnails go at 160x120 and the server resizes them (same rule)
    remote = make_place_describer(PlaceSettings(place="netvlad", infer=server.endpoint, probe_s=60.0))
    assert (local.name, local.where, local.dim) == ("netvlad", "in-process", TINY_DIM)
    assert (remote.name, remote.where, remote.dim) == ("netvlad", server.endpoint, TINY_DIM)
    thumbs = _thumbnails(6)
    out = {}
    for name, factory in (("local", local), ("remote", remote)):
        d = factory()
        try:
            assert all(d.submit(i, t, np.zeros((0, 32), np.uint8)) for i, t in enumerate(thumbs))
            got = _collect(d, set(range(len(thumbs))))
            assert set(got) == set(range(len(thumbs))), f"{name}: answers for {sorted(got)} only"
            assert all(a.error is None and not a.late for a in got.values()), [a.error for a in got.values()]
            out[name] = np.stack([got[i].descriptor for i in range(len(thumbs))])
            assert d.available()
        finally:
            d.close()
    assert out["local"].shape == (6, TINY_DIM)
    np.testing.assert_allclose(out["local"], out["remote"], atol=1e-5)
    # the descriptors depend on the image far beyond that tolerance (a constant answer would also match)
    d = out["local"]
    gaps = np.linalg.norm(d[:, None] - d[None], axis=2)[~np.eye(6, dtype=bool)]
    assert gaps.min() > 1e-3


def test_a_dying_server_gives_error_answers_and_answers_resume_after_restart(server, caplog):
    factory = make_place_describer(PlaceSettings(place="netvlad", infer=server.endpoint, probe_s=60.0,
                                                 deadline_s=0.3, heartbeat_s=0.2))
    d = factory()
    thumb = _thumbnails(1)[0]
    none = np.zeros((0, 32), np.uint8)
    try:
        assert d.submit("before", thumb, none)
        assert _collect(d, {"before"})["before"].descriptor is not None

        server.signal(signal.SIGSTOP)  # frozen: the connection stays, nothing is answered
        assert d.submit("frozen", thumb, none)
        timed_out = _collect(d, {"frozen"})
        assert timed_out["frozen"].descriptor is None and "no answer within" in timed_out["frozen"].error
        assert not d.available()
        server.signal(signal.SIGCONT)  # the answer comes after its deadline: delivered, flagged late
        late = _collect(d, {"frozen"}, want=lambda a: a.descriptor is not None)
        assert late["frozen"].late and late["frozen"].error is None

        server.proc.kill()  # dead: nothing can be queued, or what was queued times out; never an exception
        server.proc.wait(10)
        errors = []
        end = time.monotonic() + 10
        while time.monotonic() < end and (d.available() or not errors):
            if d.submit(f"dead{len(errors)}", thumb, none) is False:
                errors.append("unsent")
            errors += [a.error for a in d.poll() if a.descriptor is None]
            time.sleep(0.05)
        assert errors and not d.available()

        server.start()  # the client reconnects by itself
        answered: dict = {}
        end = time.monotonic() + 60
        while time.monotonic() < end and not answered:
            d.submit("after", thumb, none)
            answered = _collect(d, {"after"}, timeout_s=0.5, want=lambda a: a.descriptor is not None)
        assert answered and d.available()
    finally:
        d.close()
    assert any("unavailable" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_factory_uses_orb_vlad_without_a_checkpoint_and_says_so(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(place_mod, "DEFAULT_CHECKPOINT", tmp_path / "none.pt")
    with caplog.at_level(logging.INFO, logger="slam.inference.place"):
        factory = make_place_describer(PlaceSettings())
    assert factory.name == "orb-vlad" and isinstance(factory(), OrbVladDescriber)
    assert "place recognition: ORB-VLAD (no NetVLAD checkpoint)" in caplog.text
    assert factory.describe()["reason"] == "no NetVLAD checkpoint"
    with pytest.raises(DataError, match="needs a NetVLAD checkpoint.*untrained NetVLAD is not used"):
        make_place_describer(PlaceSettings(place="netvlad"))
    # a server nobody said serves NetVLAD is not asked by auto
    assert make_place_describer(PlaceSettings(infer="ipc:///nowhere/infer")).name == "orb-vlad"


def test_netvlad_takes_the_shipped_checkpoint_auto_does_not(monkeypatch, tiny_checkpoint):
    monkeypatch.setattr(place_mod, "DEFAULT_CHECKPOINT", tiny_checkpoint)
    factory = make_place_describer(PlaceSettings(place="netvlad"))
    assert (factory.name, factory.checkpoint, factory.dim) == ("netvlad", str(tiny_checkpoint), TINY_DIM)
    # auto keeps ORB-VLAD unless a checkpoint is given: the shipped one is trained on synthetic rooms only
    assert make_place_describer(PlaceSettings()).name == "orb-vlad"
    given = make_place_describer(PlaceSettings(checkpoint=str(tiny_checkpoint)))
    assert (given.name, given.checkpoint) == ("netvlad", str(tiny_checkpoint))


def test_untrained_netvlad_at_a_server_is_not_used(caplog):
    from nets.models.netvlad import NetVLAD

    untrained = LocalInferenceServer({"models": [{"model": "netvlad", "conf": NetVLAD.conf_for_size("tiny")}]})
    endpoint = untrained.acquire()
    try:
        factory = make_place_describer(PlaceSettings(place="netvlad", infer=endpoint, probe_s=10.0))
        assert factory.name == "orb-vlad" and "untrained" in factory.reason
        # and a describer over it refuses the untrained answers
        d = NetVladDescriber(InferenceClient.connect(endpoint), TINY_DIM)
        try:
            assert d.submit(0, _thumbnails(1)[0], None)
            a = _collect(d, {0})[0]
            assert a.descriptor is None and "untrained" in a.error and not d.available()
        finally:
            d.close()
    finally:
        untrained.release()
    assert "untrained" in caplog.text


def _resave(src: Path, dst: Path, state=None, **sidecar_changes) -> Path:
    import torch

    from nets.train.checkpoint import save_checkpoint

    sidecar = json.loads(src.with_suffix(".json").read_text())
    for k, v in sidecar_changes.items():
        sidecar[k] = {**sidecar[k], **v} if isinstance(v, dict) else v
    save_checkpoint(dst, state if state is not None else torch.load(src, weights_only=True), sidecar)
    return dst


def test_checkpoints_for_another_architecture_are_refused_naming_the_file(tiny_checkpoint, tmp_path):
    import torch

    from nets.models.netvlad import NetVLAD

    # weights of another network than the sidecar says (channels 4-8-16)
    other = NetVLAD({**NetVLAD.conf_for_size("tiny"), "channels": [4, 8, 16]})
    wrong_weights = _resave(tiny_checkpoint, tmp_path / "wrong_weights.pt", other.net.state_dict())
    with pytest.raises(DataError, match=r"wrong_weights\.pt.*does not fit the network"):
        make_place_describer(PlaceSettings(checkpoint=str(wrong_weights)))
    # a checkpoint of another version of the architecture
    old = _resave(tiny_checkpoint, tmp_path / "old_version.pt", architecture={"version": "0"})
    with pytest.raises(DataError, match=r"old_version\.pt.*another architecture or input size.*version"):
        make_place_describer(PlaceSettings(checkpoint=str(old)))
    # a models config asking for the small network (160x120) given the tiny checkpoint (64x48)
    with pytest.raises(DataError, match=r"netvlad_tiny\.pt.*another architecture or input size.*image_width"):
        LocalInferenceServer({"models": [{"model": "netvlad", "checkpoint": str(tiny_checkpoint)}]})
    # no sidecar, no file
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(tiny_checkpoint, weights_only=True), bare)
    with pytest.raises(DataError, match=r"bare\.pt.*missing sidecar"):
        make_place_describer(PlaceSettings(checkpoint=str(bare)))
    with pytest.raises(DataError, match=r"nowhere\.pt: no such NetVLAD checkpoint"):
        make_place_describer(PlaceSettings(checkpoint=str(tmp_path / "nowhere.pt")))


def test_in_process_server_serves_while_held_and_stops_after_the_last_client(tiny_checkpoint):
    import torch

    factory = make_place_describer(PlaceSettings(checkpoint=str(tiny_checkpoint)))
    assert torch.get_num_threads() == 1  # the other core stays with tracking and local mapping
    a, b = factory(), factory()
    local = a.client.local
    assert local is b.client.local and local.serving
    a.close()
    assert local.serving
    b.close()
    assert not local.serving
    c = factory()  # served again, on a fresh endpoint
    try:
        assert c.submit(1, _thumbnails(1)[0], None)
        assert _collect(c, {1})[1].descriptor is not None
    finally:
        c.close()
