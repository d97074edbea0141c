"""A tiny NetVLAD checkpoint for the inference tests (untrained weights: plumbing, not accuracy)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

TINY_DIM = 32 * 8  # tiny NetVLAD: 32 channels x 8 clusters


def textured(seed: int, shape_hw: tuple[int, int] = (120, 160)) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image of random 3x2-pixel blocks (fine texture: resampling changes it)."""
    h, w = shape_hw
    blocks = np.random.default_rng(seed).integers(0, 256, (h // 3 + 1, w // 2 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(blocks, np.ones((3, 2, 1), np.uint8))[:h, :w])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny NetVLAD saved as the harness saves checkpoints (weights + sidecar): plumbing only."""
    import torch

    from nets.models.netvlad import NetVLAD
    from nets.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = NetVLAD(NetVLAD.conf_for_size("tiny"))
    # centres by k-means over the backbone's features of textured images (as training starts): descriptors
    # then differ clearly from image to image, so a path that changes the pixels changes the descriptor
    model.prepare([SimpleNamespace(images=np.stack([textured(i, (48, 64)) for i in range(16)]))], seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "netvlad_tiny.pt"
    save_checkpoint(path, model.net.state_dict(), {"model": "netvlad", "architecture": model.architecture(),
                                                   "conf": model.conf, "input_size": list(model.input_size)})
    return path


@pytest.fixture(autouse=True)
def _torch_threads():
    """In-process inference caps torch's CPU threads process-wide: give the next tests theirs back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
