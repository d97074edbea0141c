"""Fit the ORB vocabulary of the backbone's place recogniser (``slam/backbone/loop/orb_vocabulary.npz``).

    python scripts/build_orb_vocabulary.py --data SEQ [SEQ ...] [--words 64] [--every 3] [--out FILE]

ORB descriptors come from the backbone's own feature extractor (the
keypoints keyframes keep), on every ``--every``-th frame of each sequence;
k-means (seeded, k-means++ start) over at most ``--max-descriptors`` of them,
bits as 0/1 floats. The file holds ``centres`` (K, 256) float32 and ``info``
(JSON: data, command, counts), so it says what made it.

The shipped vocabulary was made with (synthetic rooms the tests and
benchmarks do not use, and the real EuRoC clip)::

    slam-synth --preset demo --seed 100 --out /tmp/voc/s100 --no-stereo --no-imu --no-progress
    slam-synth --preset demo --seed 101 --out /tmp/voc/s101 --no-stereo --no-imu --no-progress
    python scripts/build_orb_vocabulary.py --data /tmp/voc/s100 /tmp/voc/s101 \\
        ../shared/data/euroc_V1_01_easy_micro
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from slam.backbone.frontend.features import FeatureConfig, FeatureExtractor
from slam.backbone.loop.place import VOCABULARY_FILE, kmeans, unpack_bits
from slam.datasets import open_sequence


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True, help="sequence folders (any reader)")
    p.add_argument("--words", type=int, default=64)
    p.add_argument("--every", type=int, default=3, help="use every N-th frame")
    p.add_argument("--max-descriptors", type=int, default=60000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=VOCABULARY_FILE)
    a = p.parse_args(argv)
    des, frames = [], 0
    for path in a.data:
        seq = open_sequence(path)
        ext = FeatureExtractor(FeatureConfig(), seq.camera)
        for i, frame in enumerate(seq):
            if i % a.every:
                continue
            des.append(ext.extract(frame.image).desc)
            frames += 1
    x = unpack_bits(np.concatenate(des))
    rng = np.random.default_rng(a.seed)
    if len(x) > a.max_descriptors:
        x = x[rng.choice(len(x), a.max_descriptors, replace=False)]
    centres = kmeans(x, a.words, seed=a.seed, iters=25)
    info = {"data": [str(d) for d in a.data], "frames": frames, "descriptors": int(len(x)), "words": a.words,
            "command": "python scripts/build_orb_vocabulary.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.out, centres=centres, info=np.array(json.dumps(info)))
    print(f"{a.out}: {a.words} words from {len(x)} descriptors of {frames} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
