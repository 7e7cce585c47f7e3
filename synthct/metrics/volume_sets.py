"""The volumes `synthct evaluate` compares: real packed pairs and synthetic NIfTI sets, as one
type (`VolumeSet`; its slice-level counterpart is `slice_cases.SliceSet`).

Real volumes come from the packed arrays (`synthct.preprocess.load_packed`). Synthetic
pairs are read from a set's NIfTI files (`synthct.sets.load_synthetic_pair`) and mapped back
to [-1, 1] exactly as preprocessing maps real data (HU window clipped and scaled linearly; mask
{0, 1} -> {-1, 1}, or {0, 1, 2} -> {-1, 0, 1}) and packed the same way, so both sides enter the
feature extractors identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthct.config import HU_WINDOW, DataConfig, from_dict
from synthct.errors import WorkspaceError
from synthct.metrics.features import select_part
from synthct.sets import Datacard
from synthct.workspace import Workspace


@dataclass
class VolumeSet:
    """Packed pairs (N, S, S, S) float32 in [-1, 1] with ids, centres and voxel spacing (mm)."""

    arrays: np.ndarray
    ids: list[str]
    centres: list[str]
    spacing: tuple[float, float, float]

    def subset(self, keep: Sequence[int]) -> VolumeSet:
        keep = list(keep)
        return VolumeSet(
            self.arrays[keep],
            [self.ids[i] for i in keep],
            [self.centres[i] for i in keep],
            self.spacing,
        )


# -- loading ------------------------------------------------------------------------------------
def load_real_set(ws: Workspace, cfg: DataConfig, split: str) -> VolumeSet:
    """Real packed pairs of `split` ("train"/"val"/"test"/"all") via `preprocess.load_packed`."""
    from synthct.preprocess import load_packed

    ps = load_packed(ws, cfg, split=split)
    arrays = np.asarray(ps.arrays, dtype=np.float32)
    return VolumeSet(arrays, list(ps.case_ids), list(ps.centres), tuple(ps.spacing))


def data_config_of(card: Datacard, where: str) -> DataConfig:
    """The preprocessing config a synthetic set was trained with (from its datacard)."""
    rc = card.run_config
    if isinstance(rc, dict) and isinstance(rc.get("data"), dict):
        return from_dict(DataConfig, rc["data"], where=f"{where}: run_config.data")
    post = card.postprocess
    size = card.model.size
    if not size:
        raise WorkspaceError(f"{where}: datacard has neither run_config.data nor model.size")
    return DataConfig(
        size=int(size),
        hu_window=tuple(post.get("hu_window", HU_WINDOW)),
        packing=post.get("packing", "z"),
        mask=post.get("mask_mode", "binary"),
    )


def to_packed(image_hu: np.ndarray, mask: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """A synthetic pair (HU image, label mask), each (S, S, S/2), -> packed (S, S, S) in [-1, 1].

    Same mapping as preprocessing real data: HU clipped to the window and scaled to [-1, 1];
    labels binary {0, >0} -> {-1, 1} or multiclass {0, 1, 2} -> {-1, 0, 1}.
    """
    from synthct.preprocess import hu_to_unit, mask_to_unit, pack

    img = hu_to_unit(image_hu.astype(np.float32), cfg.hu_window)
    msk = mask_to_unit(mask.astype(np.float32), cfg.mask)
    return pack(img.astype(np.float32), msk.astype(np.float32), cfg.packing)


def load_synthetic_set(
    set_dir: Path, cfg: DataConfig, n: int | None = None, seed: int = 0, progress: bool = True
) -> tuple[VolumeSet, list[np.ndarray], list[np.ndarray]]:
    """Read a set's NIfTI pairs -> (packed VolumeSet, HU images, masks); at most n (seeded)."""
    from synthct.sets import load_synthetic_pair

    ids = sorted(p.name[: -len("__CT.nii.gz")] for p in (set_dir / "imagesTr").glob("*__CT.nii.gz"))
    if len(ids) < 2:
        raise WorkspaceError(f"{set_dir}/imagesTr holds {len(ids)} cases; need at least 2")
    if n is not None and n < len(ids):
        ids = sorted(np.random.default_rng(seed).choice(ids, n, replace=False).tolist())
    s = cfg.size
    want = (s, s, s // 2)
    packed, images, masks, spacing = [], [], [], None
    for cid in tqdm(ids, desc="read synthetic", disable=not progress):
        image, mask = load_synthetic_pair(set_dir, cid)
        if image.shape != want or mask.shape != want:
            raise WorkspaceError(
                f"{set_dir}: case {cid} has image {image.shape} / mask {mask.shape}, expected {want}"
                f" (size {s} from the datacard)"
            )
        spacing = spacing or image.spacing
        images.append(image.array)
        masks.append((mask.array > 0).astype(np.uint8))
        packed.append(to_packed(image.array, mask.array, cfg))
    vs = VolumeSet(np.stack(packed), ids, [""] * len(ids), spacing)  # type: ignore[arg-type]
    return vs, images, masks


def real_hu_and_masks(vs: VolumeSet, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Packed real pairs -> (HU images (N, S, S, S/2), binary tumour masks (N, S, S, S/2))."""
    lo, hi = cfg.hu_window
    img = select_part(vs.arrays, "image", cfg.packing)[:, 0]
    msk = select_part(vs.arrays, "mask", cfg.packing)[:, 0]
    hu = (np.clip(img, -1, 1) * 0.5 + 0.5) * (hi - lo) + lo
    return hu, (msk > (0.0 if cfg.mask == "binary" else -0.5)).astype(np.uint8)
