"""Real CT + tumour mask -> one packed (S, S, S) pair in [-1, 1], and back (design §2, §5).

Pipeline for one case (`preprocess_pair`):

1. **Automatic head-and-neck crop** (`find_head_neck_crop`), computed from the CT alone on the
   source grid. The thesis cut each centre by hand; no library finds the neck of a CT, so this
   heuristic is hand-written:

   - body mask: voxels > -500 HU on a ~4 mm in-plane grid, opened in-plane (detaches the couch),
     largest 3D connected component (scipy.ndimage). Padding (-1024/-2048/-3024) is never body.
   - per-axial-slice body area a(z) (smoothed over ~15 mm) and width profiles, limited to the upper 450 mm
     of the body (so legs and pelvis of whole-body scans never compete).
   - the neck is the narrowest slice that has a clearly larger cross-section *above* it (head,
     area >= 1.25 a) and shoulders *below* it within 150 mm (a slice >= 250 mm and >= 1.6 x as
     wide; adult heads are < 200 mm wide, so the taper of the vertex never passes). This valley
     exists in whole-body and in head-and-neck scans that reach the shoulders, whatever the
     patient's height, the scan's top (vertex, orbits) or the padding value.
   - the box is a fixed physical field of view, a cube of 128 x `spacing` mm (192 mm at the
     thesis's 1.5 mm): z from 64 mm (1/3 of it) below the neck up to 128 mm above it — from the
     supraclavicular nodes to above the skull base, where pharynx, larynx and neck nodes lie —
     and x/y centred on the body's centroid in the slices around the neck.
   - fallbacks, recorded as `method`: the scan stops above the shoulders -> the narrowest slice
     below the head ("head"); it starts below the head -> the narrowest slice above the
     shoulders ("shoulders"); neither -> the narrowest slice of the upper body below the vertex
     ("min-area"); no body at all -> the centre of the scan ("centre").

2. **One interpolation straight to the final grid.** The box is cut from the source grid
   (padding with air where it leaves the scan) and resized once to S x S x S/2 with MONAI
   `Resize`: image trilinear after anti-aliasing (a Gaussian of sigma (factor - 1) / 2, as
   scikit-image does, computed with the scan's own voxels around the box — MONAI's built-in
   anti-aliasing pads with zeros, i.e. 0 HU, at the border), mask `nearest-exact` (torch's
   plain `nearest` is shifted by half a voxel against trilinear). The thesis resampled to 1.5 mm and then resized again: two
   interpolations blur twice, and the first one runs on the whole uncropped scan (13 s with
   scikit-image order 3; MONAI `Spacing` 3.3 s). Cropping first and interpolating once is
   both faster (~0.3 s) and more accurate. Because the field of view is fixed, the packed grid
   has (almost) the same spacing for every case: 128 x spacing / S in x/y and twice that in z
   (1.5 x 1.5 x 3 mm at S = 128, close to HECKTOR's native 3 mm slices); the exact value per
   case (the box is a whole number of source voxels) is recorded in the manifest.

3. **HU window** clipped *before* interpolating (so padding and metal never bleed into
   tissue) and mapped linearly to [-1, 1]; mask binarised (GTVp ∪ GTVn) -> {-1, 1} or 3-class
   {0, 1, 2} -> {-1, 0, 1}.

4. **Packing** image and mask halves along z (`z`) or slice by slice (`interleave`, even z =
   image) into (S, S, S). HA-GAN's slab runs along x, orthogonal to z, so every slab holds both.

`unpack` is the exact inverse of the packing and of the HU mapping.

Workspace side (contract 2): `preprocess_workspace` packs every usable case once per config
into WS/data/packed/s<S>-<config_hash>/ (one float16 `.npy` per case — quantisation error
<= 2^-11, far below the resize error — plus manifest.json recording each case's split, centre,
crop box, source and packed spacing). One folder serves GAN training (train) and segmentation
(train/val/test): `load_packed(ws, cfg, split)` selects cases through the *current* split
registry, so a re-split never needs re-preprocessing, and `--split` only limits the work.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from synthct.config import DataConfig
from synthct.errors import ImageReadError, WorkspaceError
from synthct.io import Volume

HU_AIR = -1024.0
BODY_HU = -500.0  # fat is ~ -100, lung ~ -800: > -500 HU is body (and couch, removed by opening)
REFERENCE_VOXELS = 128  # field of view = 128 voxels of `spacing` mm (the thesis grid at S=128)
COARSE_MM = 4.0  # in-plane resolution of the body mask
SMOOTH_MM = 15.0  # smoothing of the area profile
UPPER_BODY_MM = 450.0  # the neck is searched for in this much of the body below its top
HEAD_RATIO = 1.25  # head: a slice above with >= 1.25 x the neck's area
SHOULDER_RATIO, SHOULDER_WIDTH_MM, SHOULDER_MM = 1.6, 250.0, 150.0  # shoulders: within 150 mm
# below, >= 1.6 x the neck's width and >= 250 mm wide (adult heads are < 200 mm wide)
BELOW_NECK_FRACTION = 1 / 3  # share of the z field of view below the neck
MIN_SLICE_AREA_MM2 = 500.0  # slices with less body than this (5 cm^2) are "empty"


# -- HU window and mask coding ------------------------------------------------------------------
def hu_to_unit(hu, window: tuple[float, float]):
    """Clip HU to `window` = (lo, hi) and map linearly to [-1, 1] (lo -> -1, hi -> 1)."""
    lo, hi = float(window[0]), float(window[1])
    return (_clip(hu, lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0


def unit_to_hu(x, window: tuple[float, float]):
    """Inverse of `hu_to_unit` on [-1, 1]: (x * 0.5 + 0.5) * (hi - lo) + lo."""
    lo, hi = float(window[0]), float(window[1])
    return (x * 0.5 + 0.5) * (hi - lo) + lo


def mask_to_unit(mask, kind: str = "binary"):
    """Labels -> packed values: binary {0, >0} -> {-1, 1}; multiclass {0, 1, 2} -> {-1, 0, 1}."""
    if kind == "binary":
        return (mask > 0) * 2.0 - 1.0
    return _clip(mask * 1.0, 0.0, 2.0) - 1.0


def unit_to_mask(x, kind: str = "binary"):
    """Packed mask values -> labels (uint8): binary x > 0; multiclass round(x + 1) in {0, 1, 2}."""
    # multiclass: 0 below -0.5, 1 up to 0.5, 2 above
    m = x > 0 if kind == "binary" else _clip((x + 1.5) // 1.0, 0.0, 2.0)
    return m.to(dtype=_torch().uint8) if _is_tensor(x) else np.asarray(m).astype(np.uint8)


# -- packing ------------------------------------------------------------------------------------
def pack(image_unit, mask_unit, packing: str = "z"):
    """Two halves (..., S, S, S/2) in [-1, 1] -> packed (..., S, S, S).

    `z`: image in z < S/2, mask in z >= S/2. `interleave`: even z slices image, odd z mask.
    Works on numpy arrays and torch tensors alike.
    """
    if image_unit.shape != mask_unit.shape:
        raise ValueError(
            f"image half {tuple(image_unit.shape)} != mask half {tuple(mask_unit.shape)}"
        )
    if _is_tensor(image_unit):
        torch = _torch()
        if packing == "z":
            return torch.cat([image_unit, mask_unit], dim=-1)
        return torch.stack([image_unit, mask_unit], dim=-1).flatten(-2)
    if packing == "z":
        return np.concatenate([image_unit, mask_unit], axis=-1)
    return np.stack([image_unit, mask_unit], axis=-1).reshape(*image_unit.shape[:-1], -1)


def unpack_halves(packed, packing: str = "z"):
    """Packed (..., S, S, S) -> (image half, mask half), each (..., S, S, S/2), values unchanged."""
    s = packed.shape[-1]
    if s % 2:
        raise ValueError(f"packed z size must be even, got shape {tuple(packed.shape)}")
    if packing == "z":
        return packed[..., : s // 2], packed[..., s // 2 :]
    if packing == "interleave":
        return packed[..., 0::2], packed[..., 1::2]
    raise ValueError(f"packing must be 'z' or 'interleave', got {packing!r}")


def unpack(packed, cfg: DataConfig):
    """Packed (..., S, S, S) in [-1, 1] -> (image_hu float32 (..., S, S, S/2), mask uint8 same).

    The image is mapped back with the HU window of `cfg` (values outside [-1, 1] are clipped
    first); the mask is `packed mask > 0` (binary) or {0, 1, 2} (multiclass). numpy or torch.
    """
    img, msk = unpack_halves(packed, cfg.packing)
    hu = unit_to_hu(_clip(img * 1.0, -1.0, 1.0), cfg.hu_window)
    hu = hu.to(_torch().float32) if _is_tensor(hu) else np.asarray(hu, dtype=np.float32)
    return hu, unit_to_mask(msk, cfg.mask)


# -- crop ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropBox:
    """A box on the source voxel grid, [start, stop) per axis; may extend past the scan (padded).

    method: "neck" | "min-area" | "centre" (how the box was placed); neck_index: the z index of
    the neck slice (None for "centre").
    """

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    method: str
    neck_index: int | None = None

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    def to_dict(self, affine: np.ndarray) -> dict[str, Any]:
        """Voxel box plus its corners in world (RAS+) mm: voxel-edge to voxel-edge."""
        lo = affine @ np.array([*(a - 0.5 for a in self.start), 1.0])
        hi = affine @ np.array([*(b - 0.5 for b in self.stop), 1.0])
        return {
            "start": list(self.start),
            "stop": list(self.stop),
            "mm_min": [round(float(v), 3) for v in np.minimum(lo, hi)[:3]],
            "mm_max": [round(float(v), 3) for v in np.maximum(lo, hi)[:3]],
            "method": self.method,
            "neck_index": self.neck_index,
        }


def field_of_view_mm(cfg: DataConfig) -> tuple[float, float, float]:
    """The physical size (mm) of the crop: a cube of REFERENCE_VOXELS x spacing (192 mm at 1.5)."""
    f = REFERENCE_VOXELS * cfg.spacing
    return (f, f, f)


@dataclass(frozen=True)
class BodyProfile:
    """Body cross-section per axial slice of a CT, all arrays (Z,) on the source grid.

    area: mm^2; width: left-right extent in mm; cx, cy: centroid (source voxel index, NaN where
    a slice holds no body).
    """

    area: np.ndarray
    width: np.ndarray
    cx: np.ndarray
    cy: np.ndarray


def body_profile(image: Volume) -> BodyProfile:
    """Body mask (> -500 HU, opened in-plane, largest 3D component) of a CT in HU, per slice."""
    sx, sy, _ = image.spacing
    kx, ky = max(1, round(COARSE_MM / sx)), max(1, round(COARSE_MM / sy))
    coarse = image.array[::kx, ::ky, :] > BODY_HU
    coarse = ndimage.binary_opening(coarse, structure=np.ones((3, 3, 1), dtype=bool))
    labels, n = ndimage.label(coarse)
    nz = image.shape[2]
    if n == 0:
        nan = np.full(nz, np.nan)
        return BodyProfile(np.zeros(nz), np.zeros(nz), nan, nan.copy())
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    body = labels == int(counts.argmax())
    n_slice = body.sum(axis=(0, 1)).astype(np.float64)
    in_x = body.any(axis=1)  # (X', Z)
    xs = np.arange(body.shape[0])
    first = np.where(in_x.any(0), xs[:, None].repeat(nz, 1)[in_x.argmax(0), np.arange(nz)], 0)
    last = np.where(in_x.any(0), body.shape[0] - 1 - in_x[::-1].argmax(0), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (body * (xs[:, None, None] * kx)).sum(axis=(0, 1)) / n_slice
        cy = (body * (np.arange(body.shape[1])[None, :, None] * ky)).sum(axis=(0, 1)) / n_slice
    width = (last - first + 1) * kx * sx
    return BodyProfile(n_slice * (kx * sx) * (ky * sy), width.astype(np.float64), cx, cy)


def find_neck(profile: BodyProfile, sz: float) -> tuple[int | None, str]:
    """Index of the neck slice from a body profile (z up, slices `sz` mm apart) and the method.

    "neck": narrowest slice with the head above and the shoulders below; "head": no shoulders
    in the scan, narrowest slice below the head; "shoulders": no head, narrowest slice above the
    shoulders; "min-area": neither; "centre": no body at all (index None).
    """
    area = profile.area
    present = np.flatnonzero(area >= MIN_SLICE_AREA_MM2)
    if present.size == 0:
        return None, "centre"
    top = int(present[-1])
    a = ndimage.uniform_filter1d(area, size=max(1, round(SMOOTH_MM / sz)), mode="nearest")
    w = profile.width
    lo = max(0, top - round(UPPER_BODY_MM / sz))
    below_n = max(1, round(SHOULDER_MM / sz))
    zs = np.arange(lo, top + 1)
    zs = zs[a[zs] >= MIN_SLICE_AREA_MM2]
    head = np.array([a[z + 1 : top + 1].max(initial=0.0) >= HEAD_RATIO * a[z] for z in zs])
    wide = np.array([w[max(lo, z - below_n) : z].max(initial=0.0) for z in zs])
    shoulders = (wide >= SHOULDER_WIDTH_MM) & (wide >= SHOULDER_RATIO * w[zs])
    for method, ok in (("neck", head & shoulders), ("head", head), ("shoulders", shoulders)):
        if ok.any():
            cand = zs[ok]
            return int(cand[np.argmin(a[cand])]), method
    rest = zs[zs <= top - round(60 / sz)]  # skip the taper of the vertex
    rest = rest if rest.size else zs
    return int(rest[np.argmin(a[rest])]), "min-area"


def find_head_neck_crop(image: Volume, fov_mm: tuple[float, float, float]) -> CropBox:
    """The head-and-neck box (see the module docstring) on the grid of `image` (CT in HU)."""
    sx, sy, sz = image.spacing
    nx, ny, nz = image.shape
    prof = body_profile(image)
    area, cx, cy = prof.area, prof.cx, prof.cy
    neck, method = find_neck(prof, sz)
    size = [max(1, round(f / s)) for f, s in zip(fov_mm, (sx, sy, sz), strict=True)]
    if neck is None:
        centre = [nx / 2, ny / 2, nz / 2]
    else:
        z_lo, z_hi = max(0, neck - round(10 / sz)), min(nz, neck + round(40 / sz) + 1)
        ok = np.isfinite(cx[z_lo:z_hi]) & (area[z_lo:z_hi] > 0)
        w = area[z_lo:z_hi][ok]
        centre = [
            float(np.average(cx[z_lo:z_hi][ok], weights=w)) + 0.5,
            float(np.average(cy[z_lo:z_hi][ok], weights=w)) + 0.5,
            neck + 0.5 - BELOW_NECK_FRACTION * fov_mm[2] / sz + size[2] / 2,
        ]
    start = [round(c - n / 2) for c, n in zip(centre, size, strict=True)]
    stop = [a + n for a, n in zip(start, size, strict=True)]
    return CropBox(tuple(start), tuple(stop), method, neck)  # type: ignore[arg-type]


def extract_box(array: np.ndarray, box: CropBox, fill: float) -> np.ndarray:
    """array[box] with `fill` wherever the box leaves the array. Shape `box.size`."""
    out = np.full(box.size, fill, dtype=array.dtype)
    src, dst = [], []
    for a, b, n in zip(box.start, box.stop, array.shape, strict=True):
        lo, hi = max(a, 0), min(b, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    out[tuple(dst)] = array[tuple(src)]
    return out


def antialias_sigma(src_shape, dst_shape) -> np.ndarray:
    """Gaussian sigma (source voxels) before downsampling: (factor - 1) / 2, as scikit-image."""
    return np.maximum(0.0, (np.array(src_shape) / np.array(dst_shape) - 1.0) / 2.0)


def resize(
    array: np.ndarray, shape: tuple[int, int, int], kind: str = "image", smooth: bool = True
) -> np.ndarray:
    """Resize a 3D array to `shape`: image trilinear (anti-aliased), mask nearest-exact.

    Interpolation is MONAI `Resize` (align_corners=False: voxel edges map to voxel edges, so
    the field of view is kept exactly). The anti-aliasing Gaussian is scipy's with edge
    replication: MONAI's own pads with zeros, which pulls border voxels toward 0 HU.
    """
    import torch
    from monai.transforms import Resize

    if tuple(array.shape) == tuple(shape):
        return array.astype(np.float32, copy=True)
    arr = np.asarray(array, dtype=np.float32)
    if kind == "image" and smooth and antialias_sigma(arr.shape, shape).any():
        arr = ndimage.gaussian_filter(
            arr, antialias_sigma(arr.shape, shape), mode="nearest", truncate=3.0
        )
    t = torch.from_numpy(np.ascontiguousarray(arr))[None]
    mode = "trilinear" if kind == "image" else "nearest-exact"
    out = Resize(shape, mode=mode, anti_aliasing=False)(t)
    return np.asarray(out.as_tensor()[0].numpy(), dtype=np.float32)


def align_mask(mask: Volume, image: Volume, name: str = "mask") -> np.ndarray:
    """The mask's voxels on the image grid (same orientation and spacing required).

    HECKTOR labels are sometimes a voxel larger than their CT: an integer offset or a size
    difference of up to 5 voxels per axis is absorbed by cropping/padding with background.
    """
    a_img, a_msk = image.affine, mask.affine
    if not np.allclose(a_img[:3, :3], a_msk[:3, :3], rtol=1e-3, atol=1e-3):
        raise ImageReadError(
            f"{name}: voxel axes/spacing {mask.spacing} differ from the CT's {image.spacing}"
        )
    offset = np.linalg.solve(a_img, a_msk[:, 3])[:3]  # mask voxel 0 in image voxel coords
    shift = np.round(offset).astype(int)
    diff = [m - i for m, i in zip(mask.shape, image.shape, strict=True)]
    if np.abs(offset - shift).max() > 0.1 or np.abs(shift).max() > 5 or max(map(abs, diff)) > 5:
        raise ImageReadError(
            f"{name}: shape {mask.shape} at voxel offset {np.round(offset, 2).tolist()} does not "
            f"match the CT's {image.shape} (expected the same grid, within 5 voxels)"
        )
    if diff.count(0) != 3 or shift.any():
        box = CropBox(tuple(-shift), tuple(-shift + np.array(image.shape)), "align")  # type: ignore[arg-type]
        return extract_box(mask.array, box, 0)
    return mask.array


@dataclass(frozen=True)
class PackedPair:
    """One preprocessed case: `packed` (S, S, S) float32 in [-1, 1] and what was done to it."""

    packed: np.ndarray
    crop: CropBox
    spacing: tuple[float, float, float]  # packed grid (image half) voxel size, mm
    affine: np.ndarray  # image half voxel -> world RAS+ mm
    tumour_kept: float  # fraction of the source tumour voxels inside the crop (1.0 when none)


def preprocess_pair(image: Volume, mask: Volume, cfg: DataConfig, name: str = "case") -> PackedPair:
    """CT (HU) + label volume -> `PackedPair` (crop, HU window, one resize, pack; see module doc)."""
    s = cfg.size
    half = (s, s, s // 2)
    labels = align_mask(mask, image, name)
    if cfg.mask == "multiclass":
        bad = np.setdiff1d(np.unique(labels), [0, 1, 2])
        if bad.size:
            raise ImageReadError(f"{name}: label values {bad[:5].tolist()} (expected 0, 1, 2)")
    if cfg.crop:
        box = find_head_neck_crop(image, field_of_view_mm(cfg))
    else:
        box = CropBox((0, 0, 0), image.shape, "none")
    lo, hi = cfg.hu_window
    # anti-alias with the scan's real neighbours around the box, then cut the box and resize
    sigma = antialias_sigma(box.size, half)
    m = np.ceil(3.0 * sigma).astype(int)
    big = CropBox(tuple(np.array(box.start) - m), tuple(np.array(box.stop) + m), box.method)  # type: ignore[arg-type]
    img = np.clip(extract_box(image.array, big, HU_AIR), lo, hi)
    if sigma.any():
        img = ndimage.gaussian_filter(img, sigma, mode="nearest", truncate=3.0)
    img = img[tuple(slice(k, k + n) for k, n in zip(m, box.size, strict=True))]
    lab = extract_box(labels, box, 0)
    img_half = hu_to_unit(resize(img, half, "image", smooth=False), cfg.hu_window)
    lab = (lab > 0) if cfg.mask == "binary" else lab
    msk_half = mask_to_unit(np.rint(resize(lab.astype(np.float32), half, "mask")), cfg.mask)
    packed = pack(img_half.astype(np.float32), msk_half.astype(np.float32), cfg.packing)
    total = int(np.count_nonzero(labels))
    kept = int(np.count_nonzero(lab)) / total if total else 1.0
    src = np.array(image.spacing)
    spacing = np.array(box.size) * src / np.array(half)
    # packed voxel j centre = start - 0.5 + (j + 0.5) * size / half, in source voxel coords
    scale = np.diag([*(np.array(box.size) / np.array(half)), 1.0])
    scale[:3, 3] = np.array(box.start) - 0.5 + 0.5 * np.array(box.size) / np.array(half)
    return PackedPair(
        packed=np.clip(packed, -1.0, 1.0).astype(np.float32),
        crop=box,
        spacing=tuple(float(v) for v in spacing),  # type: ignore[arg-type]
        affine=image.affine @ scale,
        tumour_kept=kept,
    )


# -- helpers ------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to ask
    return torch is not None and isinstance(x, torch.Tensor)


def _clip(x, lo: float, hi: float):
    return x.clamp(lo, hi) if _is_tensor(x) else np.clip(x, lo, hi)


# -- workspace: packed folder, manifest, parallel preprocessing, loading -------------------------
PIPELINE_VERSION = 1  # bump when the pipeline changes: older entries are then redone
MANIFEST = "manifest.json"
MANIFEST_EVERY_S = 5.0  # the manifest is rewritten at most this often while cases complete


@dataclass(frozen=True)
class PackedSet:
    """Packed pairs of one split: `arrays` (N, S, S, S) float32 in [-1, 1], aligned lists.

    spacing: mean voxel size (mm, (sx, sy, sz)) of an image half over these cases — what an
    output NIfTI of this grid must carry.
    """

    arrays: np.ndarray
    case_ids: list[str]
    centres: list[str]
    spacing: tuple[float, float, float]
    manifest: dict


def packed_dir(ws, cfg: DataConfig):
    """WS/data/packed/s<S>-<config_hash>/ for this preprocessing config."""
    from synthct.config import config_hash

    return ws.packed_dir(f"s{cfg.size}-{config_hash(cfg)}")


def preprocess_command(cfg: DataConfig, split: str = "all") -> str:
    """The `synthct preprocess` command line that produces `cfg` (for error messages)."""
    lo, hi = cfg.hu_window
    cmd = (
        f"synthct preprocess --size {cfg.size} --spacing {cfg.spacing:g} --hu-window {lo:g} {hi:g}"
    )
    cmd += f" --packing {cfg.packing} --mask {cfg.mask}" + ("" if cfg.crop else " --no-crop")
    return cmd + ("" if split == "all" else f" --split {split}")


def _stamp(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _empty_manifest(cfg: DataConfig) -> dict[str, Any]:
    from synthct.config import config_hash, to_dict

    return {
        "format": 1,
        "pipeline_version": PIPELINE_VERSION,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "size": cfg.size,
        "packing": cfg.packing,
        "field_of_view_mm": list(field_of_view_mm(cfg)),
        "dtype": "float16",
        "cases": {},
        "failed": {},
        "mean_spacing": None,
    }


def read_manifest(folder) -> dict[str, Any]:
    from synthct.workspace import read_json

    return read_json(Path(folder) / MANIFEST)


def _write_manifest(folder, manifest: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    from synthct.workspace import atomic_write_json

    cases = manifest["cases"].values()
    spacings = np.array([c["spacing"] for c in cases]) if cases else None
    manifest["mean_spacing"] = None if spacings is None else spacings.mean(axis=0).round(5).tolist()
    manifest["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(Path(folder) / MANIFEST, manifest)


def _is_done(entry: dict | None, folder, record) -> bool:
    if not entry or entry.get("pipeline_version") != PIPELINE_VERSION:
        return False
    if not (Path(folder) / entry["file"]).is_file():
        return False
    try:
        return entry["source"] == {"image": _stamp(record.image), "mask": _stamp(record.mask)}
    except OSError:
        return False


def process_case(record, cfg: DataConfig, folder) -> dict[str, Any]:
    """Read one case, preprocess it, write <case_id>.npy (float16, atomic); return its entry."""
    import io as _io
    import time

    from synthct.io import load_volume
    from synthct.workspace import atomic_write_bytes

    t0 = time.perf_counter()
    source = {"image": _stamp(record.image), "mask": _stamp(record.mask)}
    image = load_volume(record.image)
    mask = load_volume(record.mask, dtype=np.uint8)
    pair = preprocess_pair(image, mask, cfg, name=f"case {record.case_id} ({record.mask})")
    buf = _io.BytesIO()
    np.save(buf, pair.packed.astype(np.float16), allow_pickle=False)
    file = f"{record.case_id}.npy"
    atomic_write_bytes(Path(folder) / file, buf.getvalue())
    return {
        "file": file,
        "centre": record.centre,
        "source_shape": list(image.shape),
        "source_spacing": [round(v, 5) for v in image.spacing],
        "crop": pair.crop.to_dict(image.affine),
        "spacing": [round(v, 5) for v in pair.spacing],
        "affine": np.round(pair.affine, 5).tolist(),
        "tumour_kept": round(pair.tumour_kept, 5),
        "source": source,
        "pipeline_version": PIPELINE_VERSION,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_one(record, cfg: DataConfig, folder) -> tuple[str, dict | None, str | None]:
    try:
        return record.case_id, process_case(record, cfg, folder), None
    except Exception as e:  # one bad case must not lose the others; reported by id
        return record.case_id, None, f"{type(e).__name__}: {e}"


def preprocess_workspace(
    ws, cfg: DataConfig, split: str = "all", workers: int = 2, force: bool = False, progress=True
) -> dict[str, Any]:
    """Pack the cases of `split` ("all" = every usable case) into `packed_dir(ws, cfg)`.

    Cases already packed with this config, pipeline version and unchanged source files are
    skipped (unless `force`). Runs `workers` processes (torch on one thread each). Failures are
    recorded per case in the manifest and returned; the other cases are kept. Returns
    {"folder", "done": [...], "skipped": [...], "failed": {case_id: message}, "mean_spacing"}.
    """
    import time
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    from synthct.datasets import cases_in_split, load_splits

    records = cases_in_split(ws, split)
    splits = load_splits(ws)
    folder = packed_dir(ws, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        manifest = read_manifest(folder)
    except WorkspaceError:
        manifest = _empty_manifest(cfg)
    todo, skipped = [], []
    for r in records:
        entry = manifest["cases"].get(r.case_id)
        if not force and _is_done(entry, folder, r):
            entry["split"] = splits.get(r.case_id, "unassigned")
            skipped.append(r.case_id)
        else:
            todo.append(r)
    done, failed = [], {}
    last_write = 0.0

    def record(case_id, entry, error) -> None:
        nonlocal last_write
        if error is None:
            entry["split"] = splits.get(case_id, "unassigned")
            manifest["cases"][case_id] = entry
            manifest["failed"].pop(case_id, None)
            done.append(case_id)
        else:
            manifest["failed"][case_id] = error
            failed[case_id] = error
        if time.monotonic() - last_write > MANIFEST_EVERY_S:
            _write_manifest(folder, manifest)
            last_write = time.monotonic()

    bar = tqdm(total=len(todo), desc=f"preprocess s{cfg.size}", unit="case", disable=not progress)
    try:
        if workers <= 1 or len(todo) <= 1:
            for r in todo:
                record(*_run_one(r, cfg, folder))
                bar.update()
        else:
            ctx = _pool_context()
            with ProcessPoolExecutor(min(workers, len(todo)), ctx, _init_worker) as pool:
                futures = [pool.submit(_run_one, r, cfg, folder) for r in todo]
                for fut in as_completed(futures):
                    record(*fut.result())
                    bar.update()
    finally:
        bar.close()
        _write_manifest(folder, manifest)
    return {
        "folder": str(folder),
        "done": sorted(done),
        "skipped": sorted(skipped),
        "failed": dict(sorted(failed.items())),
        "mean_spacing": manifest["mean_spacing"],
    }


def _pool_context():
    """fork where available (workers start in milliseconds; `import monai` alone takes seconds)."""
    import multiprocessing as mp

    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def load_packed(ws, cfg: DataConfig, split: str = "train") -> PackedSet:
    """The packed pairs of `split` (by the workspace's current split registry) as float32.

    Raises WorkspaceError (with the `synthct preprocess` command to run) when the folder is
    missing or a case of the split is not packed. Cases whose preprocessing failed are left
    out with a warning.
    """
    import warnings

    from synthct.datasets import cases_in_split

    folder = packed_dir(ws, cfg)
    if not (folder / MANIFEST).is_file():
        raise WorkspaceError(
            f"no packed arrays for this data config in {folder}: run `{preprocess_command(cfg)}`"
        )
    manifest = read_manifest(folder)
    records = cases_in_split(ws, split)
    failed = [r.case_id for r in records if r.case_id in manifest.get("failed", {})]
    if failed:
        warnings.warn(
            f"{len(failed)} {split} case(s) failed preprocessing and are left out: "
            f"{', '.join(failed[:5])}{' …' if len(failed) > 5 else ''} (see {folder / MANIFEST})",
            stacklevel=2,
        )
    records = [r for r in records if r.case_id not in failed]
    missing = [r.case_id for r in records if r.case_id not in manifest["cases"]]
    if missing:
        raise WorkspaceError(
            f"{len(missing)} of {len(records)} {split} cases are not packed in {folder} "
            f"(e.g. {', '.join(missing[:3])}): run `{preprocess_command(cfg, split)}`"
        )
    if not records:
        raise WorkspaceError(f"split {split!r} has no usable packed cases in {folder}")
    s = cfg.size
    arrays = np.empty((len(records), s, s, s), dtype=np.float32)
    for i, r in enumerate(records):
        path = folder / manifest["cases"][r.case_id]["file"]
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise WorkspaceError(
                f"{path}: unreadable packed array ({e}); run `{preprocess_command(cfg)} --force`"
            ) from None
        if arr.shape != (s, s, s):
            raise WorkspaceError(f"{path}: shape {arr.shape}, expected {(s, s, s)}")
        arrays[i] = arr
    entries = [manifest["cases"][r.case_id] for r in records]
    spacing = np.mean([e["spacing"] for e in entries], axis=0)
    return PackedSet(
        arrays=arrays,
        case_ids=[r.case_id for r in records],
        centres=[e.get("centre", r.centre) for e, r in zip(entries, records, strict=True)],
        spacing=tuple(float(v) for v in spacing),  # type: ignore[arg-type]
        manifest=manifest,
    )


def list_packed(ws) -> list[tuple[Path, DataConfig]]:
    """Every packed folder of the workspace with its preprocessing config, smallest S first."""
    from synthct.config import from_dict

    found = [
        (folder, from_dict(DataConfig, read_manifest(folder)["config"], str(folder / MANIFEST)))
        for folder in ws.list_packed()
    ]
    return sorted(found, key=lambda fc: fc[1].size)


def load_packed_case(ws, cfg: DataConfig, case_id: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One packed case unpacked: (image_hu (S, S, S/2), mask, spacing in mm of that grid)."""
    folder = packed_dir(ws, cfg)
    entry = read_manifest(folder)["cases"].get(case_id)
    if entry is None:
        raise WorkspaceError(f"case {case_id!r} is not packed in {folder}")
    path = folder / entry["file"]
    try:
        arr = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as e:
        raise WorkspaceError(f"{path}: unreadable packed array ({e})") from None
    image_hu, mask = unpack(arr, cfg)
    return image_hu, mask, tuple(float(v) for v in entry["spacing"])
