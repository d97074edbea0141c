"""The synthetic training data: varied rooms, the two traversals of one room lit differently; augmentation."""

from __future__ import annotations

import numpy as np

from nets.models.netvlad import augment_image
from nets.train.data import synth_config, traversal_lighting
from slam.synth.sequence import SynthSequence, scene_layout


def test_traversals_share_their_room_but_not_their_lighting():
    layouts = []
    for seed in range(6):
        a, b = synth_config(seed, "a"), synth_config(seed, "b")
        assert a.room_variety and a.texture_variety and a.distractor == bool(seed % 2)
        assert scene_layout(a) == scene_layout(b)  # one room, two traversals
        ratio = b.exposure_gain / a.exposure_gain
        assert max(ratio, 1 / ratio) >= 1.35 - 1e-9
        daz = abs((a.light_dir_deg[0] - b.light_dir_deg[0] + 180) % 360 - 180)
        assert daz >= 90 - 1e-9 and a.exposure_jitter > 0
        assert traversal_lighting(seed, "a") == traversal_lighting(seed, "a")  # seeded
        layouts.append(scene_layout(a))
        # both traversals keep their clearance in that room
        for cfg in (a, b):
            assert SynthSequence(cfg).min_clearance() >= cfg.min_clearance_m
    assert len({lay.size for lay in layouts}) == 6  # a different room per seed
    plain = synth_config(0, "a", variety=False)
    assert not plain.room_variety and plain.exposure_gain == 1.0 and plain.name != synth_config(0, "a").name


def test_augmentation_changes_view_and_light_but_not_shape():
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    a = augment_image(img, np.random.default_rng(1))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, augment_image(img, np.random.default_rng(1)))  # seeded
    assert np.abs(a.astype(float) - img).mean() > 5
