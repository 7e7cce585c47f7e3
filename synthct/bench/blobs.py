"""Tiny procedural pairs and synthetic sets for the evaluation tests and `synthct bench fid`.

Blob pairs: an ellipsoidal "body" (soft tissue with noise, a bright "bone" core) in air and a
spherical tumour whose size and position vary per case, packed exactly like real data. They
stand in for preprocessed real cases where a benchmark needs many of them quickly; they are not
anatomy (use `synthct.phantom` for that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthct.config import DataConfig, to_dict
from synthct.io import Volume, save_volume, spacing_affine
from synthct.metrics.volume_sets import VolumeSet, to_packed
from synthct.runtime import case_ids_hash
from synthct.workspace import Workspace, atomic_write_json


def blob_pair(
    size: int, rng: np.random.Generator, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(image HU (S, S, S/2) float32, mask (S, S, S/2) uint8); `shift` moves tissue HU/tumour size."""
    s, h = size, size // 2
    x, y, z = np.meshgrid(
        np.linspace(-1, 1, s), np.linspace(-1, 1, s), np.linspace(-1, 1, h), indexing="ij"
    )
    ax, ay = rng.uniform(0.6, 0.85, 2)
    body = (x / ax) ** 2 + (y / ay) ** 2 < 1
    img = np.full((s, s, h), -1000.0)
    img[body] = 40.0 + 150.0 * shift + rng.normal(0, 30, body.sum())
    img[(x / (0.25 * ax)) ** 2 + ((y + 0.3 * ay) / (0.2 * ay)) ** 2 < 1] = 500.0
    c = rng.uniform(-0.35, 0.35, 3)
    r = rng.uniform(0.12, 0.3) * (1.0 + shift)
    mask = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < r**2) & body
    return img.astype(np.float32), mask.astype(np.uint8)


def blob_set(n: int, cfg: DataConfig, seed: int, prefix: str, shift: float = 0.0) -> VolumeSet:
    """n packed blob pairs with ids <prefix>-NNN and two alternating centres."""
    rng = np.random.default_rng(seed)
    arrays = np.stack([to_packed(*blob_pair(cfg.size, rng, shift), cfg) for _ in range(n)])
    ids = [f"{prefix}-{i:03d}" for i in range(n)]
    centres = ["A" if i % 2 == 0 else "B" for i in range(n)]
    return VolumeSet(arrays.astype(np.float32), ids, centres, (1.5, 1.5, 3.0))


def write_blob_synthetic_set(
    ws: Workspace,
    name: str,
    n: int,
    cfg: DataConfig,
    seed: int,
    train_ids: list[str],
    shift: float = 0.0,
) -> Path:
    """A synthetic set in the HECKTOR layout (imagesTr/<id>__CT.nii.gz int16 HU,
    labelsTr/<id>.nii.gz uint8) with the datacard fields `synthct evaluate` reads: the data
    config, the GAN's training cases and the spacing."""
    rng = np.random.default_rng(seed)
    folder = ws.synthetic_dir(name)
    aff = spacing_affine((1.5, 1.5, 3.0))
    for i in range(n):
        img, mask = blob_pair(cfg.size, rng, shift)
        cid = f"SYN-{i + 1:04d}"
        save_volume(Volume(img, aff), folder / "imagesTr" / f"{cid}__CT.nii.gz", dtype=np.int16)
        save_volume(Volume(mask, aff), folder / "labelsTr" / f"{cid}.nii.gz", dtype=np.uint8)
    atomic_write_json(
        folder / "datacard.json",
        {
            "name": name,
            "model": {"kind": "blob", "size": cfg.size},
            "run_config": {"data": to_dict(cfg)},
            "training_cases": {
                "split": "train",
                "sha256": case_ids_hash(train_ids),
                "case_ids": train_ids,
            },
            "spacing": [1.5, 1.5, 3.0],
            "metrics": {},
        },
    )
    return folder


def split_loader(sets: dict[str, VolumeSet]):
    """A `real_loader` for `run_evaluation` serving in-memory splits ("all" = every split)."""

    def load(ws, cfg, split):
        if split == "all":
            parts = list(sets.values())
            return VolumeSet(
                np.concatenate([p.arrays for p in parts]),
                sum((p.ids for p in parts), []),
                sum((p.centres for p in parts), []),
                parts[0].spacing,
            )
        return sets[split]

    return load
