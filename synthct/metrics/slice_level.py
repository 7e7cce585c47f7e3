"""Slice-level evaluation: FID/KID/PRDC, classifier-IS and a joint embedding on axial slice pairs.

2D models (FastGAN, StyleGAN2) produce slices, so their realism can only be measured slice by
slice; measuring 3D sets the same way puts 2D and 3D models side by side (`comparison.py`).

The protocol (stated in every result under "slices"; docs/metrics.md explains why):

- the unit is the **case**: a real patient, a synthetic volume of a 3D (or mosaic) model, or,
  for a 2D model whose slices are generated independently, a group of k consecutive generated
  slices of the set (sorted case ids; any grouping of independent draws is equivalent);
- **k slices per case** (`slices_per_case`, default 8; `slice_cases.py`), drawn the same way for real cases and
  every volume-like synthetic case (`synthct.slices.case_draw`): at random (seeded) from the
  case's body slices (a voxel above -500 HU; all its slices when it has none), without
  replacement (with replacement when it has fewer than k), weighted by the tumour mix;
- the synthetic side uses as many cases as the real side unless `--n` says otherwise (FID's
  bias depends on both sample sizes, so comparable results share them);
- every metric is the mean over the k **rounds** of one slice per case; CIs resample cases;
  the real-vs-real baseline splits real cases (`resampling.py`);
- **tumour mix**: real slices (and slices of volume-like synthetic cases) are drawn on the mix
  the model was trained for: the natural one for 3D models and 2D runs trained on it (the
  default), the run's recorded `tumour_fraction` otherwise; `--tumour-mix` overrides. The mix
  and the realised tumour-slice fraction of both sides are recorded under "tumour_mix".

Slices are resized to R x R (`synthct.slices`: image area-averaged or bilinear, mask resized
then thresholded); R is the 2D set's resolution, for a 3D set its size S, or `slice_size`.
Features come from a 2D extractor (`features.SliceFeatureExtractor`): ``default`` =
`SmallEncoder2D` trained on the real *train* split's slices with a centre head (so
classifier-IS is valid), cached under WS/evals/encoders/slices-<key>-...; ``random`` = its
fixed-seed twin. Written here because the slice view, case protocol and labels are specific to
this product; the metrics themselves are the shared ones (`distances.py`, `resampling.py`,
`distance_block.distance_metrics`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from synthct.config import DataConfig, config_hash, to_dict
from synthct.csvsafe import to_csv_text
from synthct.errors import ConfigError, WorkspaceError
from synthct.metrics.results import record_in_datacard
from synthct.metrics.slice_cases import (  # re-exported: callers and tests use slice_level.*
    SliceSet,
    volume_case_slices,
    volume_slices,
)
from synthct.metrics.volume_sets import VolumeSet
from synthct.runtime import case_ids_hash
from synthct.sets import Datacard
from synthct.views import view_class
from synthct.workspace import Workspace, atomic_dir, atomic_write_json, atomic_write_text

EMBED_MAX_PER_GROUP = 500  # t-SNE points per group (seeded sample)
MIN_REAL_CASES = 4  # the real-vs-real baseline needs two halves of >= 2 cases
PROTOCOL = (
    "cases: real patients, synthetic volumes (3D and mosaic models) or groups of k "
    "consecutive generated slices (2D models); k slices per case drawn at random (seeded) from "
    "its body slices (a voxel above -500 HU), without replacement when it has k, weighted by "
    "the tumour mix; metrics = mean over k rounds of one slice per case; CIs resample cases; "
    "real-vs-real baseline on case-disjoint halves; PRDC radii never use the same case"
)


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
    key = enc.slice_encoder_key(resolution, part, config_hash(cfg), case_ids_hash(train_ids))
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
    meta.update(key=key, n_cases=train.n_cases, train_cases_sha256=case_ids_hash(train_ids))
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
def slice_resolution(card: Datacard, cfg: DataConfig, requested: int | None) -> int:
    """R: `requested`, else the 2D set's resolution, else the data size S."""
    if requested:
        if requested < 8:
            raise ConfigError(f"--slice-size must be >= 8, got {requested}")
        return int(requested)
    return view_class(card.model.data_view).set_resolution(card.model, cfg)


def training_tumour_mix(ws: Workspace, card: Datacard, requested: str) -> tuple[float | None, str]:
    """(fraction or None = natural, where it came from) for a set's slice-level evaluation.

    `requested` "natural" or a fraction wins. "auto": 3D sets and mosaic 2D sets -> natural
    (their slices are cut from whole volumes); slice 2D sets -> the training run's recorded
    `tumour_fraction` (datacard, else WS/runs/<run>/train_cases.json).
    """
    from synthct.slices import parse_tumour_mix
    from synthct.workspace import read_json

    parsed = parse_tumour_mix(requested)
    if parsed != "auto":
        return parsed, "--tumour-mix"  # type: ignore[return-value]
    natural = view_class(card.model.data_view).set_tumour_mix(card.model)
    if natural is not None:
        return None, natural
    recorded = card.training_cases.extra if card.training_cases else {}
    for where in (card.extra, recorded):
        if "tumour_fraction" in where:
            return parse_tumour_mix(where["tumour_fraction"]), "datacard"  # type: ignore[return-value]
    run = card.run
    path = ws.run_dir(run) / "train_cases.json" if isinstance(run, str) and run else None
    if path is not None and path.is_file():
        rec = read_json(path)
        if isinstance(rec, dict) and "tumour_fraction" in rec:
            return parse_tumour_mix(rec["tumour_fraction"]), f"run {run}: train_cases.json"  # type: ignore[return-value]
    raise ConfigError(
        f"cannot tell which tumour mix the 2D set {card.name!r} was trained on "
        f"({path or 'no run recorded in its datacard'} has no tumour_fraction); pass "
        "--tumour-mix natural or the training fraction, e.g. --tumour-mix 0.5"
    )


def run_slice_evaluation(
    ws: Workspace, opts, set_dir: Path, card: Datacard, cfg: DataConfig, load_real, progress=True
) -> tuple[Path, dict]:
    """`synthct evaluate --level slice`: see the module docstring; returns (folder, result)."""
    from synthct import __version__
    from synthct.metrics.distance_block import _classifier_is, distance_metrics
    from synthct.metrics.embedding import compute_embedding
    from synthct.slices import mix_label

    opts = replace(opts, level="slice")
    r, k = slice_resolution(card, cfg, opts.slice_size), opts.slices_per_case
    fraction, mix_source = training_tumour_mix(ws, card, opts.tumour_mix)
    real_vs = load_real(ws, cfg, opts.real)
    if len(real_vs.ids) < MIN_REAL_CASES:
        raise WorkspaceError(
            f"real split {opts.real!r} has {len(real_vs.ids)} cases; slice-level evaluation "
            f"needs at least {MIN_REAL_CASES} (cases, not slices, are the unit)"
        )
    real = volume_case_slices(real_vs, cfg, r, k, fraction, opts.seed)
    m_cases = opts.n if opts.n is not None else real.n_cases
    syn = view_class(card.model.data_view).set_case_slices(
        set_dir, card.model, cfg, r, k, m_cases, fraction, opts.seed, progress
    )
    if syn.n_cases < 2:
        raise WorkspaceError(f"synthetic set {opts.synthetic!r} gives {syn.n_cases} case; need 2")
    train_vs = None
    if opts.extractor == "default":
        train_vs = load_real(
            ws, cfg, (card.training_cases and card.training_cases.split) or "train"
        )
    fx = get_slice_extractor(ws, cfg, opts.extractor, opts.part, r, train_vs,
                             opts.encoder_epochs, opts.seed, progress=progress)  # fmt: skip
    info = fx.describe()
    bar = (lambda it: tqdm(it, desc="slice features", unit="batch")) if progress else None
    f_real = fx.extract(real.flat, progress=bar).reshape(real.n_cases, k, -1)
    f_syn = fx.extract(syn.flat, progress=bar).reshape(syn.n_cases, k, -1)
    metrics: dict[str, Any] = distance_metrics(f_real, f_syn, info, opts)
    metrics["classifier_is"] = _classifier_is(
        fx, {"synthetic": syn.flat, "real": real.flat}, progress, opts.seed, per_case=k
    )
    rng = np.random.default_rng(opts.seed)
    flat_real, flat_syn = f_real.reshape(-1, f_real.shape[-1]), f_syn.reshape(-1, f_syn.shape[-1])
    pick = [np.sort(rng.choice(len(f), min(len(f), EMBED_MAX_PER_GROUP), replace=False))
            for f in (flat_real, flat_syn)]  # fmt: skip
    emb = compute_embedding(
        np.vstack([flat_real[pick[0]], flat_syn[pick[1]]]),
        [f"{real.case_ids[i // k]}#{i % k}" for i in pick[0]]
        + [f"{syn.case_ids[i // k]}#{i % k}" for i in pick[1]],
        [f"real-{opts.real}"] * len(pick[0]) + ["synthetic"] * len(pick[1]),
        seed=opts.seed,
    )
    settings = {**asdict(opts), "extractor_sha256": info["weights_sha256"],
                "real_ids": case_ids_hash(real_vs.ids), "resolution": r}  # fmt: skip
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    eval_id = f"{opts.synthetic}-slice-{opts.part}-{opts.extractor}-"
    eval_id += hashlib.sha256(blob).hexdigest()[:8]
    mix = {
        "value": mix_label(fraction),
        "source": mix_source,
        "real_tumour_slice_fraction": real.tumour_fraction,
        "synthetic_tumour_slice_fraction": syn.tumour_fraction,
    }
    result = {
        "id": eval_id,
        "level": "slice",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "synthct_version": __version__,
        "convention": (
            "n_cases/m_cases = real/synthetic cases (the unit of resampling); n/m = slices "
            "(cases x slices_per_case); d = feature dimension"
        ),
        "options": asdict(opts),
        "data_config": to_dict(cfg),
        "extractor": info,
        "slices": {"resolution": r, "slices_per_case": k, "protocol": PROTOCOL},
        "tumour_mix": mix,
        "model": {"kind": card.model.kind, "data_view": card.model.data_view},
        "synthetic": {
            "set": opts.synthetic,
            "m": syn.n_cases * k,
            "m_cases": syn.n_cases,
            **syn.describe(),
            "ids_sha256": case_ids_hash(syn.case_ids),
        },
        "real": {
            "split": opts.real,
            "n": real.n_cases * k,
            "n_cases": real.n_cases,
            **real.describe(),
            "ids_sha256": case_ids_hash(real_vs.ids),
        },
        "metrics": metrics,
    }
    final = ws.eval_dir(eval_id)
    with atomic_dir(final, overwrite=True) as tmp:
        atomic_write_json(tmp / "metrics.json", result)
        atomic_write_text(tmp / "embedding.csv", to_csv_text(pd.DataFrame(emb)))
    record_in_datacard(set_dir, result)
    return final, result
