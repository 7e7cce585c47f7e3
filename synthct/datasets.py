"""Find, validate and index the real cases; the seeded split registry.

`ingest(src, ws)` discovers image/mask pairs in a HECKTOR folder (`imagesTr/<ID>__CT.nii.gz` +
`labelsTr/<ID>.nii.gz`, label spelled `<Centre>-<NNN>` or `<Centre>_<NNN>`, `__PT` ignored) or a
plain one (`images/<ID>.nii[.gz]` + `masks/<ID>.nii[.gz]`), pairs them by case id (never by
list position), validates every case, and writes WS/data/cases.json and WS/data/splits.json.
The source folder is only read.

Each case ends `accepted`, `fixed` or `rejected` with its problems named (file, value,
expectation). Rules:
- unreadable, truncated or non-NIfTI files, non-3D volumes, NaN/inf voxels, a missing partner,
  and label values outside {0, 1, 2} (or non-integer) reject the case;
- the mask grid must share the image's voxel size (relative difference <= `SPACING_RTOL`) and
  axis directions (cosines within `DIRECTION_ATOL`), and one corner of it must lie within
  `ORIGIN_TOL_MM` of the matching image corner; otherwise the affines disagree -> rejected;
- on such a shared grid, extents that differ by at most `MAX_FIX_VOXELS` per axis (HECKTOR's
  512x513 labels) are fixed by nearest-neighbour resampling of the mask onto the image grid --
  on identical spacing and directions that is an integer crop/pad, done here in numpy rather
  than with MONAI (importing MONAI alone costs seconds) -- and the fixed mask is written to
  WS/data/fixed/<ID>.nii.gz; larger differences are rejected.
Headers are checked first (no voxels read); data is read only for the NaN/label checks, in a
pool of two threads (decompression releases the GIL).

Splits: stratified by centre and seeded; each centre gives round(fraction * n_centre) cases to
test (and val, and gan), keeping at least one for train; the same seed gives the same split.
- `train` + `val`: the real cases of the segmentation folds; GAN training reads `train` by
  default (`val` stays unseen by it, e.g. for HPO ranking);
- `test`: held out from everything (segmentation test, VTT real cases);
- `gan` (only with `gan_fraction` > 0): GAN-only cases. A GAN trained on them
  (`train.split: gan`) has seen no case of any segmentation fold or of the test split, which is
  what `synthct segment --strict` demands.
"""

from __future__ import annotations

import math
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from synthct.errors import ImageReadError, WorkspaceError
from synthct.io import NIFTI_SUFFIXES, Volume, load_header, load_volume, save_volume
from synthct.runtime import case_ids_hash
from synthct.workspace import Workspace, atomic_dir, atomic_write_json, read_json

ACCEPTED, FIXED, REJECTED = "accepted", "fixed", "rejected"
USABLE = (ACCEPTED, FIXED)
SPLITS = ("train", "val", "test", "gan")
LABEL_VALUES = (0, 1, 2)
MAX_FIX_VOXELS = 5
SPACING_RTOL = 1e-3
DIRECTION_ATOL = 1e-3
ORIGIN_TOL_MM = 1.0
INDEX_VERSION = 1
_AXES = "xyz"


@dataclass(frozen=True)
class CaseRecord:
    """A usable case of the index. `image`/`mask` are absolute paths (the mask may be a fixed
    copy under WS/data/fixed/); `shape` (X, Y, Z) and `spacing` (mm) are the image's, RAS+."""

    case_id: str
    centre: str
    image: str
    mask: str
    status: str
    problems: list[str] = field(default_factory=list)
    shape: tuple[int, int, int] = (0, 0, 0)
    spacing: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CaseReport:
    """Validation outcome of one discovered case (usable or not)."""

    case_id: str
    centre: str
    status: str
    problems: list[str]
    image: str | None = None
    mask: str | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None

    @property
    def usable(self) -> bool:
        return self.status in USABLE

    def record(self) -> CaseRecord:
        return CaseRecord(
            self.case_id,
            self.centre,
            str(self.image),
            str(self.mask),
            self.status,
            list(self.problems),
            tuple(self.shape or ()),  # type: ignore[arg-type]
            tuple(self.spacing or ()),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class FoundCase:
    """A discovered case before validation: paths may be None (missing partner); `extra` lists
    duplicate files claiming the same id."""

    case_id: str
    image: Path | None
    mask: Path | None
    extra: tuple[Path, ...] = ()


@dataclass(frozen=True)
class IngestResult:
    reports: list[CaseReport]
    splits: dict[str, str]
    index_written: bool

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.reports) for s in (ACCEPTED, FIXED, REJECTED)}


# -- ids -------------------------------------------------------------------------------------
def centre_of(case_id: str) -> str:
    """Centre = the id's prefix before the first '-' or '_' ("unknown" when there is none)."""
    m = re.match(r"^([^-_]+)[-_]", case_id)
    return m.group(1) if m else "unknown"


def _key(case_id: str) -> str:
    """Pairing key: the first '_' or '-' spelled '-', so HMR_001 pairs with HMR-001."""
    return re.sub(r"^([^-_]+)[-_]", r"\1-", case_id)


def _strip_nifti(name: str) -> str | None:
    low = name.lower()
    for suf in NIFTI_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return None


# -- discovery -------------------------------------------------------------------------------
def discover_cases(src: str | Path) -> list[FoundCase]:
    """Pair images and masks found in `src` by case id; sorted by id.

    Raises WorkspaceError when `src` holds neither layout.
    """
    src = Path(src).resolve()
    if not src.is_dir():
        raise WorkspaceError(f"{src} is not a folder")
    images: dict[str, list[tuple[str, Path]]] = {}
    masks: dict[str, list[tuple[str, Path]]] = {}
    layouts = [("imagesTr", "labelsTr", "__CT"), ("images", "masks", "")]
    found_layout = False
    for img_dir, mask_dir, tag in layouts:
        if not ((src / img_dir).is_dir() or (src / mask_dir).is_dir()):
            continue
        found_layout = True
        for p in sorted((src / img_dir).glob("*")) if (src / img_dir).is_dir() else []:
            stem = _strip_nifti(p.name) if p.is_file() else None
            if stem is None or (tag and not stem.endswith(tag)):
                continue  # PET (__PT) and other files are not ours
            cid = stem[: -len(tag)] if tag else stem
            images.setdefault(_key(cid), []).append((cid, p))
        for p in sorted((src / mask_dir).glob("*")) if (src / mask_dir).is_dir() else []:
            stem = _strip_nifti(p.name) if p.is_file() else None
            if stem is not None:
                masks.setdefault(_key(stem), []).append((stem, p))
    if not found_layout:
        raise WorkspaceError(
            f"no cases found in {src}: expected imagesTr/ + labelsTr/ (HECKTOR) "
            "or images/ + masks/ folders of .nii.gz files"
        )
    out = []
    for key in sorted(set(images) | set(masks)):
        imgs, msks = images.get(key, []), masks.get(key, [])
        cid = imgs[0][0] if imgs else _key(msks[0][0])
        extra = tuple(p for _, p in imgs[1:]) + tuple(p for _, p in msks[1:])
        out.append(
            FoundCase(cid, imgs[0][1] if imgs else None, msks[0][1] if msks else None, extra)
        )
    return sorted(out, key=lambda c: c.case_id)


# -- validation ------------------------------------------------------------------------------
class _Reject(Exception):
    pass


def _grid_offset(ishape, iaff, mshape, maff, mname, iname) -> np.ndarray:
    """Integer offset (3,) of the mask grid in image voxels, or _Reject when the affines differ."""
    isp, msp = np.linalg.norm(iaff[:3, :3], axis=0), np.linalg.norm(maff[:3, :3], axis=0)
    if np.any(np.abs(msp - isp) > SPACING_RTOL * isp):
        raise _Reject(
            f"mask {mname} spacing {_mm(msp)} mm differs from image {iname} {_mm(isp)} mm "
            f"(tolerance {SPACING_RTOL:.1%}): affines disagree"
        )
    cos_diff = float(np.abs(maff[:3, :3] / msp - iaff[:3, :3] / isp).max())
    if cos_diff > DIRECTION_ATOL:
        raise _Reject(
            f"mask {mname} axis directions differ from image {iname} by {cos_diff:.3g} "
            f"(tolerance {DIRECTION_ATOL}): affines disagree"
        )
    off = (np.linalg.inv(iaff) @ maff @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
    for a in range(3):
        lo_mm = abs(off[a]) * isp[a]
        hi_mm = abs(off[a] + mshape[a] - ishape[a]) * isp[a]
        if min(lo_mm, hi_mm) > ORIGIN_TOL_MM:
            raise _Reject(
                f"mask {mname} origin is {lo_mm:.2f} mm from image {iname} along {_AXES[a]} "
                f"(tolerance {ORIGIN_TOL_MM} mm at either corner): affines disagree"
            )
    shift = np.rint(off)
    return shift.astype(int)


def _mm(v) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"


def _place(mask: np.ndarray, shift: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resampling on a shared grid: mask voxel i lands at image voxel i+shift."""
    out = np.zeros(shape, mask.dtype)
    src, dst = [], []
    for a in range(3):
        d0, d1 = max(0, shift[a]), min(shape[a], shift[a] + mask.shape[a])
        src.append(slice(d0 - shift[a], d1 - shift[a]))
        dst.append(slice(d0, d1))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def validate_case(found: FoundCase, src: Path, fixed_dir: Path, final_fixed: Path) -> CaseReport:
    """Validate one case; a fixed mask is written into `fixed_dir` (recorded as `final_fixed`)."""
    cid, centre = found.case_id, centre_of(found.case_id)

    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(src))
        except ValueError:
            return str(p)

    img_p, mask_p = found.image, found.mask
    report = {"image": str(img_p) if img_p else None, "mask": str(mask_p) if mask_p else None}
    try:
        if found.extra:
            raise _Reject(f"several files claim id {cid}: {', '.join(map(rel, found.extra))}")
        if mask_p is None:
            raise _Reject(f"image {rel(img_p)} has no mask (expected labelsTr/ or masks/{cid})")
        if img_p is None:
            raise _Reject(f"mask {rel(mask_p)} has no image (expected imagesTr/ or images/{cid})")
        ishape, iaff = _header(img_p)
        mshape, maff = _header(mask_p)
        problems: list[str] = []
        shift = _grid_offset(ishape, iaff, mshape, maff, rel(mask_p), rel(img_p))
        diff = [abs(s) + abs(s + m - i) for s, m, i in zip(shift, mshape, ishape, strict=True)]
        worst = int(np.argmax(diff))
        if diff[worst] > MAX_FIX_VOXELS:
            raise _Reject(
                f"mask {rel(mask_p)} has shape {tuple(mshape)}, image {rel(img_p)} "
                f"{tuple(ishape)}: differs by {diff[worst]} voxels along {_AXES[worst]} "
                f"(at most {MAX_FIX_VOXELS} can be fixed)"
            )
        image = _load(img_p)
        mask = _load(mask_p)
        labels = np.unique(mask.array)
        if not np.all(labels == np.rint(labels)):
            bad = labels[labels != np.rint(labels)][:3]
            raise _Reject(f"mask {rel(mask_p)} has non-integer labels {bad.tolist()}")
        outside = sorted(set(labels.astype(int).tolist()) - set(LABEL_VALUES))
        if outside:
            raise _Reject(f"mask {rel(mask_p)} has label values {outside} outside {{0, 1, 2}}")
        status = ACCEPTED
        if any(diff) or np.any(shift):
            fixed = _place(mask.array.astype(np.uint8), shift, image.shape)
            lost = int(np.count_nonzero(mask.array)) - int(np.count_nonzero(fixed))
            save_volume(Volume(fixed, image.affine), fixed_dir / final_fixed.name, np.uint8)
            problems.append(
                f"mask {rel(mask_p)} shape {tuple(mshape)} != image {tuple(ishape)}: "
                f"resampled onto the image grid (nearest neighbour, {lost} labelled voxels "
                f"outside it) -> {final_fixed}"
            )
            report["mask"] = str(final_fixed)
            status = FIXED
        if not np.any(mask.array):
            problems.append(f"mask {rel(mask_p)} is empty (no tumour voxels)")
        return CaseReport(
            cid, centre, status, problems, shape=image.shape, spacing=image.spacing, **report
        )
    except _Reject as e:
        return CaseReport(cid, centre, REJECTED, [str(e)], **report)


def _header(path: Path):
    try:
        return load_header(path)
    except ImageReadError as e:
        raise _Reject(str(e)) from None


def _load(path: Path) -> Volume:
    try:
        return load_volume(path)
    except ImageReadError as e:
        raise _Reject(str(e)) from None
    except MemoryError:
        raise _Reject(f"{path}: too large to read into memory") from None


# -- splits ----------------------------------------------------------------------------------
def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def make_splits(
    cases: list[tuple[str, str]],
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed=0,
    gan_fraction: float = 0.0,
) -> dict[str, str]:
    """Stratified, seeded split of (case_id, centre) pairs -> {case_id: train|val|test|gan}.

    Each centre gives round(test_fraction * n) cases to test, round(val_fraction * n) to val and
    round(gan_fraction * n) to gan, in that order (fewer when that would leave it with no
    training case); its own random stream keeps the choice independent of the other centres.
    With gan_fraction 0 the split is the same as without the option.
    """
    fractions = (test_fraction, val_fraction, gan_fraction)
    if not (all(0 <= f < 1 for f in fractions) and sum(fractions) < 1):
        raise ValueError(
            f"test fraction {test_fraction}, val fraction {val_fraction} and gan fraction "
            f"{gan_fraction} must be >= 0 and sum to less than 1"
        )
    by_centre: dict[str, list[str]] = {}
    for cid, centre in cases:
        by_centre.setdefault(centre, []).append(cid)
    out: dict[str, str] = {}
    for centre, ids in sorted(by_centre.items()):
        ids = sorted(ids)
        rng = np.random.default_rng([int(seed), zlib.crc32(centre.encode())])
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_test = min(_round(test_fraction * len(ids)), max(0, len(ids) - 1))
        n_val = min(_round(val_fraction * len(ids)), max(0, len(ids) - 1 - n_test))
        n_gan = min(_round(gan_fraction * len(ids)), max(0, len(ids) - 1 - n_test - n_val))
        ends = np.cumsum([n_test, n_val, n_gan])
        for i, cid in enumerate(order):
            out[cid] = (
                "test"
                if i < ends[0]
                else "val"
                if i < ends[1]
                else "gan"
                if i < ends[2]
                else "train"
            )
    return dict(sorted(out.items()))


# -- ingest ----------------------------------------------------------------------------------
def ingest(
    src: str | Path,
    ws: Workspace,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
    workers: int = 2,
    progress: bool = False,
    gan_fraction: float = 0.0,
) -> IngestResult:
    """Discover + validate every case of `src`, then write the case index and split registry.

    `gan_fraction` > 0 reserves that share of each centre as the GAN-only `gan` split.

    The index is replaced only when at least one case is usable; fixed masks are built in a
    temporary folder renamed to WS/data/fixed/ when complete.
    """
    src = Path(src).resolve()
    found = discover_cases(src)
    make_splits([], test_fraction, val_fraction, 0, gan_fraction)  # check fractions first
    final_fixed = ws.fixed
    ws.data.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final_fixed, overwrite=True) as tmp:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futs = [
                pool.submit(validate_case, f, src, tmp, final_fixed / f"{f.case_id}.nii.gz")
                for f in found
            ]
            it = futs
            if progress:
                from tqdm import tqdm

                it = tqdm(futs, desc="validating", unit="case")
            reports = [f.result() for f in it]
        usable = [r for r in reports if r.usable]
        if not usable:
            raise _NothingUsable(reports)
    splits = make_splits(
        [(r.case_id, r.centre) for r in usable], test_fraction, val_fraction, seed, gan_fraction
    )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(
        ws.splits,
        {
            "version": INDEX_VERSION,
            "created": now,
            "seed": seed,
            "test_fraction": test_fraction,
            "val_fraction": val_fraction,
            "gan_fraction": gan_fraction,
            "sha256": case_ids_hash(splits),
            "counts": {s: sum(v == s for v in splits.values()) for s in SPLITS},
            "cases": splits,
        },
    )
    atomic_write_json(
        ws.case_index,
        {
            "version": INDEX_VERSION,
            "created": now,
            "source": str(src),
            "cases": [_to_json(r) for r in reports],
        },
    )
    return IngestResult(reports, splits, True)


class _NothingUsable(Exception):
    def __init__(self, reports):
        super().__init__("no usable case")
        self.reports = reports


def ingest_report(src, ws, **kw) -> IngestResult:
    """`ingest`, but a folder with no usable case returns its reports (index untouched)."""
    try:
        return ingest(src, ws, **kw)
    except _NothingUsable as e:
        return IngestResult(e.reports, {}, False)


def _to_json(r: CaseReport) -> dict:
    d = asdict(r)
    d["shape"] = list(r.shape) if r.shape else None
    d["spacing"] = list(r.spacing) if r.spacing else None
    return d


# -- reading the index -----------------------------------------------------------------------
def _read_index(ws: Workspace) -> dict:
    if not ws.case_index.is_file():
        raise WorkspaceError(
            f"no case index at {ws.case_index}: run `synthct ingest SRC` (or `synthct phantom` "
            "then ingest its folder) first"
        )
    data = read_json(ws.case_index)
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise WorkspaceError(f"{ws.case_index} is not a synthct case index (no 'cases' list)")
    return data


def load_case_reports(ws: Workspace) -> list[CaseReport]:
    """Every case of the last ingest, rejected ones included, sorted by id."""
    out = []
    for d in _read_index(ws)["cases"]:
        d = dict(d)
        d["shape"] = tuple(d["shape"]) if d.get("shape") else None
        d["spacing"] = tuple(d["spacing"]) if d.get("spacing") else None
        out.append(CaseReport(**d))
    return sorted(out, key=lambda r: r.case_id)


def load_cases(ws: Workspace) -> list[CaseRecord]:
    """The usable (accepted or fixed) cases, sorted by id."""
    return [r.record() for r in load_case_reports(ws) if r.usable]


def load_splits(ws: Workspace) -> dict[str, str]:
    """case_id -> "train" | "val" | "test" | "gan" from WS/data/splits.json."""
    if not ws.splits.is_file():
        raise WorkspaceError(f"no split registry at {ws.splits}: run `synthct ingest SRC` first")
    data = read_json(ws.splits)
    cases = data.get("cases", data) if isinstance(data, dict) else None
    if not isinstance(cases, dict) or any(v not in SPLITS for v in cases.values()):
        raise WorkspaceError(f"{ws.splits} is not a split registry (case id -> {SPLITS})")
    return dict(cases)


def cases_in_split(ws: Workspace, split: str) -> list[CaseRecord]:
    """Usable cases of one split ("train", "val", "test", "gan") or of all ("all"), sorted by id."""
    if split not in (*SPLITS, "all"):
        raise WorkspaceError(f"split must be one of {(*SPLITS, 'all')}, got {split!r}")
    cases = load_cases(ws)
    if split == "all":
        return cases
    splits = load_splits(ws)
    missing = [c.case_id for c in cases if c.case_id not in splits]
    if missing:
        raise WorkspaceError(
            f"{ws.splits} does not assign {missing[:3]}: re-run `synthct ingest` to rebuild it"
        )
    return [c for c in cases if splits[c.case_id] == split]
