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
* optional, when any keyframe has its image: ``kf_thumbnail (K,120,160,3) uint8`` RGB and
  ``kf_has_thumbnail (K,) bool`` (rows of keyframes without one are zeros), for the learned models
  trained on a map's keyframes (``slam-train posenet --map``) and learned place recognition.

Writing goes to a temporary file in the same folder, fsync'd, then renamed over
the target, so a crash mid-save leaves the previous file intact.

Loading reads ``meta`` first and checks every member's size (from the zip
directory, before anything is decompressed) against what the header's counts
allow, the total against the file's size (``MAX_EXPANSION``: a zip bomb), and
each member's own array header against its size, so a bad file is a
:class:`DataError`, fast, and memory stays bounded. Members the format does not
know are not read.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from slam.errors import DataError
from slam.fileset import write_atomic
from slam.backbone.frontend.features import Features
from slam.geometry.camera import PinholeCamera
from slam.backbone.map.keyframe import KeyFrame
from slam.backbone.map.map import Map
from slam.backbone.map.mappoint import DESCRIPTOR_BYTES, MapPoint
from slam.backbone.loop.place import THUMBNAIL_WH

log = logging.getLogger(__name__)

FORMAT = "slam-map"
VERSION = 1

# Limits of the loader (a file beyond them is refused before its arrays are read)
MAX_POINT_IDS = 1 << 24  # next_point_id: point arrays are indexed by id, 113 bytes per id (1.9 GB at this limit)
MAX_KEYFRAME_IDS = 1 << 24  # next_kf_id (bounds the erased-keyframe records)
MAX_META_BYTES = 1 << 20  # the JSON header
NPY_HEADER_BYTES = 1 << 16  # room for a member's own .npy header
MAX_MEMBERS = 256  # zip entries (the format has 29, 31 with thumbnails)
MAX_EXPANSION = 16  # members may decompress to this many times the file's size (numpy's deflate: ~1.5x) ...
MIN_EXPANSION_BYTES = 64 << 20  # ... or to this many bytes, whichever is more

_THUMB_SHAPE = (THUMBNAIL_WH[1], THUMBNAIL_WH[0], 3)

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
        if any(kf.thumbnail is not None for kf in kfs):
            has = np.array([kf.thumbnail is not None for kf in kfs])
            a["kf_has_thumbnail"] = has
            a["kf_thumbnail"] = np.stack([kf.thumbnail if kf.thumbnail is not None
                                          else np.zeros(_THUMB_SHAPE, np.uint8) for kf in kfs])
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
    """Write ``m`` to ``path`` (the exact name, ``.npz`` advised) atomically: temp file, fsync, rename.

    The file gets the permissions of any new file (0666 less the umask), like the other outputs of a run.
    """
    path = Path(path)
    arrays = map_to_arrays(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: (np.savez_compressed if compress else np.savez)(f, **arrays))


# ----------------------------------------------------------------- loading
def load_map(path: str | Path) -> Map:
    """Read a map file; a missing, truncated, inconsistent or oversized file raises :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "map file not found")
    try:
        with zipfile.ZipFile(path) as zf:
            arrays = _read_members(zf, path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure (BadZipFile, EOFError, zlib, pickle refused) is bad data
        raise DataError(path, f"not a readable map file ({type(e).__name__}: {e})") from None
    return map_from_arrays(arrays, path)


def _member_rows(meta: dict, path: Path) -> dict[str, int]:
    """Most rows each member may hold, from the header's counts and id counters (checked against the limits)."""
    try:
        counts = meta["counts"]
        K, F, P, O = (int(counts[k]) for k in ("keyframes", "features", "points", "observations"))
        next_kf, next_pt = int(meta["next_kf_id"]), int(meta["next_point_id"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"malformed 'meta' entry ({type(e).__name__}: {e})") from None
    if min(K, F, P, O, next_kf, next_pt) < 0:
        raise DataError(path, f"negative counts or id counters in 'meta' ({K=}, {F=}, {P=}, {O=}, next_kf_id "
                              f"{next_kf}, next_point_id {next_pt})")
    if next_pt > MAX_POINT_IDS or next_kf > MAX_KEYFRAME_IDS:
        raise DataError(path, f"next_point_id {next_pt} / next_kf_id {next_kf} beyond what this loader accepts "
                              f"({MAX_POINT_IDS} / {MAX_KEYFRAME_IDS}: point arrays are indexed by id)")
    if P > next_pt or K > next_kf:
        raise DataError(path, f"'meta' counts {P} points and {K} keyframes but its id counters are "
                              f"{next_pt} / {next_kf}")
    rows = {"kf_id": K, "kf_frame_index": K, "kf_timestamp": K, "kf_T_c_w": K, "kf_parent": K, "kf_offsets": K + 1,
            "covisibility": K * max(K - 1, 0), "loop_edges": K * max(K - 1, 0), "observations": O,
            "kf_thumbnail": K, "kf_has_thumbnail": K, "replaced": next_pt, "erased_kf_id": next_kf, "erased_parent": next_kf, "erased_T_c_p": next_kf}
    rows.update({"feat_" + name: F for name in _FEATURE_FIELDS})
    rows.update({name: P for name in ("pt_id", "pt_position", "pt_normal", "pt_descriptor", "pt_distance",
                                      "pt_counts", "pt_ref_kf", "pt_first_kf")})
    return rows


# bytes of one row of each member (dtype size x trailing shape)
_ROW_BYTES = {"kf_id": 8, "kf_frame_index": 8, "kf_timestamp": 8, "kf_T_c_w": 128, "kf_parent": 8, "kf_offsets": 8,
              "covisibility": 24, "loop_edges": 16, "observations": 24, "replaced": 16, "erased_kf_id": 8,
              "erased_parent": 8, "erased_T_c_p": 128, "pt_id": 8, "pt_position": 24, "pt_normal": 24,
              "kf_thumbnail": int(np.prod(_THUMB_SHAPE)), "kf_has_thumbnail": 1, "pt_descriptor": DESCRIPTOR_BYTES, "pt_distance": 16, "pt_counts": 16, "pt_ref_kf": 8, "pt_first_kf": 8,
              **{"feat_" + n: np.dtype(d).itemsize * int(np.prod(t, dtype=np.int64))
                 for n, (d, t) in _FEATURE_FIELDS.items()}}


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One member as an array, after checking that the size its own header declares fits in the member."""
    name = info.filename[:-4]
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype.hasobject:
            raise DataError(path, f"member {name!r} holds Python objects (pickles are refused)")
        n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if all(d >= 0 for d in shape) else -1
        if not 0 <= n_bytes <= info.file_size:
            raise DataError(path, f"member {name!r} declares shape {shape} of {dtype} ({n_bytes} bytes) in "
                                  f"{info.file_size} bytes")
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_members(zf: zipfile.ZipFile, path: Path) -> dict[str, np.ndarray]:
    """The members of a map file, each checked against the limits the header's counts give before it is read."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise DataError(path, f"{len(infos)} members in the file (a map file has {len(_ROW_BYTES) + 1})")
    by_name = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
    meta_info = by_name.get("meta")
    if meta_info is None:
        raise DataError(path, "missing or malformed 'meta' entry")
    if meta_info.file_size > MAX_META_BYTES:
        raise DataError(path, f"'meta' entry of {meta_info.file_size} bytes (at most {MAX_META_BYTES})")
    meta_a = _read_npy(zf, meta_info, path)
    arrays = {"meta": meta_a}
    try:
        meta = json.loads(str(meta_a[()])) if meta_a.dtype.kind == "U" and meta_a.ndim == 0 else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        return arrays  # map_from_arrays says what is wrong with the header
    rows = _member_rows(meta, path)
    total = meta_info.file_size
    for name, info in by_name.items():
        if name not in rows:
            if name != "meta":
                log.warning("%s: member %r is not part of the map format; not read", path, name)
            continue
        limit = rows[name] * _ROW_BYTES[name] + NPY_HEADER_BYTES
        if info.file_size > limit:
            raise DataError(path, f"member {name!r} holds {info.file_size} bytes, more than the {limit} that "
                                  f"{rows[name]} rows (from the header's counts) take")
        total += info.file_size
    allowed = max(MIN_EXPANSION_BYTES, MAX_EXPANSION * path.stat().st_size)
    if total > allowed:
        raise DataError(path, f"members decompress to {total} bytes from a {path.stat().st_size}-byte file "
                              f"(at most {allowed}): not a map file numpy wrote")
    for name, info in by_name.items():
        if name in rows:
            arrays[name] = _read_npy(zf, info, path)
    return arrays


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
    thumbs = has_thumb = None
    if "kf_thumbnail" in r.arrays or "kf_has_thumbnail" in r.arrays:
        thumbs = r.get("kf_thumbnail", np.uint8, _THUMB_SHAPE, n=K)
        has_thumb = r.get("kf_has_thumbnail", np.bool_, n=K)

    # references between the arrays
    r.need(np.unique(kf_id).shape[0] == K and (K == 0 or kf_id.min() >= 0), "keyframe ids are not unique non-negative")
    r.need(np.unique(pt_id).shape[0] == P and (P == 0 or pt_id.min() >= 0), "point ids are not unique non-negative")
    r.need(next_kf > (kf_id.max() if K else -1) and next_pt > (pt_id.max() if P else -1), "id counters below used ids")
    r.need(next_pt <= MAX_POINT_IDS, f"next_point_id {next_pt} beyond {MAX_POINT_IDS} (point arrays are indexed by id)")
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
        if has_thumb is not None and has_thumb[row]:
            kf.thumbnail = thumbs[row].copy()
        m.add_keyframe(kf)
    for kf in m.keyframes.values():
        if kf.parent_id >= 0:
            m.keyframes[kf.parent_id].children.add(kf.id)
    for a, b, w in covis.tolist():
        m.keyframes[a].connections[b] = w
    for a, b in loops.tolist():
        m.keyframes[a].loop_edges.add(b)

    arr = m._arrays
    arr.reserve(int(pt_id.max()) + 1 if P else 0)  # rows of the points there are (new ids grow the arrays)
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


# ------------------------------------------------------------ using a map again
def load_map_for_run(path: str | Path, camera: PinholeCamera, scale_factor: float, n_levels: int, mode: str) -> Map:
    """:func:`load_map` and :func:`check_map_for_run`: a map a run may start in, or a DataError naming the file."""
    m = load_map(path)
    check_map_for_run(m, path, camera, scale_factor, n_levels, mode)
    log.info("map %s: %d keyframes, %d points; the first frames relocalise in it", path, len(m.keyframes),
             len(m.points))
    return m


def check_map_for_run(m: Map, path: str | Path, camera: PinholeCamera, scale_factor: float, n_levels: int,
                      mode: str) -> None:
    """Refuse (:class:`DataError` naming ``path`` and what differs) a loaded map this run cannot track in.

    The map must come from the same camera (model, size, intrinsics, distortion, to 1e-6 relative),
    the same ORB pyramid (scale factor, levels: keypoint levels and point scale ranges depend on them),
    hold keyframes, and, for a run with depth (``rgbd``, ``stereo``), have metric scale: a monocular
    map (no keyframe with a depth measurement) has a scale of its own.
    """
    diffs = []
    if m.camera is None:
        diffs.append("the map file holds no camera")
    else:
        a, b = m.camera.to_dict(), camera.to_dict()
        for key in ("model", "width", "height", "distortion_model"):
            if a[key] != b[key]:
                diffs.append(f"camera {key} {a[key]!r} in the map, {b[key]!r} for this sequence")
        for key in ("fx", "fy", "cx", "cy"):
            if not np.isclose(a[key], b[key], rtol=1e-6, atol=1e-9):
                diffs.append(f"camera {key} {a[key]:g} in the map, {b[key]:g} for this sequence")
        da, db = np.asarray(a["distortion"], float), np.asarray(b["distortion"], float)
        n = max(len(da), len(db))
        da, db = np.pad(da, (0, n - len(da))), np.pad(db, (0, n - len(db)))  # missing terms are zeros
        if not np.allclose(da, db, rtol=1e-6, atol=1e-9):
            diffs.append(f"camera distortion {a['distortion']} in the map, {b['distortion']} for this sequence")
    if not np.isclose(m.scale_factor, scale_factor, rtol=1e-9):
        diffs.append(f"features.scale_factor {m.scale_factor:g} in the map, {scale_factor:g} in this run's config")
    if m.n_levels != n_levels:
        diffs.append(f"features.n_levels {m.n_levels} in the map, {n_levels} in this run's config")
    if diffs:
        raise DataError(path, "this map cannot be used for this run: " + "; ".join(diffs))
    with m.lock:
        kfs = [kf for kf in m.keyframes.values() if not kf.bad]
        metric = any(bool(np.any(kf.features.u_right >= 0)) for kf in kfs)
    if not kfs:
        raise DataError(path, "the map holds no keyframe to relocalise in")
    if not mode.startswith("mono") and not metric:
        raise DataError(path, f"the map was built monocularly (no keyframe has depth: a scale of its own); "
                              f"a {mode} run cannot continue it")
