"""Procedural head-and-neck CT + tumour-mask phantoms: the embedded demo data.

`make_case` draws one patient in memory; `write_phantom_set` writes a HECKTOR-style folder
(`imagesTr/<Centre>-<NNN>__CT.nii.gz`, `labelsTr/<Centre>-<NNN>.nii.gz` or `<Centre>_<NNN>`).

Hand-written because no library draws head-and-neck CT (MONAI's `create_test_image_3d` makes
random spheres). Anatomy is a set of analytic shapes in patient millimetres -- x toward the
patient's left, y anterior, z superior with z = 0 at the vertex -- evaluated on coordinate grids
inside each shape's bounding box, in chunks of slices so a whole-body scan never needs more
than one extra chunk of memory. Tissues carry typical HU (air -1000, fat -100, muscle +45,
cancellous bone ~+280, cortical ~+1100, teeth ~+2600, lung -850). Label 1 is the primary
tumour (GTVp, an enhancing lobulated blob beside the airway), label 2 lymph nodes (GTVn,
lateral neck, 0-3 per case). Each centre keeps the character measured in the thesis (Tables
3.1-3.6): in-plane spacing, slice thickness and count, padding value outside the scan circle,
HU maximum, metal (dental) artefacts, whole-body versus head-and-neck field of view, and the
label file spelling. Same seed -> byte-identical arrays.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from synthct.display import WINDOWS, extract_slice, render_slice
from synthct.io import Volume, save_volume, spacing_affine
from synthct.workspace import atomic_dir

HU_AIR = -1000.0
HU_FAT = -100.0
HU_MUSCLE = 45.0
HU_BRAIN = 35.0
HU_CSF = 15.0
HU_CANCELLOUS = 280.0
HU_CORTICAL = 1100.0
HU_TOOTH = 2600.0
HU_LUNG = -850.0
LABEL_GTVP = 1
LABEL_GTVN = 2
MATRIX = 512  # full-size in-plane matrix
FOV_FRACTION = 0.97  # reconstruction circle radius as a fraction of half the field of view


@dataclass(frozen=True)
class CentreProfile:
    """What a centre's scans look like (HECKTOR 2022 training set, thesis Tables 3.1-3.6)."""

    name: str
    n_hecktor: int
    spacing_xy: tuple[float, float]  # mm, uniform range
    slice_mm: tuple[float, ...]  # slice thickness choices
    n_slices: tuple[int, int]  # full-size slice count range
    padding: tuple[tuple[float, float], ...]  # (value, probability) outside the scan circle
    hu_max: float  # scanner ceiling
    metal_prob: float  # dental metal with values far above the ceiling
    label_sep: str = "-"
    oversize_prob: float = 0.0  # label one voxel larger than the CT along y
    noise_hu: float = 14.0


# fmt: off
CENTRES: dict[str, CentreProfile] = {p.name: p for p in (
    CentreProfile("CHUM", 56, (0.97, 1.0), (1.5, 2.0, 2.5), (91, 348),
                  ((-1000.0, 0.85), (-3024.0, 0.15)), 3071.0, 0.0, oversize_prob=0.1),
    CentreProfile("CHUP", 72, (0.98, 0.98), (1.51,), (485, 736), ((-1024.0, 1.0),), 3071.0, 0.0,
                  noise_hu=18.0),
    CentreProfile("CHUS", 72, (1.1, 1.25), (2.5, 3.0, 3.27), (109, 218), ((-1024.0, 1.0),),
                  2976.0, 0.0),
    CentreProfile("CHUV", 53, (1.17, 1.37), (3.0,), (67, 392), ((-3024.0, 1.0),), 3071.0, 0.0,
                  noise_hu=16.0),
    CentreProfile("HGJ", 55, (0.98, 0.98), (3.27,), (91, 135), ((-3024.0, 1.0),), 3174.0, 0.2,
                  oversize_prob=0.15),
    CentreProfile("HMR", 18, (0.98, 1.17), (3.27,), (83, 267), ((-3024.0, 1.0),), 3071.0, 0.0,
                  label_sep="_"),
    CentreProfile("MDA", 198, (0.98, 1.0), (2.5, 3.27, 3.75), (87, 407),
                  ((-2048.0, 0.85), (-1000.0, 0.1), (-5048.0, 0.05)), 3071.0, 0.05),
)}
# fmt: on


@dataclass(frozen=True)
class CaseSpec:
    """One planned phantom case. `None` fields are drawn from the case's own random stream."""

    case_id: str
    centre: str
    seed: int = 0
    oversize_label: bool | None = None
    metal: bool | None = None
    n_nodes: int | None = None


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """A generated case. Unpacks as `(image_hu, label)`; both Volumes are (X, Y, Z).

    `tumour_centre_mm` / `tumour_voxel`: GTVp centre in world mm (RAS+) / image voxel indices.
    `airway`: bool (X, Y, Z) mask of the air lumen (pharynx, larynx, trachea) on the image grid.
    """

    case_id: str
    centre: str
    image: Volume
    label: Volume
    tumour_centre_mm: tuple[float, float, float]
    tumour_voxel: tuple[int, int, int]
    airway: np.ndarray = field(repr=False)
    info: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[Volume]:
        return iter((self.image, self.label))


def case_rng(case_id: str, seed: int) -> np.random.Generator:
    """The random stream of one case: depends on the set seed and the id, not on list position."""
    return np.random.default_rng([int(seed), zlib.crc32(case_id.encode())])


def centre_of(case_id: str) -> str:
    """Centre = the id's prefix before the first '-' or '_'."""
    for i, c in enumerate(case_id):
        if c in "-_":
            return case_id[:i]
    return case_id


# -- geometry helpers ------------------------------------------------------------------------------
@dataclass
class _Grid:
    x: np.ndarray  # (X,) patient mm of voxel centres
    y: np.ndarray  # (Y,)
    z: np.ndarray  # (Zc,) anatomical mm (vertex = 0) of this chunk's slices

    def box(self, lo, hi):
        """Index slices of the voxels inside [lo, hi] mm, or None when empty."""
        out = []
        for axis, a, b in zip((self.x, self.y, self.z), lo, hi, strict=True):
            i0, i1 = np.searchsorted(axis, a), np.searchsorted(axis, b, side="right")
            if i1 <= i0:
                return None
            out.append(slice(int(i0), int(i1)))
        return tuple(out)

    def coords(self, box):
        return (
            self.x[box[0]][:, None, None],
            self.y[box[1]][None, :, None],
            self.z[box[2]][None, None, :],
        )


def _ellipsoid(g: _Grid, c, r, box=None):
    """(box, q) with q = normalised squared radius inside the ellipsoid's bounding box (or the
    given `box`, so that shells of one shape share a grid)."""
    box = box or g.box(np.subtract(c, r), np.add(c, r))
    if box is None:
        return None, None
    x, y, z = g.coords(box)
    q = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2
    return box, q


def _tube(g: _Grid, zc, cx, cy, ax, ay, power=2.0, shrink=0.0, box=None):
    """(box, q) for an elliptic (super-elliptic) tube whose centre and radii vary along z.

    `zc` ascending control heights (mm); `cx, cy, ax, ay` values at them (linear in between).
    The tube exists only between zc[0] and zc[-1]. `shrink` thins the radii by that many mm;
    `box` evaluates on a given box (one that came from the same tube) instead of its own.
    """
    zsel = g.box((-1e9, -1e9, zc[0]), (1e9, 1e9, zc[-1]))
    if zsel is None:
        return None, None
    zs = g.z[zsel[2]]
    pcx, pcy = np.interp(zs, zc, cx), np.interp(zs, zc, cy)
    pax = np.maximum(np.interp(zs, zc, ax) - shrink, 0.5)
    pay = np.maximum(np.interp(zs, zc, ay) - shrink, 0.5)
    lo = (float((pcx - pax).min()), float((pcy - pay).min()), zc[0])
    hi = (float((pcx + pax).max()), float((pcy + pay).max()), zc[-1])
    box = box or g.box(lo, hi)
    if box is None:
        return None, None
    x, y, _ = g.coords(box)
    k = slice(box[2].start - zsel[2].start, box[2].stop - zsel[2].start)
    q = np.abs((x - pcx[k]) / pax[k]) ** power + np.abs((y - pcy[k]) / pay[k]) ** power
    return box, q


def _fill(hu, shape, value) -> None:
    """Paint `value` inside a shape given as `(box, q)` (q < 1 inside); no-op when empty."""
    box, q = shape
    if box is not None:
        hu[box][q < 1] = value


def _paint(hu, box, mask, value, label=None, label_value=0):
    if box is None:
        return
    view = hu[box]
    view[mask] = value
    if label is not None:
        label[box][mask] = label_value


# -- anatomy --------------------------------------------------------------------------------------
# Body outline below the cranium: z (ascending), centre y, half-width, half-depth, shape power.
_BODY_Z = (-1300, -960, -850, -700, -560, -400, -345, -318, -290, -250, -215, -185, -150, -120)
_BODY_CY = (0, 0, 0, 5, 5, -5, -10, -12, -12, -10, -2, 8, 8, 6)
_BODY_AX = (190, 190, 175, 160, 168, 175, 185, 120, 62, 58, 62, 68, 70, 70)
_BODY_AY = (95, 95, 105, 118, 115, 110, 105, 80, 60, 56, 62, 86, 90, 91)
_BODY_P = (2.0, 2.0, 2.4, 2.4, 2.6, 2.6, 2.6, 2.4, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0)
_HEAD_C, _HEAD_R = (0.0, -2.0, -90.0), (70.0, 92.0, 90.0)
# Airway lumen: nasopharynx -> oropharynx -> larynx -> trachea -> carina.
_AIR_Z = (-430, -330, -265, -240, -215, -170, -140)
_AIR_CY = (0, 16, 22, 18, 10, 8, 18)
_AIR_AX = (9, 9, 9, 11, 14, 14, 11)
_AIR_AY = (9, 9, 8, 9, 9, 8, 7)
# Spine: z, centre y of the vertebral body, body radii, segment period (body + disc).
_SP_Z = (-960, -800, -560, -400, -300, -215, -160)
_SP_CY = (-40, -35, -55, -62, -38, -26, -22)
_SP_AX = (24, 23, 18, 15, 11, 10, 9)
_SP_AY = (18, 17, 14, 13, 8.5, 8, 8)
_SP_PERIOD = (34, 32, 26, 23, 17, 16, 15)


def _draw_params(rng: np.random.Generator, profile: CentreProfile, spec: CaseSpec) -> dict:
    p: dict = {}
    p["spacing_xy"] = float(rng.uniform(*profile.spacing_xy))
    p["slice_mm"] = float(rng.choice(profile.slice_mm))
    p["n_slices"] = int(rng.integers(profile.n_slices[0], profile.n_slices[1] + 1))
    vals, probs = zip(*profile.padding, strict=True)
    p["padding"] = float(rng.choice(vals, p=np.asarray(probs) / sum(probs)))
    extent = p["n_slices"] * p["slice_mm"]
    # Head-and-neck scans start at the vertex or lower (orbits); whole-body ones above the head.
    p["z_top"] = float(rng.uniform(5, 25) if extent > 600 else rng.uniform(-60, 20))
    p["shift"] = (float(rng.uniform(-12, 12)), float(rng.uniform(-10, 10)))
    p["fat_mm"] = float(rng.uniform(5, 16))
    p["size"] = float(rng.uniform(0.92, 1.08))
    p["contrast"] = bool(rng.random() < 0.3)
    p["metal"] = bool(rng.random() < profile.metal_prob) if spec.metal is None else spec.metal
    p["oversize_label"] = (
        bool(rng.random() < profile.oversize_prob)
        if spec.oversize_label is None
        else spec.oversize_label
    )
    # Primary tumour: site height, side, size; bulges into the airway from one wall.
    p["tumour_z"] = float(rng.uniform(-250, -175))
    p["tumour_angle"] = float(rng.uniform(-0.6, 0.6) + (0 if rng.random() < 0.5 else math.pi))
    p["tumour_r"] = float(rng.uniform(10, 22))
    p["tumour_hu"] = float(rng.uniform(60, 100))
    p["tumour_lobes"] = rng.normal(size=(int(rng.integers(3, 7)), 4)).tolist()
    n_nodes = int(rng.choice([0, 0, 1, 1, 2, 3])) if spec.n_nodes is None else spec.n_nodes
    side = 1.0 if math.cos(p["tumour_angle"]) > 0 else -1.0
    p["nodes"] = [
        (
            side * (1 if rng.random() < 0.8 else -1) * float(rng.uniform(36, 48)),
            float(rng.uniform(-8, 18)),
            float(rng.uniform(-285, -205)),
            float(rng.uniform(5, 12)),
            float(rng.uniform(30, 50)),
        )
        for _ in range(n_nodes)
    ]
    p["teeth_missing"] = rng.random(16) < 0.15
    p["fillings"] = rng.integers(0, 16, size=int(rng.integers(1, 4))).tolist()
    return p


def make_case(
    case_id: str,
    centre: str | None = None,
    seed: int | np.random.Generator = 0,
    scale: float = 0.25,
    *,
    spec: CaseSpec | None = None,
) -> PhantomCase:
    """Draw one phantom case in memory.

    Args:
        case_id: e.g. "CHUM-001"; `centre` defaults to its prefix (must be one of `CENTRES`).
        seed: set seed (an int; combined with the id) or a ready Generator.
        scale: 1.0 = full size (512 x 512 x Z); 0.25 -> 128 x 128 x Z/4 (voxels grow, FOV kept).
        spec: optional forced quirks (oversize label, metal, node count).
    Returns:
        `PhantomCase` (unpacks as `(image_hu, label)`): image float32 HU with integer values,
        label uint8 {0, 1, 2}; the label grid is one voxel larger along y when
        `info["oversize_label"]`.
    """
    centre = centre or centre_of(case_id)
    if centre not in CENTRES:
        raise ValueError(
            f"unknown centre {centre!r} for case {case_id}: expected {sorted(CENTRES)}"
        )
    if not 0.02 <= scale <= 1.0:
        raise ValueError(f"scale must be in [0.02, 1], got {scale}")
    profile = CENTRES[centre]
    spec = spec or CaseSpec(case_id, centre)
    rng = seed if isinstance(seed, np.random.Generator) else case_rng(case_id, int(seed))
    p = _draw_params(rng, profile, spec)

    n_xy = max(16, round(MATRIX * scale))
    dxy = p["spacing_xy"] * MATRIX / n_xy
    extent = p["n_slices"] * p["slice_mm"]
    n_z = max(8, round(p["n_slices"] * scale))
    dz = extent / n_z
    half = dxy * n_xy / 2
    s = p["size"]
    x = ((np.arange(n_xy) + 0.5) * dxy - half - p["shift"][0]) / s
    y = ((np.arange(n_xy) + 0.5) * dxy - half - p["shift"][1] - 0.18 * half) / s
    z_anat = p["z_top"] - (np.arange(n_z)[::-1] + 0.5) * dz  # ascending (inferior -> superior)
    # Snap the tumour centre onto a slice so even coarse scales show it.
    tz = int(np.argmin(np.abs(z_anat / s - p["tumour_z"])))
    p["tumour_z"] = float(z_anat[tz] / s)

    hu = np.empty((n_xy, n_xy, n_z), np.float32)
    label = np.zeros((n_xy, n_xy, n_z), np.uint8)
    airway = np.zeros((n_xy, n_xy, n_z), bool)
    chunk = max(1, int(4_000_000 // (n_xy * n_xy)))
    tumour_c = _tumour_centre(p)
    for z0 in range(0, n_z, chunk):
        sl = slice(z0, min(n_z, z0 + chunk))
        g = _Grid(x, y, z_anat[sl] / s)
        _draw_anatomy(g, hu[:, :, sl], label[:, :, sl], airway[:, :, sl], p, tumour_c)
    _add_noise_and_scanner(hu, rng, profile, p, dxy, n_xy, z_anat)

    origin = (-half, -half + 40.0, -extent / 2)
    affine = spacing_affine((dxy, dxy, dz), origin=origin)
    lab = label
    if p["oversize_label"]:
        lab = np.concatenate([label, np.zeros((n_xy, 1, n_z), np.uint8)], axis=1)
    tx = int(np.clip(round((tumour_c[0] * s + p["shift"][0] + half) / dxy - 0.5), 0, n_xy - 1))
    ty = int(
        np.clip(
            round((tumour_c[1] * s + p["shift"][1] + 0.18 * half + half) / dxy - 0.5), 0, n_xy - 1
        )
    )
    world = affine @ np.array([tx, ty, tz, 1.0])
    info = {k: p[k] for k in ("padding", "metal", "oversize_label", "contrast", "z_top")}
    info.update(n_nodes=len(p["nodes"]), whole_body=bool(extent > 600), extent_mm=extent)
    return PhantomCase(
        case_id,
        centre,
        Volume(hu, affine),
        Volume(lab, affine),
        tuple(float(v) for v in world[:3]),
        (tx, ty, tz),
        airway,
        info,
    )


def _tumour_centre(p: dict) -> tuple[float, float, float]:
    z = p["tumour_z"]
    cy = float(np.interp(z, _AIR_Z, _AIR_CY))
    ax, ay = float(np.interp(z, _AIR_Z, _AIR_AX)), float(np.interp(z, _AIR_Z, _AIR_AY))
    a = p["tumour_angle"]
    d = 0.55 * p["tumour_r"]
    return (math.cos(a) * (ax + d), cy + math.sin(a) * (ay + d), z)


def _draw_anatomy(g, hu, label, airway, p, tumour_c) -> None:
    hu.fill(HU_AIR)
    # Couch: a curved carbon shell under the patient, foam above it.
    ty = -128.0
    box = g.box((-230, ty - 16, -1e9), (230, ty + 4, 1e9))
    if box is not None:
        x, y, _ = g.coords(box)
        curve = ty + 0.0006 * x**2
        _paint(hu, box, np.broadcast_to((y > curve - 16) & (y < curve - 9), hu[box].shape), 150)
        _paint(hu, box, np.broadcast_to((y >= curve - 10) & (y < curve), hu[box].shape), -800)

    # Body: skin/fat, then muscle inside; head is an ellipsoid above the skull base.
    fat = p["fat_mm"]
    box, q = _tube(g, _BODY_Z, [0] * len(_BODY_Z), _BODY_CY, _BODY_AX, _BODY_AY, 2.0)
    if box is not None:
        k = _tube_power_mask(g, box, fat)
        _paint(hu, box, k[0], HU_FAT)
        _paint(hu, box, k[1], HU_MUSCLE)
    box, q = _ellipsoid(g, _HEAD_C, _HEAD_R)
    if box is not None:
        _, yy, zv = g.coords(box)
        above = zv > _BODY_Z[-1]  # below that the body outline has already drawn the face
        _paint(hu, box, (q < 1) & above, HU_FAT)
        _, q2 = _ellipsoid(g, _HEAD_C, np.subtract(_HEAD_R, 4), box)
        _paint(hu, box, (q2 < 1) & above, HU_MUSCLE)
        _, q3 = _ellipsoid(g, _HEAD_C, np.subtract(_HEAD_R, 5), box)
        _, q4 = _ellipsoid(g, _HEAD_C, np.subtract(_HEAD_R, 11), box)
        floor = np.interp(yy, (-90, -20, 30, 95), (-150, -132, -118, -92))
        skull = (q3 < 1) & (zv > floor - 7)
        _paint(hu, box, skull, HU_CORTICAL)
        _paint(hu, box, skull & (q4 > 0.9) & (q4 < 0.97), 600.0)  # diploe
        _paint(hu, box, (q4 < 1) & (zv > floor), HU_BRAIN)
        _paint(hu, box, (q4 < 0.06) & (zv > floor), HU_CSF)  # ventricles
    _draw_face(g, hu, p)
    _draw_neck(g, hu, p)
    _draw_trunk(g, hu, p)
    _draw_spine(g, hu)
    # Airway lumen last among normal tissue, so it cuts through everything it passes.
    box, q = _tube(g, _AIR_Z, [0] * len(_AIR_Z), _AIR_CY, _AIR_AX, _AIR_AY)
    if box is not None:
        _paint(hu, box, q < 1, HU_AIR)
        airway[box] |= q < 1
    for bx in (-1, 1):  # main bronchi
        zc = (-470, -430)
        box, q = _tube(g, zc, (bx * 38, bx * 4), (-12, -2), (7, 8), (7, 8))
        if box is not None:
            _paint(hu, box, q < 1, HU_AIR)
    for nx, ny, nz, nr, nhu in p["nodes"]:
        box, q = _ellipsoid(g, (nx, ny, nz), (nr, nr * 0.85, nr * 1.3))
        if box is not None:
            m = q < 1
            _paint(hu, box, m, nhu, label, LABEL_GTVN)
            airway[box] &= ~m
    _draw_tumour(g, hu, label, airway, p, tumour_c)


def _tube_power_mask(g, box, fat):
    """Masks (outline, outline shrunk by `fat`) for the body tube with its varying shape power."""
    zs = g.z[box[2]]
    x, y, _ = g.coords(box)
    cy = np.interp(zs, _BODY_Z, _BODY_CY)
    ax, ay = np.interp(zs, _BODY_Z, _BODY_AX), np.interp(zs, _BODY_Z, _BODY_AY)
    pw = np.interp(zs, _BODY_Z, _BODY_P)
    # Thighs: below the pelvis the outline splits into two legs.
    outer = np.abs(x / ax) ** pw + np.abs((y - cy) / ay) ** pw < 1
    inner = (
        np.abs(x / np.maximum(ax - fat, 1)) ** pw + np.abs((y - cy) / np.maximum(ay - fat, 1)) ** pw
        < 1
    )
    legs = (zs < -960)[None, None, :]
    if legs.any():
        leg = ((np.abs(x) - 92) / 82) ** 2 + ((y - cy) / 88) ** 2
        outer = np.where(legs, leg < 1, outer)
        inner = np.where(
            legs, ((np.abs(x) - 92) / (82 - fat)) ** 2 + ((y - cy) / 76) ** 2 < 1, inner
        )
    return outer, inner


def _draw_face(g, hu, p) -> None:
    for side in (-1, 1):
        # Orbits: fat cone with the globe inside; maxillary sinus (air in a bony wall).
        _fill(hu, _ellipsoid(g, (side * 32, 66, -100), (17, 22, 16)), -90.0)
        _fill(hu, _ellipsoid(g, (side * 32, 72, -100), (12, 12, 12)), 12.0)
        box, q = _ellipsoid(g, (side * 29, 42, -140), (17, 19, 19))
        if box is not None:
            _paint(hu, box, q < 1, 900.0)
            _paint(hu, box, q < 0.8, HU_AIR)
        # Mandibular ramus: a flat vertical plate.
        box, q = _tube(g, (-200, -150), (side * 49, side * 51), (-2, -8), (4, 4), (13, 11))
        if box is not None:
            _paint(hu, box, q < 1, HU_CORTICAL)
            _paint(hu, box, q < 0.35, HU_CANCELLOUS)
    _fill(hu, _tube(g, (-165, -110), (0, 0), (52, 60), (9, 7), (26, 22)), HU_AIR)  # nasal cavity
    _fill(hu, _tube(g, (-165, -110), (0, 0), (55, 60), (1.2, 1.0), (24, 20)), 300.0)  # septum
    _fill(hu, _ellipsoid(g, (0, 101, -140), (13, 14, 24)), 20.0)  # nose
    box, q = _tube(g, (-172, -166), (0, 0), (35, 35), (33, 33), (42, 42))  # hard palate
    if box is not None:
        _paint(hu, box, (q < 1) & _ybox(g, box, 0), 700.0)
    # Dental arches (upper, lower) and the mandible body as U-shaped bands.
    for z0, z1, r, t, hu_v in (
        (-183, -172, 37, 5.5, HU_TOOTH),
        (-197, -186, 35, 5.5, HU_TOOTH),
        (-218, -190, 36, 8.0, HU_CORTICAL),
    ):
        _draw_arch(g, hu, z0, z1, r, t, hu_v, p["teeth_missing"] if hu_v == HU_TOOTH else None)
    _draw_arch(g, hu, -214, -196, 36, 3.0, HU_CANCELLOUS, None)


def _ybox(g, box, y0):
    return g.coords(box)[1] > y0


def _draw_arch(g, hu, z0, z1, r, t, value, missing) -> None:
    """A U-shaped band (parabolic arch opening backwards) between heights z0 and z1."""
    cy = 22.0
    box = g.box((-r - t, cy - 30, z0), (r + t, cy + r * 1.25 + t, z1))
    if box is None:
        return
    x, y, _ = g.coords(box)
    rr = np.sqrt((x / r) ** 2 + ((y - cy) / (r * 1.25)) ** 2)
    band = (np.abs(rr - 1) * r < t / 2) & (y > cy - 25)
    if missing is not None:
        ang = np.arctan2(y - cy, x)  # 0..pi across the arch
        tooth = np.clip(((ang / math.pi) * 16).astype(int), 0, 15)
        gap = (((ang / math.pi) * 16) % 1 < 0.12) | missing[tooth]
        band &= ~gap
    _paint(hu, box, np.broadcast_to(band, hu[box].shape), value)


def _draw_neck(g, hu, p) -> None:
    for side in (-1, 1):
        # Fat planes (parapharyngeal, posterior triangle) and vessels.
        _fill(hu, _tube(g, (-300, -180), (side * 26, side * 24), (0, 4), (6, 5), (9, 7)), HU_FAT)
        _fill(
            hu, _tube(g, (-310, -230), (side * 46, side * 44), (-22, -16), (9, 7), (10, 8)), -80.0
        )
        vessel = 220.0 if p["contrast"] else 42.0
        _fill(
            hu,
            _tube(g, (-330, -175), (side * 22, side * 28), (14, 0), (4.5, 4.5), (4.5, 4.5)),
            vessel,
        )
        _fill(
            hu,
            _tube(g, (-330, -175), (side * 31, side * 36), (10, -4), (7, 6), (6, 5)),
            vessel - 10,
        )
        # Sternocleidomastoid: muscle wrapped in a thin fat sheath.
        zc, cx, cy = (-330, -250, -190), (side * 20, side * 44, side * 50), (40, 18, -10)
        box, q = _tube(g, zc, cx, cy, (10, 10, 9), (7, 8, 9))
        if box is not None:
            _paint(hu, box, (q < 1.35) & (q > 1), -70.0)
        _fill(hu, _ellipsoid(g, (side * 16, 24, -285), (9, 9, 20)), 110.0)  # thyroid lobe
    # Larynx cartilage ring and hyoid.
    box, q = _tube(g, (-262, -228), (0, 0), (18, 18), (15, 15), (13, 13))
    if box is not None:
        _paint(hu, box, (q < 1) & (q > 0.7) & _ybox(g, box, 12), 250.0)
    box, q = _tube(g, (-226, -220), (0, 0), (28, 28), (20, 20), (14, 14))
    if box is not None:
        _paint(hu, box, (q < 1) & (q > 0.6) & _ybox(g, box, 22), 650.0)


def _draw_trunk(g, hu, p) -> None:
    if g.z[0] > -290:
        return
    for side in (-1, 1):
        # Lungs (right one shorter above the liver), ribs around them, shoulder girdle.
        bottom = -560 if side > 0 else -545
        zc = (bottom, bottom + 30, -470, -400, -355, -318)
        cx = [side * v for v in (70, 82, 85, 78, 66, 40)]
        cy = (-10, -8, -5, -5, -8, -15)
        _fill(hu, _tube(g, zc, cx, cy, (35, 70, 80, 72, 52, 16), (45, 80, 86, 78, 58, 18)), HU_LUNG)
        box, q = _ellipsoid(g, (side * 160, -8, -338), (25, 25, 25))  # humeral head
        if box is not None:
            _paint(hu, box, q < 1, HU_CORTICAL)
            _paint(hu, box, q < 0.8, HU_CANCELLOUS)
        _fill(
            hu, _tube(g, (-335, -310), (side * 140, side * 12), (10, 30), (8, 6), (7, 6)), 700.0
        )  # clavicle
        _fill(
            hu,
            _tube(g, (-440, -325), (side * 108, side * 112), (-75, -68), (52, 40), (6, 6)),
            650.0,
        )  # scapula
        for c, r, v in (
            ((side * 62, -58, -665), (30, 26, 52), 32.0),  # kidney
            ((side * 90, -10, -900), (26, 26, 26), 400.0),  # femoral head
        ):
            _fill(hu, _ellipsoid(g, c, r), v)
        _fill(
            hu,
            _tube(g, (-880, -760), (side * 85, side * 105), (-40, -55), (22, 40), (30, 12)),
            450.0,
        )  # iliac wing
    _draw_ribs(g, hu)
    for c, r, v in (
        ((20, 42, -480), (58, 45, 55), 40.0),  # heart
        ((-45, 10, -600), (95, 85, 85), 58.0),  # liver
        ((95, -30, -605), (32, 45, 48), 48.0),  # spleen
        ((55, 45, -585), (28, 22, 20), HU_AIR),  # stomach gas
        ((0, 40, -880), (40, 35, 35), 10.0),  # bladder
    ):
        _fill(hu, _ellipsoid(g, c, r), v)
    _fill(
        hu,
        _tube(g, (-800, -420), (12, 18), (-55, -40), (12, 13), (12, 13)),
        200.0 if p["contrast"] else 42.0,
    )  # aorta
    _fill(hu, _tube(g, (-560, -340), (0, 0), (88, 85), (12, 10), (14, 10)), 500.0)  # sternum
    for i in range(10):  # bowel gas
        c = (-60 + 13 * i, (i * 37) % 50 - 10, -700 - (i * 53) % 140)
        _fill(hu, _ellipsoid(g, c, (9, 8, 9)), HU_AIR)


def _draw_ribs(g, hu) -> None:
    zc = (-700, -560, -400, -330)
    box, q = _tube(g, zc, (0,) * 4, (-5,) * 4, (150, 158, 150, 112), (100, 105, 95, 80))
    if box is None:
        return
    x, y, z = g.coords(box)
    ang = np.arctan2(y + 5, np.abs(x))
    # Ribs slope downward from the spine to the front; each is a band in (angle, z).
    phase = (z + 22 * np.sin(ang)) / 24.0
    band = (phase % 1) < 0.36
    ring = (q < 1) & (q > 0.84) & band & (np.abs(x) > 22)
    _paint(hu, box, ring, 700.0)


def _draw_spine(g, hu) -> None:
    zs = g.z
    if zs[0] > _SP_Z[-1]:
        return
    fine = np.arange(_SP_Z[0], _SP_Z[-1] + 0.5, 0.5)
    cum = np.cumsum(0.5 / np.interp(fine, _SP_Z, _SP_PERIOD))
    box, q = _tube(g, _SP_Z, (0,) * 7, _SP_CY, _SP_AX, _SP_AY)
    if box is None:
        return
    zb = g.z[box[2]]
    frac = (np.interp(zb, fine, cum) % 1)[None, None, :]
    is_body = frac < 0.78
    _, qi = _tube(g, _SP_Z, (0,) * 7, _SP_CY, _SP_AX, _SP_AY, shrink=1.8, box=box)
    _paint(hu, box, (q < 1) & ~is_body, 85.0)  # discs
    _paint(hu, box, (q < 1) & is_body, HU_CORTICAL * 0.85)
    _paint(hu, box, (qi < 1) & is_body & (frac > 0.05) & (frac < 0.73), HU_CANCELLOUS)
    # Posterior elements: neural arch ring around the canal, spinous and transverse processes.
    canal_cy = [c - a - 7 for c, a in zip(_SP_CY, _SP_AY, strict=True)]
    box, q = _tube(g, _SP_Z, (0,) * 7, canal_cy, (11, 11, 10, 10, 9, 9, 9), (10,) * 7)
    if box is not None:
        frac = (np.interp(g.z[box[2]], fine, cum) % 1)[None, None, :]
        arch = (frac > 0.1) & (frac < 0.7)
        _paint(hu, box, (q < 1) & arch, 800.0)
        _, qc = _tube(
            g, _SP_Z, (0,) * 7, canal_cy, (7.5, 7.5, 7, 7, 6.5, 6.5, 6.5), (7,) * 7, box=box
        )
        _paint(hu, box, qc < 1, HU_CSF + 15)
    spin_cy = [c - 17 for c in canal_cy]
    box, q = _tube(g, _SP_Z, (0,) * 7, spin_cy, (3.5,) * 7, (14, 14, 14, 14, 11, 10, 8))
    if box is not None:
        frac = (np.interp(g.z[box[2]], fine, cum) % 1)[None, None, :]
        _paint(hu, box, (q < 1) & (frac > 0.15) & (frac < 0.6), 750.0)
    trans_cy = [c + 2 for c in canal_cy]
    box, q = _tube(g, _SP_Z, (0,) * 7, trans_cy, (40, 38, 32, 30, 24, 22, 20), (4,) * 7)
    if box is not None:
        frac = (np.interp(g.z[box[2]], fine, cum) % 1)[None, None, :]
        _paint(hu, box, (q < 1) & (q > 0.15) & (frac > 0.25) & (frac < 0.55), 700.0)


def _draw_tumour(g, hu, label, airway, p, c) -> None:
    r0 = p["tumour_r"]
    box = g.box(np.subtract(c, 2 * r0), np.add(c, 2 * r0))
    if box is None:
        return
    x, y, z = g.coords(box)
    field_ = np.zeros(hu[box].shape, np.float32)
    for lx, ly, lz, lr in p["tumour_lobes"]:
        cc = (c[0] + 0.35 * r0 * lx, c[1] + 0.35 * r0 * ly, c[2] + 0.45 * r0 * lz)
        rr = r0 * (0.55 + 0.12 * abs(lr))
        field_ += np.exp(-(((x - cc[0]) ** 2 + (y - cc[1]) ** 2 + (z - cc[2]) ** 2) / rr**2))
    core = np.exp(-(((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (0.7 * r0) ** 2))
    m = (field_ + core) > 0.9
    # Irregular, enhancing, slightly heterogeneous (necrotic centre in large ones).
    value = p["tumour_hu"] - (25.0 * (field_ + core) / (field_ + core).max() if r0 > 17 else 0.0)
    view = hu[box]
    view[m] = np.broadcast_to(value, view.shape)[m]
    label[box][m] = LABEL_GTVP
    airway[box] &= ~m


def _add_noise_and_scanner(hu, rng, profile, p, dxy, n_xy, z_anat) -> None:
    """Correlated noise (stronger through the wide shoulders), partial-volume blur, metal
    fillings with streaks, scanner ceiling, and padding outside the reconstruction circle."""
    sigma = 0.7
    width = np.interp(z_anat / p["size"], _BODY_Z, _BODY_AX)
    per_slice = profile.noise_hu * (width / 60.0) ** 0.6 * 2 * math.sqrt(math.pi) * sigma
    for k in range(hu.shape[2]):  # slice by slice keeps temporaries small
        sl = hu[:, :, k]
        sl += rng.standard_normal(sl.shape, dtype=np.float32) * np.float32(per_slice[k])
        hu[:, :, k] = ndimage.gaussian_filter(sl, sigma, mode="nearest", truncate=2.5)
    np.clip(hu, -1024.0, profile.hu_max, out=hu)
    if p["metal"]:
        _add_metal(hu, rng, p, dxy, n_xy, z_anat)
    c = (np.arange(n_xy) + 0.5 - n_xy / 2) * dxy
    outside = (c[:, None] ** 2 + c[None, :] ** 2) > (FOV_FRACTION * n_xy * dxy / 2) ** 2
    hu[outside] = p["padding"]
    np.rint(hu, out=hu)


def _add_metal(hu, rng, p, dxy, n_xy, z_anat) -> None:
    s = p["size"]
    ks = np.nonzero((z_anat / s > -200) & (z_anat / s < -172))[0]
    if ks.size == 0:
        return
    half = dxy * n_xy / 2
    c = (np.arange(n_xy) + 0.5) * dxy - half
    xx, yy = c[:, None], c[None, :]
    for i in p["fillings"]:
        ang = (i + 0.5) / 16 * math.pi
        mx = (math.cos(ang) * 36) * s + p["shift"][0]
        my = (math.sin(ang) * 45 + 22) * s + p["shift"][1] + 0.18 * half
        d = np.hypot(xx - mx, yy - my)
        theta = np.arctan2(yy - my, xx - mx)
        streak = 180.0 * np.cos(24 * theta + i) * np.exp(-d / 60.0) * (d > 4)
        core = d < max(2.5, dxy * 0.6)
        for k in ks:
            sl = hu[:, :, k]
            body = sl > -500
            sl[body] += streak[body].astype(np.float32)
            sl[core] = float(rng.uniform(20000, 31743))


# -- sets --------------------------------------------------------------------------------------
def plan_cases(n: int, seed: int = 0) -> list[CaseSpec]:
    """`n` cases spread over the centres in HECKTOR proportions (each centre at least one when
    n >= 7), ids `<Centre>-<NNN>` from 001, and quirks guaranteed somewhere in the set: one label
    one voxel larger than its CT, one metal case and one case without nodes (n >= 3)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    names = list(CENTRES)
    weights = np.array([CENTRES[c].n_hecktor for c in names], float)
    counts = np.zeros(len(names), int)
    if n >= len(names):
        counts += 1
    rest = n - counts.sum()
    share = weights / weights.sum() * rest
    counts += np.floor(share).astype(int)
    for i in np.argsort(-(share - np.floor(share)), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    specs = [
        CaseSpec(f"{c}-{j + 1:03d}", c, seed)
        for c, k in zip(names, counts, strict=True)
        for j in range(k)
    ]
    rng = np.random.default_rng([int(seed), 7])
    if n >= 3:
        a, b, d = rng.choice(n, size=3, replace=False)
        specs[a] = CaseSpec(specs[a].case_id, specs[a].centre, seed, oversize_label=True)
        specs[b] = CaseSpec(specs[b].case_id, specs[b].centre, seed, metal=True)
        specs[d] = CaseSpec(specs[d].case_id, specs[d].centre, seed, n_nodes=0)
    return specs


def case_file_names(spec: CaseSpec) -> tuple[str, str]:
    """(image, label) file names in the HECKTOR layout, with the centre's label spelling."""
    sep = CENTRES[spec.centre].label_sep
    return f"{spec.case_id}__CT.nii.gz", f"{spec.case_id.replace('-', sep, 1)}.nii.gz"


def write_phantom_set(
    out: str | Path,
    n: int = 40,
    seed: int = 0,
    scale: float = 1.0,
    progress: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write `n` phantom cases into `out/imagesTr` + `out/labelsTr` (int16 HU, uint8 labels).

    The folder is built beside `out` and renamed into place when complete, so an interrupted run
    leaves nothing behind. Returns the final image paths.
    """
    out = Path(out).resolve()
    specs = plan_cases(n, seed)
    it = specs
    if progress:
        it = tqdm(specs, desc="phantom", unit="case")
    names = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for spec in it:
            case = make_case(spec.case_id, spec.centre, spec.seed, scale, spec=spec)
            img_name, lab_name = case_file_names(spec)
            save_volume(case.image, tmp / "imagesTr" / img_name, dtype=np.int16)
            save_volume(case.label, tmp / "labelsTr" / lab_name, dtype=np.uint8)
            names.append(img_name)
    return [out / "imagesTr" / name for name in names]


def render_preview(case: PhantomCase, window: str = "soft-tissue") -> np.ndarray:
    """RGB (H, W, 3) uint8: axial slice through the tumour beside a coronal slice through it,
    both cropped to the body with the mask outlined; the coronal view is stretched to true slice
    proportions."""
    img, lab = case.image.array, case.label.array[:, : case.image.shape[1], :]
    _, ty, tz = case.tumour_voxel
    views = []
    for plane, idx in (("axial", tz), ("coronal", ty)):
        rgb = render_slice(img, lab, plane, idx, WINDOWS[window], alpha=0.25)
        body, n = ndimage.label(extract_slice(img, plane, idx) > -500)
        if n > 1:  # keep the patient, drop the couch
            body = body == 1 + int(np.argmax(ndimage.sum_labels(body > 0, body, range(1, n + 1))))
        rows, cols = np.nonzero(body.any(1))[0], np.nonzero(body.any(0))[0]
        m = 4
        rgb = rgb[max(0, rows[0] - m) : rows[-1] + m + 1, max(0, cols[0] - m) : cols[-1] + m + 1]
        if plane == "coronal":
            sx, _, sz = case.image.spacing
            r = np.arange(round(rgb.shape[0] * sz / sx)) * sx / sz
            rgb = rgb[np.clip(np.round(r), 0, rgb.shape[0] - 1).astype(int)]
        views.append(rgb)
    h = max(v.shape[0] for v in views)
    return np.concatenate([np.pad(v, ((0, h - v.shape[0]), (0, 4), (0, 0))) for v in views], 1)
