"""slam: the runtime of the learned-SLAM system (geometry, readers, map, threads, evaluation)."""

__version__ = "0.1.0"
