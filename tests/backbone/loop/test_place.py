"""Place descriptors: VLAD against a hand computation, k-means, thumbnails, the ORB-VLAD describer and its vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from slam.backbone.loop.place import (
    OrbVladDescriber,
    kmeans,
    load_vocabulary,
    thumbnail,
    unpack_bits,
    vlad,
)
from slam.errors import DataError


def test_vlad_matches_hand_computation():
    c = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    x = np.array([[1.0, 0.0], [0.0, 2.0], [9.0, 1.0]], np.float32)
    # centre 0 gets (1,0)+(0,2) = (1,2); centre 1 gets (-1,1); each row unit length, then the whole
    r0 = np.array([1.0, 2.0]) / np.sqrt(5)
    r1 = np.array([-1.0, 1.0]) / np.sqrt(2)
    want = np.concatenate([r0, r1]) / np.sqrt(2)
    np.testing.assert_allclose(vlad(x, c), want, atol=1e-6)
    assert not np.any(vlad(np.zeros((0, 2), np.float32), c))


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    means = np.array([[0, 0], [5, 5], [-5, 5]], np.float32)
    x = np.concatenate([m + 0.1 * rng.normal(size=(50, 2)) for m in means]).astype(np.float32)
    c = kmeans(x, 3, seed=1)
    got = sorted(map(tuple, np.round(c).astype(int)))
    assert got == sorted(map(tuple, means.astype(int)))
    with pytest.raises(ValueError, match="at least"):
        kmeans(x[:2], 3)


def test_unpack_bits_and_thumbnail():
    d = np.zeros((1, 32), np.uint8)
    d[0, 0] = 0b10000001
    b = unpack_bits(d)
    assert b.shape == (1, 256) and b[0, 0] == 1 and b[0, 7] == 1 and b.sum() == 2
    grey = np.tile(np.arange(640, dtype=np.uint16)[None] % 256, (480, 1)).astype(np.uint8)
    t = thumbnail(grey)
    assert t.shape == (120, 160, 3) and t.dtype == np.uint8
    assert np.array_equal(t[..., 0], t[..., 2])  # grey becomes three equal channels
    # area resampling: each thumbnail pixel is the mean of its 4x4 block
    assert abs(int(t[0, 1, 0]) - int(grey[:4, 4:8].mean())) <= 1
    with pytest.raises(ValueError, match="neither grey nor RGB"):
        thumbnail(np.zeros((4, 4, 2), np.uint8))


def test_orb_vlad_describer_separates_places():
    rng = np.random.default_rng(3)
    describer = OrbVladDescriber()
    assert describer.dim == describer.centres.size and describer.available()
    place_a = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    place_b = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    # a revisit of place A sees most of its keypoints again, a few bits flipped, plus some new ones
    flips = (rng.random((300, 256)) < 0.05).astype(np.uint8)
    revisit = np.packbits(np.unpackbits(place_a[:300], axis=1) ^ flips, axis=1)
    revisit = np.concatenate([revisit, rng.integers(0, 256, (100, 32), dtype=np.uint8)])
    for key, d in (("a", place_a), ("b", place_b), ("a2", revisit)):
        assert describer.submit(key, None, d)
    assert describer.submit("empty", None, np.zeros((0, 32), np.uint8))
    answers = {a.key: a for a in describer.poll()}
    assert describer.poll() == []
    assert answers["empty"].descriptor is None and "no ORB" in answers["empty"].error
    a, b, a2 = (answers[k].descriptor for k in ("a", "b", "a2"))
    for d in (a, b, a2):
        assert d.shape == (describer.dim,) and abs(np.linalg.norm(d) - 1) < 1e-5
    assert a2 @ a > a2 @ b + 0.2


def test_shipped_vocabulary_and_bad_files(tmp_path):
    centres, info = load_vocabulary()
    assert centres.shape[1] == 256 and len(centres) >= 16 and "command" in info
    with pytest.raises(DataError, match="not found"):
        load_vocabulary(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="bad.npz"):
        load_vocabulary(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", centres=np.zeros((4, 128), np.float32))
    with pytest.raises(DataError, match="expected"):
        load_vocabulary(tmp_path / "shape.npz")
