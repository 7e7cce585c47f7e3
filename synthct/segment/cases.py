"""Cases for segmentation: real ones from the packed arrays, synthetic ones from a set's NIfTI files.

Both kinds become `SegCase`s on the same grid (S, S, S/2) at the packed spacing, images kept in
HU; the intensity normalisation is fitted per model (`normalise.py`) and applied by the dataset
and at inference, identically to real and synthetic cases, so the network cannot tell the two
apart by intensity scaling. A synthetic set is read straight from its files (the layout
`synthct generate` writes: imagesTr/<id>__CT.nii.gz int16 HU, labelsTr/<id>.nii.gz uint8,
datacard.json) through `synthct.io.load_volume`, the project's only image reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthct.errors import ConfigError, ImageReadError, WorkspaceError
from synthct.segment.recipe import SegConfig
from synthct.sets import Datacard, read_datacard
from synthct.workspace import Workspace

IMAGE_SUFFIX = "__CT.nii.gz"


@dataclass(frozen=True, eq=False)
class SegCase:
    """One case: image_hu (X, Y, Z) float32 HU, label (X, Y, Z) uint8 class map."""

    case_id: str
    image_hu: np.ndarray
    label: np.ndarray
    source: str  # "real" | "synthetic"
    centre: str
    spacing: tuple[float, float, float]


def make_case(
    case_id: str,
    image_hu: np.ndarray,
    label: np.ndarray,
    cfg: SegConfig,
    *,
    source: str = "real",
    centre: str = "",
    spacing: tuple[float, float, float] | None = None,
    where: str = "",
) -> SegCase:
    """Check the grid and label values; raises ConfigError naming `where`.

    The image stays HU, clipped to `cfg.hu_window`: the range a packed real case can hold, so a
    synthetic file's values outside it are treated as a real case's would have been.
    """
    where = where or case_id
    if image_hu.shape != cfg.volume_shape or label.shape != cfg.volume_shape:
        raise ConfigError(
            f"{where}: image {image_hu.shape} / label {label.shape}, expected "
            f"{cfg.volume_shape} (one half of a size-{cfg.size} packed pair)"
        )
    lab = np.rint(np.asarray(label)).astype(np.uint8)
    if lab.max(initial=0) >= cfg.out_channels:
        raise ConfigError(
            f"{where}: label values {sorted(np.unique(lab).tolist())}, expected below "
            f"{cfg.out_channels} for mask mode {cfg.mask!r}"
        )
    sp = tuple(float(s) for s in (spacing or (cfg.spacing,) * 3))
    image = np.asarray(image_hu, dtype=np.float32)
    if not np.all(np.isfinite(image)):
        raise ConfigError(f"{where}: image has NaN/inf voxels (expected finite HU)")
    image = np.clip(image, *cfg.hu_window).astype(np.float32, copy=False)
    return SegCase(case_id, image, lab, source, centre, sp)  # type: ignore[arg-type]


def load_real_cases(ws: Workspace, cfg: SegConfig, split: str) -> list[SegCase]:
    """Real cases of one split ("train", "val", "test") from the packed arrays, sorted by id."""
    from synthct.datasets import cases_in_split
    from synthct.preprocess import load_packed, unpack

    if not cases_in_split(ws, split):  # e.g. a registry without a val split
        return []
    packed = load_packed(ws, cfg.data_config(), split=split)
    images, masks = unpack(packed.arrays, cfg.data_config())
    spacing = tuple(float(s) for s in packed.spacing)
    cases = [
        make_case(
            cid,
            images[i],
            masks[i],
            cfg,
            source="real",
            centre=str(packed.centres[i]),
            spacing=spacing,  # type: ignore[arg-type]
            where=f"packed case {cid}",
        )
        for i, cid in enumerate(packed.case_ids)
    ]
    return sorted(cases, key=lambda c: c.case_id)


def synthetic_set_dir(ws: Workspace, name: str) -> Path:
    set_dir = ws.synthetic_dir(name)
    if name not in ws.list_sets():
        have = ws.list_sets()
        raise WorkspaceError(
            f"synthetic set {name!r} not found ({set_dir}/datacard.json missing); "
            f"available: {have or 'none — run `synthct generate` first'}"
        )
    return set_dir


def load_datacard(ws: Workspace, name: str) -> Datacard:
    """The card of synthetic set `name` (without its per-case list)."""
    return read_datacard(synthetic_set_dir(ws, name), cases=False)


def synthetic_case_ids(set_dir: Path) -> list[str]:
    """Ids of the pairs in a set (from imagesTr/<id>__CT.nii.gz), sorted."""
    return sorted(
        p.name[: -len(IMAGE_SUFFIX)] for p in (set_dir / "imagesTr").glob(f"*{IMAGE_SUFFIX}")
    )


def choose_synthetic(ids: list[str], n: int | None, seed: int) -> list[str]:
    """`n` ids drawn without replacement with `seed` (all when n is None), returned sorted."""
    if n is None or n == len(ids):
        return sorted(ids)
    if n < 0 or n > len(ids):
        raise ConfigError(
            f"--n-synthetic {n}: the set has {len(ids)} pairs (expected 0..{len(ids)})"
        )
    order = np.random.default_rng(seed).permutation(len(ids))[:n]
    return sorted(ids[i] for i in order)


def load_synthetic_cases(
    ws: Workspace, name: str, cfg: SegConfig, case_ids: list[str]
) -> list[SegCase]:
    """Read the chosen synthetic pairs of set `name`; each must be on the (S, S, S/2) grid."""
    from synthct.io import load_volume

    set_dir = synthetic_set_dir(ws, name)
    cases = []
    for cid in case_ids:
        img_path = set_dir / "imagesTr" / f"{cid}{IMAGE_SUFFIX}"
        lab_path = set_dir / "labelsTr" / f"{cid}.nii.gz"
        if not lab_path.is_file():
            raise ImageReadError(f"{lab_path}: label of synthetic case {cid} is missing")
        img = load_volume(img_path)
        lab = load_volume(lab_path)
        cases.append(
            make_case(
                cid,
                img.array,
                lab.array,
                cfg,
                source="synthetic",
                centre="synthetic",
                spacing=img.spacing,
                where=str(img_path),
            )
        )
    return cases


class SegDataset:
    """torch-style dataset: item i -> (image (1, X, Y, Z), label (1, X, Y, Z)) float tensors,
    after the (random) dict transforms."""

    def __init__(self, cases: list[SegCase], transforms=None) -> None:
        self.cases = cases
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int):
        import torch

        c = self.cases[i]
        d = {
            "image": torch.from_numpy(c.image_hu[None].copy()),
            "label": torch.from_numpy(c.label[None].astype(np.float32)),
        }
        if self.transforms is not None:
            d = self.transforms(d)
            if isinstance(d, list):  # croppers return one dict per sample
                d = d[0]
        return torch.as_tensor(d["image"]).float(), torch.as_tensor(d["label"]).float()


def stack_images(cases: list[SegCase], norm=None):
    """(N, 1, X, Y, Z) float32 tensor of the cases' images: HU, or normalised by `norm`
    (a `normalise.Normalisation`)."""
    import torch

    hu = torch.from_numpy(np.stack([c.image_hu for c in cases])[:, None].copy())
    if norm is None:
        return hu
    from synthct.segment.normalise import apply

    return apply(norm, hu)
