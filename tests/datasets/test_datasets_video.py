import logging

import cv2
import numpy as np
import pytest

from slam.datasets import open_sequence
from slam.datasets.video import VideoSequence
from slam.errors import DataError

from .conftest import CAM, texture

FPS, N, W, H = 15.0, 12, 64, 48


@pytest.fixture
def video(tmp_path):
    """An MJPG .avi of random-texture frames, each with a bright bar at column 4 * index (to tell frames apart)."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for i in range(N):
        img = texture(i) // 4
        img[:, 4 * i : 4 * i + 4] = 255
        writer.write(img)
    writer.release()
    return path


def bar_column(image: np.ndarray) -> int:
    return int(np.argmax(image.mean(axis=(0, 2)))) // 4


def test_reads_back_frames_in_order(video, caplog):
    with caplog.at_level(logging.WARNING, logger="slam.datasets.video"):
        seq = open_sequence(video)
    assert isinstance(seq, VideoSequence) and seq.modes == ["mono"]
    assert len(seq) == N
    np.testing.assert_allclose(seq.timestamps, np.arange(N) / FPS, atol=1e-3)
    frames = list(seq)
    assert [bar_column(f.image) for f in frames] == list(range(N))
    assert frames[0].image.shape == (H, W, 3) and frames[0].image.dtype == np.uint8
    # the guessed camera, with a warning saying so
    assert seq.camera.fx == pytest.approx(0.9 * W) and seq.camera.cx == pytest.approx((W - 1) / 2)
    assert "GUESSING" in caplog.text
    seq.close()


def test_random_access(video):
    with open_sequence(video) as seq:
        assert bar_column(seq[7].image) == 7
        assert bar_column(seq[2].image) == 2  # backwards: re-open
        assert bar_column(seq[3].image) == 3
        assert bar_column(seq[-1].image) == N - 1
        assert seq[5].timestamp == pytest.approx(5 / FPS, abs=1e-3)


def test_camera_file_next_to_video(video):
    CAM.to_yaml(video.with_suffix(".yaml"))
    assert open_sequence(video).camera == CAM


def test_not_a_video(tmp_path):
    p = tmp_path / "fake.mp4"
    p.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError) as e:
        open_sequence(p)
    assert e.value.path == p


def test_non_increasing_times_detected(video):
    seq = VideoSequence.__new__(VideoSequence)
    seq.root = video
    with pytest.raises(DataError, match="frame 2: timestamp"):
        seq._times(np.array([0.0, 66.7, 66.7, 200.0]), None, FPS)
    np.testing.assert_allclose(seq._times(np.zeros(3), None, 10.0), [0.0, 0.1, 0.2])  # no times: index / fps


def test_replay_pipeline_decodes_a_video_in_one_thread_in_order(video):
    """One cv2.VideoCapture read from two threads at once crashed OpenCV (segfault, abort or hang)."""
    from slam.replay import FramePipeline

    seq = open_sequence(video)
    for _ in range(3):
        with FramePipeline(seq, lambda f: None, len(seq)) as pipe:
            assert pipe._read_pool._max_workers == 1
            got = [(item.index, bar_column(item.frame.image)) for item in pipe]
        assert got == [(i, i) for i in range(N)]
