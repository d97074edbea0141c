"""Save and load a :class:`~slam.backbone.map.map.Map` as one ``.npz`` file (no pickle).

Layout (``K`` keyframes, ``F`` keypoints over all keyframes, ``P`` points, ``O`` observations):

* ``meta``: a JSON string: format, version, camera, pyramid settings, id counters, counts.
* ``kf_id, kf_frame_index, kf_timestamp, kf_T_c_w (K,4,4), kf_parent``; ``kf_offsets (K+1,)``:
  keyframe ``k`` owns keypoints ``kf_offsets[k]:kf_offsets[k+1]`` of the ``feat_*`` arrays
  (``uv, uv_und, octave, angle, desc, depth, u_right``, as in :class:`~slam.backbone.frontend.features.Features`).
* ``covisibility (C,3)``: rows ``(kf, other kf, weight)``; ``loop_edges (L,2)``.
* ``pt_id, pt_position, pt_normal, pt_descriptor, pt_distance (min,max), pt_counts (visible,found),
  pt_ref_kf, pt_first_kf``; ``observations (O,3)``: rows ``(point id, kf id, keypoint index)``
  in each point's observation order. Keyframes' ``point_ids`` are rebuilt from them.
* ``replaced (R,2)``: fused point -> survivor; ``erased_kf_id, erased_parent, erased_T_c_p``.

Writing goes to a temporary file in the same folder, fsync'd, then renamed over
the target, so a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from slam.errors import DataError
from slam.backbone.frontend.features import Features
from slam.geometry.camera import PinholeCamera
from slam.backbone.map.keyframe import KeyFrame
from slam.backbone.map.map import Map
from slam.backbone.map.mappoint import DESCRIPTOR_BYTES, MapPoint

FORMAT = "slam-map"
VERSION = 1

# Features field -> (dtype, trailing shape)
_FEATURE_FIELDS = {
    "uv": (np.float64, (2,)),
    "uv_und": (np.float64, (2,)),
    "octave": (np.int32, ()),
    "angle": (np.float32, ()),
    "desc": (np.uint8, (DESCRIPTOR_BYTES,)),
    "depth": (np.float64, ()),
    "u_right": (np.float64, ()),
}


# ------------------------------------------------------------------ saving
def map_to_arrays(m: Map) -> dict[str, np.ndarray]:
    """The arrays of the file format (see the module docstring); takes the map lock."""
    with m.lock:
        kfs = [m.keyframes[k] for k in sorted(m.keyframes)]
        pts = [m.points[p] for p in sorted(m.points)]
        sizes = np.array([len(kf.features) for kf in kfs], dtype=np.int64)
        a: dict[str, np.ndarray] = {
            "kf_id": np.array([kf.id for kf in kfs], dtype=np.int64),
            "kf_frame_index": np.array([kf.frame_index for kf in kfs], dtype=np.int64),
            "kf_timestamp": np.array([kf.timestamp for kf in kfs], dtype=np.float64),
            "kf_T_c_w": np.array([kf.T_c_w for kf in kfs], dtype=np.float64).reshape(-1, 4, 4),
            "kf_parent": np.array([kf.parent_id for kf in kfs], dtype=np.int64),
            "kf_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        }
        for name, (dtype, tail) in _FEATURE_FIELDS.items():
            parts = [np.asarray(getattr(kf.features, name), dtype=dtype).reshape((-1,) + tail) for kf in kfs]
            a["feat_" + name] = np.concatenate(parts) if parts else np.zeros((0,) + tail, dtype=dtype)
        a["covisibility"] = np.array(
            [(kf.id, o, w) for kf in kfs for o, w in kf.connections.items()], dtype=np.int64
        ).reshape(-1, 3)
        a["loop_edges"] = np.array([(kf.id, o) for kf in kfs for o in sorted(kf.loop_edges)], dtype=np.int64).reshape(-1, 2)
        ids = np.array([p.id for p in pts], dtype=np.int64)
        arr = m._arrays
        a["pt_id"] = ids
        a["pt_position"] = arr.position[ids].copy()
        a["pt_normal"] = arr.normal[ids].copy()
        a["pt_descriptor"] = arr.descriptor[ids].copy()
        a["pt_distance"] = arr.distance[ids].copy()
        a["pt_counts"] = arr.counts[ids].copy()
        a["pt_ref_kf"] = np.array([p.ref_kf_id for p in pts], dtype=np.int64)
        a["pt_first_kf"] = np.array([p.first_kf_id for p in pts], dtype=np.int64)
        a["observations"] = np.array(
            [(p.id, k, i) for p in pts for k, i in p.observations.items()], dtype=np.int64
        ).reshape(-1, 3)
        a["replaced"] = np.array(sorted(m.replaced.items()), dtype=np.int64).reshape(-1, 2)
        erased = sorted(m.erased_keyframes.items())
        a["erased_kf_id"] = np.array([k for k, _ in erased], dtype=np.int64)
        a["erased_parent"] = np.array([v[0] for _, v in erased], dtype=np.int64)
        a["erased_T_c_p"] = np.array([v[1] for _, v in erased], dtype=np.float64).reshape(-1, 4, 4)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "camera": None if m.camera is None else m.camera.to_dict(),
            "scale_factor": m.scale_factor,
            "n_levels": m.n_levels,
            "min_point_obs": m.min_point_obs,
            "next_kf_id": m.next_kf_id,
            "next_point_id": m.next_point_id,
            "root_id": m.root_id,
            "counts": {
                "keyframes": len(kfs),
                "features": int(sizes.sum()),
                "points": len(pts),
                "observations": int(a["observations"].shape[0]),
            },
        }
    a["meta"] = np.array(json.dumps(meta))
    return a


def save_map(m: Map, path: str | Path, compress: bool = False) -> None:
    """Write ``m`` to ``path`` (the exact name, ``.npz`` advised) atomically: temp file, fsync, rename."""
    path = Path(path)
    arrays = map_to_arrays(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# ----------------------------------------------------------------- loading
def load_map(path: str | Path) -> Map:
    """Read a map file; a missing, truncated or inconsistent file raises :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "map file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any reader failure (BadZipFile, EOFError, zlib, pickle refused) is bad data
        raise DataError(path, f"not a readable map file ({type(e).__name__}: {e})") from None
    return map_from_arrays(arrays, path)


class _Reader:
    """Checked access to the arrays of one file; every failure is a DataError naming the file."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str | Path | None):
        self.arrays, self.source = arrays, source

    def fail(self, message: str) -> DataError:
        return DataError(self.source, message)

    def need(self, cond: bool, message: str) -> None:
        if not cond:
            raise self.fail(message)

    def get(self, name: str, dtype, tail: tuple = (), n: int | None = None) -> np.ndarray:
        a = self.arrays.get(name)
        self.need(a is not None, f"missing array {name!r}")
        self.need(a.dtype == np.dtype(dtype), f"array {name!r} has dtype {a.dtype}, expected {np.dtype(dtype)}")
        shape_ok = a.ndim == 1 + len(tail) and tuple(a.shape[1:]) == tail and (n is None or a.shape[0] == n)
        want = ("N" if n is None else str(n),) + tuple(str(t) for t in tail)
        self.need(shape_ok, f"array {name!r} has shape {a.shape}, expected ({', '.join(want)})")
        if a.dtype.kind == "f":
            self.need(bool(np.all(np.isfinite(a))), f"array {name!r} holds NaN or infinite values")
        return a

    def ids_in(self, values: np.ndarray, known: np.ndarray, what: str, allow_none: bool = False) -> None:
        v = values[values >= 0] if allow_none else values
        bad = ~np.isin(v, known)
        self.need(not bad.any(), f"{what} refers to unknown id {int(v[bad][0]) if bad.any() else -1}")


def map_from_arrays(arrays: dict[str, np.ndarray], source: str | Path | None = None) -> Map:
    """Rebuild a map from the arrays of :func:`map_to_arrays`, validating version, shapes and references."""
    r = _Reader(arrays, source)
    meta_a = r.arrays.get("meta")
    r.need(meta_a is not None and meta_a.dtype.kind == "U" and meta_a.ndim == 0, "missing or malformed 'meta' entry")
    try:
        meta = json.loads(str(meta_a[()]))
        r.need(isinstance(meta, dict), "'meta' is not a JSON object")
        r.need(meta.get("format") == FORMAT, f"not a map file (format {meta.get('format')!r})")
        r.need(meta.get("version") == VERSION, f"unsupported map file version {meta.get('version')!r} (this code reads {VERSION})")
        counts = meta["counts"]
        K, F, P, O = (int(counts[k]) for k in ("keyframes", "features", "points", "observations"))
        camera = None if meta["camera"] is None else PinholeCamera.from_dict(meta["camera"], source)
        m = Map(camera, float(meta["scale_factor"]), int(meta["n_levels"]), int(meta["min_point_obs"]))
        next_kf, next_pt, root = int(meta["next_kf_id"]), int(meta["next_point_id"]), int(meta["root_id"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise r.fail(f"malformed 'meta' entry ({type(e).__name__}: {e})") from None

    kf_id = r.get("kf_id", np.int64, n=K)
    kf_frame = r.get("kf_frame_index", np.int64, n=K)
    kf_ts = r.get("kf_timestamp", np.float64, n=K)
    kf_T = r.get("kf_T_c_w", np.float64, (4, 4), n=K)
    kf_parent = r.get("kf_parent", np.int64, n=K)
    offsets = r.get("kf_offsets", np.int64, n=K + 1)
    feats = {name: r.get("feat_" + name, dtype, tail, n=F) for name, (dtype, tail) in _FEATURE_FIELDS.items()}
    covis = r.get("covisibility", np.int64, (3,))
    loops = r.get("loop_edges", np.int64, (2,))
    pt_id = r.get("pt_id", np.int64, n=P)
    pt_pos = r.get("pt_position", np.float64, (3,), n=P)
    pt_normal = r.get("pt_normal", np.float64, (3,), n=P)
    pt_desc = r.get("pt_descriptor", np.uint8, (DESCRIPTOR_BYTES,), n=P)
    pt_dist = r.get("pt_distance", np.float64, (2,), n=P)
    pt_counts = r.get("pt_counts", np.int64, (2,), n=P)
    pt_ref = r.get("pt_ref_kf", np.int64, n=P)
    pt_first = r.get("pt_first_kf", np.int64, n=P)
    obs = r.get("observations", np.int64, (3,), n=O)
    replaced = r.get("replaced", np.int64, (2,))
    e_id = r.get("erased_kf_id", np.int64)
    e_parent = r.get("erased_parent", np.int64, n=e_id.shape[0])
    e_T = r.get("erased_T_c_p", np.float64, (4, 4), n=e_id.shape[0])

    # references between the arrays
    r.need(np.unique(kf_id).shape[0] == K and (K == 0 or kf_id.min() >= 0), "keyframe ids are not unique non-negative")
    r.need(np.unique(pt_id).shape[0] == P and (P == 0 or pt_id.min() >= 0), "point ids are not unique non-negative")
    r.need(next_kf > (kf_id.max() if K else -1) and next_pt > (pt_id.max() if P else -1), "id counters below used ids")
    r.need(offsets[0] == 0 and offsets[-1] == F and bool(np.all(np.diff(offsets) >= 0)), "keyframe feature offsets are inconsistent")
    r.need(K == 0 or root in kf_id, f"root keyframe {root} is not in the file")
    r.ids_in(kf_parent, kf_id, "a keyframe parent", allow_none=True)
    r.ids_in(covis[:, :2].reshape(-1), kf_id, "a covisibility edge")
    r.ids_in(loops.reshape(-1), kf_id, "a loop edge")
    r.ids_in(pt_ref, kf_id, "a point's reference keyframe", allow_none=True)
    r.ids_in(obs[:, 0], pt_id, "an observation")
    r.ids_in(obs[:, 1], kf_id, "an observation")
    r.need(next_pt > (replaced.max() if replaced.size else -1), "fused point ids beyond the id counter")
    order = np.argsort(kf_id)
    kf_row = order[np.searchsorted(kf_id[order], obs[:, 1])] if O else np.zeros(0, np.int64)
    n_kp = np.diff(offsets)
    r.need(bool(np.all((obs[:, 2] >= 0) & (obs[:, 2] < n_kp[kf_row]))) if O else True, "an observation's keypoint index is out of range")
    glob = offsets[kf_row] + obs[:, 2] if O else np.zeros(0, np.int64)
    r.need(np.unique(glob).shape[0] == O, "two observations claim the same keypoint")
    r.need(np.unique(obs[:, :2], axis=0).shape[0] == O, "a point is observed twice by one keyframe")

    point_of_kp = np.full(F, -1, dtype=np.int64)
    point_of_kp[glob] = obs[:, 0]
    for row in range(K):
        s, e = int(offsets[row]), int(offsets[row + 1])
        f = Features(**{name: feats[name][s:e].copy() for name in _FEATURE_FIELDS})
        kf = KeyFrame(int(kf_id[row]), int(kf_frame[row]), float(kf_ts[row]), kf_T[row], f, point_of_kp[s:e].copy())
        kf.parent_id = int(kf_parent[row])
        m.add_keyframe(kf)
    for kf in m.keyframes.values():
        if kf.parent_id >= 0:
            m.keyframes[kf.parent_id].children.add(kf.id)
    for a, b, w in covis.tolist():
        m.keyframes[a].connections[b] = w
    for a, b in loops.tolist():
        m.keyframes[a].loop_edges.add(b)

    arr = m._arrays
    arr.reserve(next_pt)
    for i, pid in enumerate(pt_id.tolist()):
        p = MapPoint(pid, pt_pos[i], pt_desc[i], int(pt_ref[i]), int(pt_first[i]), arrays=arr)
        m.points[pid] = p
    arr.position[pt_id], arr.normal[pt_id], arr.descriptor[pt_id] = pt_pos, pt_normal, pt_desc
    arr.distance[pt_id], arr.counts[pt_id] = pt_dist, pt_counts
    for pid, k, i in obs.tolist():
        m.points[pid].observations[k] = i

    m.next_kf_id, m.next_point_id, m.root_id = next_kf, next_pt, root
    # the file keeps no list of the maps' first keyframes: they are the ones without a parent
    m.origins = {k for k, kf in m.keyframes.items() if kf.parent_id < 0}
    m.replaced = {int(a): int(b) for a, b in replaced.tolist()}
    m.erased_keyframes = {int(k): (int(p), e_T[i].copy()) for i, (k, p) in enumerate(zip(e_id.tolist(), e_parent.tolist()))}
    return m
