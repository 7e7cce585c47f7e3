"""Slice-level evaluation: FID/KID/PRDC, classifier-IS and a joint embedding on axial slice pairs.

2D models (FastGAN, StyleGAN2) produce slices, so their realism can only be measured slice by
slice; measuring 3D sets the same way puts 2D and 3D models side by side (`compare.py`).

What is compared (stated in every result under "selection"):

- real cases (packed pairs of the chosen split, contract 2) and 3D synthetic sets (their NIfTI
  pairs, mapped back to [-1, 1] as preprocessing does): every *body* axial slice of the image
  half with its mask slice (a slice is left out when no voxel exceeds -500 HU: air or padding
  beyond the scan), resized to R x R (`synthct.slices`: image area-averaged or bilinear, mask
  resized then thresholded);
- 2D synthetic sets: every slice of every case (one per case; a mosaic set's tiles), resized
  to R;
- when a side has more than `max_slices` slices, a seeded uniform sample of `max_slices`
  (sorted, so the natural tumour / non-tumour mix is kept; both fractions are reported).

R is the 2D set's resolution, for a 3D set its size S, or `slice_size` when given. Features come
from a 2D extractor (`features.SliceFeatureExtractor`): ``default`` = `SmallEncoder2D` trained
on the real *train* split's slices with a centre head (so classifier-IS is valid), cached under
WS/evals/encoders/slices-<key>-…; ``random`` = its fixed-seed twin. Written here because the
slice view, selection and labels are specific to this product; the metrics themselves are the
shared ones (`distances.py`, `evaluate.distance_metrics`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from synthct.config import DataConfig, config_hash, to_dict
from synthct.csvsafe import to_csv_text
from synthct.errors import ConfigError, WorkspaceError
from synthct.metrics.sets import VolumeSet, ids_sha256, load_synthetic_set
from synthct.workspace import Workspace, atomic_dir, atomic_write_json, atomic_write_text

EMBED_MAX_PER_GROUP = 500  # t-SNE points per group (seeded sample)
SELECTION = (
    "real and 3D synthetic: every body axial slice (a voxel above -500 HU) of the image half "
    "with its mask slice; 2D synthetic: every slice; resized to R x R; a seeded uniform sample "
    "of max_slices when there are more"
)


@dataclass
class SliceSet:
    """Slice pairs (N, 2, R, R) float32 in [-1, 1] with the case id and centre of each slice."""

    pairs: np.ndarray
    case_ids: list[str]
    centres: list[str]

    @property
    def n_cases(self) -> int:
        return len(set(self.case_ids))

    @property
    def tumour_fraction(self) -> float:
        return float((self.pairs[:, 1] > 0).any(axis=(1, 2)).mean()) if len(self.pairs) else 0.0

    def take(self, keep) -> SliceSet:
        keep = [int(i) for i in keep]
        return SliceSet(
            self.pairs[keep], [self.case_ids[i] for i in keep], [self.centres[i] for i in keep]
        )


def _cap(n: int, max_slices: int | None, seed: int) -> np.ndarray:
    if max_slices is None or n <= max_slices:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_slices, replace=False))


def volume_slices(
    vs: VolumeSet, cfg: DataConfig, resolution: int, max_slices: int | None = None, seed: int = 0
) -> SliceSet:
    """Packed pairs (N, S, S, S) -> their body axial slice pairs at R x R (see module doc)."""
    from synthct.slices import SliceDataset

    ds = SliceDataset.from_packed(
        vs.arrays, cfg, resolution, case_ids=list(vs.ids), tumour_fraction=None
    )
    centre_of = dict(zip(vs.ids, vs.centres, strict=True))
    keep = _cap(len(ds), max_slices, seed)
    pairs = torch.stack([ds[int(i)] for i in keep]).numpy() if len(keep) else np.zeros((0, 2))
    ids = [ds.item_case(int(i)) for i in keep]
    return SliceSet(pairs.astype(np.float32), ids, [centre_of[c] for c in ids])


def synthetic_slices(
    set_dir: Path,
    card: dict,
    cfg: DataConfig,
    resolution: int,
    max_slices: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SliceSet:
    """A synthetic set's slice pairs at R x R: 2D sets all their slices, 3D sets body slices."""
    if card.get("model", {}).get("data_view") != "slices":
        vs, _, _ = load_synthetic_set(set_dir, cfg, None, seed, progress)
        return volume_slices(vs, cfg, resolution, max_slices, seed)
    from synthct.generate import load_synthetic_pair
    from synthct.slices import axial_stack, halves_to_unit, resize_pairs

    ids = sorted(p.name[: -len("__CT.nii.gz")] for p in (set_dir / "imagesTr").glob("*__CT.nii.gz"))
    if len(ids) < 2:
        raise WorkspaceError(f"{set_dir}/imagesTr holds {len(ids)} cases; need at least 2")
    chunks, case_ids = [], []
    for cid in tqdm(ids, desc="read synthetic slices", disable=not progress):
        image, mask = load_synthetic_pair(set_dir, cid)
        img, msk = halves_to_unit(image.array, mask.array, cfg.hu_window)
        pairs = resize_pairs(axial_stack(img, msk), resolution)
        chunks.append(pairs.numpy())
        case_ids += [cid] * len(pairs)
    out = SliceSet(np.concatenate(chunks).astype(np.float32), case_ids, [""] * len(case_ids))
    return out.take(_cap(len(out.pairs), max_slices, seed))


# -- extractors ----------------------------------------------------------------------------------
def ensure_slice_encoder(
    ws: Workspace,
    cfg: DataConfig,
    train: SliceSet,
    train_ids: list[str],
    part: str = "pair",
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Path of the 2D default encoder for (R, part, preprocessing, training cases), trained on
    `train` slices when missing (epochs None: reuse any cached one, else train 10 epochs)."""
    from synthct.metrics import encoder as enc

    resolution = int(train.pairs.shape[-1])
    key = enc.slice_encoder_key(resolution, part, config_hash(cfg), ids_sha256(train_ids))
    if epochs is None:
        cached = enc.find_slice_encoder(ws, key)
        if cached is not None:
            return cached
    epochs = enc.DEFAULT_EPOCHS if epochs is None else epochs
    path = enc.slice_encoder_path(ws, key, epochs, seed)
    if path.is_file():
        return path
    bar = (lambda it: tqdm(it, desc="train slice encoder", unit="epoch")) if progress else None
    state, meta = enc.train_slice_encoder(
        train.pairs, train.centres, part=part, hu_window=cfg.hu_window, epochs=epochs,
        seed=seed, progress=bar,
    )  # fmt: skip
    meta.update(key=key, n_cases=train.n_cases, train_cases_sha256=ids_sha256(train_ids))
    enc.save_encoder(path, state, meta)
    return path


def get_slice_extractor(
    ws: Workspace,
    cfg: DataConfig,
    name: str,
    part: str,
    resolution: int,
    train_set: VolumeSet | None,
    epochs: int | None = None,
    seed: int = 0,
    max_slices: int | None = 20_000,
    progress: bool = True,
):
    """The named 2D extractor ("default" trains/loads the slice encoder on `train_set`)."""
    from synthct.metrics import features

    if name == "random":
        return features.build_random_slice_extractor(part)
    if name == "default":
        if train_set is None:
            raise WorkspaceError("the default slice encoder needs the real train split")
        train = volume_slices(train_set, cfg, resolution, max_slices, seed)
        path = ensure_slice_encoder(ws, cfg, train, train_set.ids, part, epochs, seed, progress)
        return features.load_slice_encoder(path)
    raise ConfigError(
        f"extractor {name!r} has no slice-level version; use default or random with --level slice"
    )


# -- the evaluation ------------------------------------------------------------------------------
def slice_resolution(card: dict, cfg: DataConfig, requested: int | None) -> int:
    """R: `requested`, else the 2D set's resolution, else the data size S."""
    if requested:
        if requested < 8:
            raise ConfigError(f"--slice-size must be >= 8, got {requested}")
        return int(requested)
    model = card.get("model", {})
    if model.get("data_view") == "slices":
        return int(model.get("size") or cfg.size)
    return int(cfg.size)


def run_slice_evaluation(
    ws: Workspace, opts, set_dir: Path, card: dict, cfg: DataConfig, load_real, progress=True
) -> tuple[Path, dict]:
    """`synthct evaluate --level slice`: see the module docstring; returns (folder, result)."""
    from synthct import __version__
    from synthct.generate import load_datacard, update_datacard
    from synthct.metrics.embedding import compute_embedding
    from synthct.metrics.evaluate import _classifier_is, distance_metrics, summarise

    opts = replace(opts, level="slice")
    r = slice_resolution(card, cfg, opts.slice_size)
    real_vs = load_real(ws, cfg, opts.real)
    real = volume_slices(real_vs, cfg, r, opts.max_slices, opts.seed)
    syn = synthetic_slices(set_dir, card, cfg, r, opts.max_slices, opts.seed, progress)
    for label, s in (("real", real), ("synthetic", syn)):
        if len(s.pairs) < 4:
            raise WorkspaceError(f"{label} side has {len(s.pairs)} slices; need at least 4")
    training = card.get("training_cases") or {}
    train_vs = None
    if opts.extractor == "default":
        train_vs = load_real(ws, cfg, training.get("split") or "train")
    fx = get_slice_extractor(ws, cfg, opts.extractor, opts.part, r, train_vs,
                             opts.encoder_epochs, opts.seed, progress=progress)  # fmt: skip
    info = fx.describe()
    bar = (lambda it: tqdm(it, desc="slice features", unit="batch")) if progress else None
    f_real, f_syn = fx.extract(real.pairs, progress=bar), fx.extract(syn.pairs, progress=bar)
    metrics: dict[str, Any] = distance_metrics(f_real, f_syn, info, opts)
    metrics["classifier_is"] = _classifier_is(fx, {"synthetic": syn.pairs, "real": real.pairs},
                                              progress)  # fmt: skip
    rng = np.random.default_rng(opts.seed)
    pick = [np.sort(rng.choice(len(f), min(len(f), EMBED_MAX_PER_GROUP), replace=False))
            for f in (f_real, f_syn)]  # fmt: skip
    emb = compute_embedding(
        np.vstack([f_real[pick[0]], f_syn[pick[1]]]),
        [f"{real.case_ids[i]}#{i}" for i in pick[0]] + [f"{syn.case_ids[i]}#{i}" for i in pick[1]],
        [f"real-{opts.real}"] * len(pick[0]) + ["synthetic"] * len(pick[1]),
        seed=opts.seed,
    )
    settings = {**asdict(opts), "extractor_sha256": info["weights_sha256"],
                "real_ids": ids_sha256(real_vs.ids), "resolution": r}  # fmt: skip
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    eval_id = f"{opts.synthetic}-slice-{opts.part}-{opts.extractor}-"
    eval_id += hashlib.sha256(blob).hexdigest()[:8]
    model = card.get("model", {})
    result = {
        "id": eval_id,
        "level": "slice",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "synthct_version": __version__,
        "convention": "n = real slices, m = synthetic slices, d = feature dimension",
        "options": asdict(opts),
        "data_config": to_dict(cfg),
        "extractor": info,
        "slices": {"resolution": r, "selection": SELECTION, "max_slices": opts.max_slices},
        "model": {"kind": model.get("kind"), "data_view": model.get("data_view", "volumes")},
        "synthetic": {
            "set": opts.synthetic,
            "m": len(syn.pairs),
            "m_cases": syn.n_cases,
            "tumour_slice_fraction": syn.tumour_fraction,
            "ids_sha256": ids_sha256(sorted(set(syn.case_ids))),
        },
        "real": {
            "split": opts.real,
            "n": len(real.pairs),
            "n_cases": real.n_cases,
            "tumour_slice_fraction": real.tumour_fraction,
            "ids_sha256": ids_sha256(real_vs.ids),
        },
        "metrics": metrics,
    }
    final = ws.evals / eval_id
    with atomic_dir(final, overwrite=True) as tmp:
        atomic_write_json(tmp / "metrics.json", result)
        atomic_write_text(tmp / "embedding.csv", to_csv_text(pd.DataFrame(emb)))
    merged = dict(load_datacard(set_dir).get("metrics") or {})
    merged[eval_id] = summarise(result)
    update_datacard(set_dir, "metrics", merged)
    return final, result
