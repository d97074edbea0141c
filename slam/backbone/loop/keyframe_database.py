"""Keyframe database of global image descriptors (NetVLAD) and the loop-candidate consistency check.

Descriptors are float32 D-vectors, stored L2-normalised, so the score of two
keyframes is their cosine similarity in [-1, 1]. As ORB-SLAM's
``DetectLoopCandidates`` (with a global descriptor in place of the bag of
words): the keyframe's covisible neighbours are not loop candidates, and a
candidate must score at least as high as the least similar of those
neighbours -- what "similar" means near this keyframe -- and within
``ratio`` of the best candidate. :class:`ConsistencyChecker` then keeps a
candidate only when it (or a keyframe of its covisible group) came back for
several consecutive keyframes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)


class KeyFrameDatabase:
    """Global descriptors of keyframes by id; thread-safe (own lock); queries by cosine similarity."""

    def __init__(self, dim: int, capacity: int = 256):
        if dim <= 0:
            raise ValueError(f"keyframe database: descriptor dimension must be positive, got {dim}")
        self.dim = int(dim)
        self._lock = threading.Lock()
        self._desc = np.zeros((max(1, capacity), self.dim), np.float32)
        self._ids = np.zeros(max(1, capacity), np.int64)
        self._row: dict[int, int] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._row)

    def __contains__(self, kf_id: int) -> bool:
        with self._lock:
            return int(kf_id) in self._row

    def _normalised(self, descriptor: np.ndarray) -> np.ndarray:
        d = np.asarray(descriptor, dtype=np.float32).reshape(-1)
        if d.shape[0] != self.dim:
            raise ValueError(f"keyframe database: descriptor has {d.shape[0]} values, expected {self.dim}")
        norm = float(np.linalg.norm(d))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("keyframe database: descriptor is zero or not finite")
        return d / norm

    def add(self, kf_id: int, descriptor: np.ndarray) -> None:
        """Store (or replace) the descriptor of keyframe ``kf_id`` (L2-normalised here)."""
        d = self._normalised(descriptor)
        kf_id = int(kf_id)
        with self._lock:
            row = self._row.get(kf_id)
            if row is None:
                row = len(self._row)
                if row == len(self._ids):
                    self._desc = np.concatenate([self._desc, np.zeros_like(self._desc)])
                    self._ids = np.concatenate([self._ids, np.zeros_like(self._ids)])
                self._row[kf_id] = row
                self._ids[row] = kf_id
            self._desc[row] = d

    def remove(self, kf_id: int) -> bool:
        """Forget keyframe ``kf_id`` (culled); False if it was not stored."""
        with self._lock:
            row = self._row.pop(int(kf_id), None)
            if row is None:
                return False
            last = len(self._row)  # the last used row moves into the hole
            if row != last:
                moved = int(self._ids[last])
                self._desc[row] = self._desc[last]
                self._ids[row] = moved
                self._row[moved] = row
            return True

    def descriptor(self, kf_id: int) -> np.ndarray:
        """The stored (normalised) descriptor of ``kf_id``; KeyError if absent."""
        with self._lock:
            return self._desc[self._row[int(kf_id)]].copy()

    def scores(self, descriptor: np.ndarray, kf_ids: Collection[int]) -> dict[int, float]:
        """Cosine similarity of ``descriptor`` to each stored keyframe of ``kf_ids`` (absent ones skipped)."""
        q = self._normalised(descriptor)
        with self._lock:
            rows = [(int(k), self._row[int(k)]) for k in kf_ids if int(k) in self._row]
            return {k: float(self._desc[r] @ q) for k, r in rows}

    def query(
        self,
        descriptor: np.ndarray,
        k: int = 10,
        exclude: Collection[int] = (),
        min_score: float = -np.inf,
    ) -> list[tuple[int, float]]:
        """The ``k`` most similar stored keyframes as ``(id, score)``, best first.

        Keyframes in ``exclude`` and scores below ``min_score`` are left out.
        """
        q = self._normalised(descriptor)
        with self._lock:
            n = len(self._row)
            s = self._desc[:n] @ q
            ids = self._ids[:n].copy()
        keep = s >= min_score
        if exclude:
            keep &= ~np.isin(ids, np.fromiter((int(e) for e in exclude), np.int64))
        s, ids = s[keep], ids[keep]
        if k < len(s):
            top = np.argpartition(-s, k)[:k]
            s, ids = s[top], ids[top]
        order = np.lexsort((ids, -s))  # best first; ties by id for determinism
        return [(int(ids[o]), float(s[o])) for o in order]

    def detect_loop_candidates(
        self,
        kf_id: int,
        descriptor: np.ndarray,
        covisible: Collection[int],
        k: int = 10,
        ratio: float = 0.75,
    ) -> list[tuple[int, float]]:
        """Loop candidates of keyframe ``kf_id``: ``(id, score)``, best first.

        Excludes ``kf_id`` and its ``covisible`` neighbours; keeps candidates
        scoring at least the lowest score of those neighbours (ORB-SLAM's
        ``minScore``; no neighbour in the database: no bound) and at least
        ``ratio`` times the best candidate's score.
        """
        neigh = self.scores(descriptor, covisible)
        min_score = min(neigh.values()) if neigh else -np.inf
        cands = self.query(descriptor, k=k, exclude=set(covisible) | {int(kf_id)}, min_score=min_score)
        if not cands:
            return []
        best = cands[0][1]
        bound = ratio * best if best > 0 else best
        out = [(c, s) for c, s in cands if s >= bound]
        log.debug("kf %d: %d loop candidates (min score %.3f, best %.3f)", kf_id, len(out), min_score, best)
        return out


class ConsistencyChecker:
    """ORB-SLAM's temporal consistency of loop candidates over consecutive keyframes.

    A candidate's group is the candidate and its covisible keyframes. A group
    is consistent with a group of the previous query when they share a
    keyframe; its consistency count is the previous group's plus one (0 for
    a new group). A candidate is accepted once its count reaches
    ``min_consistency`` (ORB-SLAM: 3, i.e. seen for 4 consecutive keyframes).
    Not thread-safe by itself: the loop-closing thread owns it.
    """

    def __init__(self, min_consistency: int = 3):
        if min_consistency < 0:
            raise ValueError(f"min_consistency must be >= 0, got {min_consistency}")
        self.min_consistency = int(min_consistency)
        self.groups: list[tuple[frozenset[int], int]] = []  # (group, consistency count) of the last query

    def reset(self) -> None:
        self.groups = []

    def update(self, candidates: Sequence[int], groups: Mapping[int, Collection[int]]) -> list[int]:
        """Feed the candidates of the next keyframe; returns those consistent enough, in input order.

        ``groups[c]``: covisible keyframes of candidate ``c`` (the candidate is
        added to its group). No candidate clears the history.
        """
        current: list[tuple[frozenset[int], int]] = []
        used_prev = [False] * len(self.groups)
        accepted: list[int] = []
        for c in candidates:
            group = frozenset(int(g) for g in groups.get(c, ())) | {int(c)}
            consistent_somewhere = False
            enough = False
            for p, (prev_group, prev_count) in enumerate(self.groups):
                if group.isdisjoint(prev_group):
                    continue
                consistent_somewhere = True
                count = prev_count + 1
                if not used_prev[p]:  # one successor per previous group
                    current.append((group, count))
                    used_prev[p] = True
                if count >= self.min_consistency and not enough:
                    accepted.append(int(c))
                    enough = True
            if not consistent_somewhere:
                current.append((group, 0))
        self.groups = current
        return accepted
