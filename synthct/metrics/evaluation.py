"""`synthct evaluate`: every metric of a synthetic set against real data, written to WS/evals/<id>/.

Real volumes come from the packed arrays (`synthct.preprocess.load_packed`) at the set's size
and preprocessing config; the GAN's training cases (for the privacy check) are the ones listed
in the set's datacard, taken from the run's training split. Synthetic volumes are read from the
set's NIfTI files and mapped back to [-1, 1] exactly as real data are (HU window clipped and
scaled linearly; mask {0, 1} -> {-1, 1}) and packed the same way (`volume_sets.py`).

Outputs (atomic folder): metrics.json (each value with n = real samples, m = synthetic samples,
d, the extractor's name/version/weights SHA-256, a bootstrap CI and the real-vs-real baseline),
embedding.csv, privacy.csv, case_stats.csv, hu_histogram.csv. A summary goes into the set's
datacard under metrics[<eval id>].

Level: "volume" compares packed 3D pairs (3D sets only); "slice" compares axial slice pairs
with 2D feature extractors (`slice_level.py`) and is the only level for 2D sets (FastGAN,
StyleGAN2). `comparison.compare_models` tabulates the evaluations of one level across models.

`fid_for_run` is the hook for HPO ranking: FID of a run's checkpoint against a real split.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from synthct.config import DataConfig, to_dict
from synthct.errors import ConfigError, WorkspaceError
from synthct.metrics import distances as dist
from synthct.metrics.distance_block import (  # re-exported: callers and tests use evaluation.*
    _classifier_is,
    distance_metrics,
)
from synthct.metrics.features import PARTS, FeatureExtractor, select_part
from synthct.metrics.results import record_in_datacard
from synthct.metrics.slice_level import run_slice_evaluation
from synthct.metrics.volume_sets import (  # re-exported: callers and tests use evaluation.*
    VolumeSet,
    data_config_of,
    load_real_set,
    load_synthetic_set,
    real_hu_and_masks,
)
from synthct.runtime import case_ids_hash, pick_device
from synthct.views import view_class
from synthct.workspace import (
    Workspace,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    check_name,
)

EXTRACTORS = ("default", "medicalnet", "random")
SLICE_OPTIONS = ("level", "slice_size", "slices_per_case", "tumour_mix")


@dataclass(frozen=True)
class EvalConfig:
    """What `synthct evaluate` computes (saved in metrics.json)."""

    synthetic: str
    real: str = "test"
    extractor: str = "default"
    weights: str | None = None
    n: int | None = None  # at most this many synthetic cases (seeded); slice level: None = n_real
    part: str = "pair"
    seed: int = 0
    n_boot: int = 100
    baseline_repeats: int = 20
    kid_subset: int = 1000
    kid_subsets: int = 100
    msssim_pairs: int = 100
    encoder_epochs: int | None = None  # None: any cached encoder, else train 10 epochs
    dcr_quantile: float = 0.05
    level: str | None = None  # "volume" | "slice"; None: slice for 2D sets, else volume
    slice_size: int | None = None  # slice level: R (default: the 2D set's R, or S)
    slices_per_case: int = 8  # slice level: k slices drawn from every case (real and synthetic)
    tumour_mix: str = "auto"  # slice level: auto | natural | a tumour-slice fraction in [0, 1]

    def __post_init__(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise ConfigError(f"extractor must be one of {EXTRACTORS}, got {self.extractor!r}")
        if self.part not in PARTS:
            raise ConfigError(f"part must be one of {PARTS}, got {self.part!r}")
        if self.real not in ("train", "val", "test", "all"):
            raise ConfigError(f"real split must be train, val, test or all, got {self.real!r}")
        if self.extractor == "medicalnet" and not self.weights:
            raise ConfigError(
                "--extractor medicalnet needs --weights PATH (the MedicalNet resnet_50.pth file)"
            )
        if self.n is not None and self.n < 2:
            raise ConfigError(f"--n must be >= 2, got {self.n}")
        if self.level not in (None, "volume", "slice"):
            raise ConfigError(f"level must be volume or slice, got {self.level!r}")
        if self.level == "slice" and self.extractor == "medicalnet":
            raise ConfigError(
                "--extractor medicalnet is a 3D network; at --level slice use default or random"
            )
        if self.slices_per_case < 1:
            raise ConfigError(f"--slices-per-case must be >= 1, got {self.slices_per_case}")
        from synthct.slices import parse_tumour_mix

        try:
            parse_tumour_mix(self.tumour_mix)
        except ValueError as e:
            raise ConfigError(f"--tumour-mix: {e}") from None


# -- extractors -----------------------------------------------------------------------------------
def ensure_default_encoder(
    ws: Workspace,
    cfg: DataConfig,
    part: str = "pair",
    epochs: int | None = None,
    seed: int = 0,
    train: VolumeSet | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Path of the default encoder for (cfg grid, part, training cases), training it if missing.

    epochs None: reuse the newest cached encoder for this key whatever its epochs/seed, else
    train `DEFAULT_EPOCHS`. An explicit `epochs` (or `force`) asks for exactly that training.
    """
    from synthct.metrics import encoder as enc

    train = train if train is not None else load_real_set(ws, cfg, "train")
    key = enc.encoder_key(cfg.size, part, cfg.packing, cfg.hu_window, case_ids_hash(train.ids))
    if epochs is None and not force:
        cached = enc.find_encoder(ws, key)
        if cached is not None:
            return cached
    epochs = enc.DEFAULT_EPOCHS if epochs is None else epochs
    path = enc.encoder_path(ws, key, epochs, seed)
    if path.is_file() and not force:
        return path
    bar = (lambda it: tqdm(it, desc="train encoder", unit="epoch")) if progress else None
    state, meta = enc.train_encoder(
        train.arrays,
        train.centres,
        part=part,
        packing=cfg.packing,
        hu_window=cfg.hu_window,
        epochs=epochs,
        seed=seed,
        progress=bar,
    )
    meta.update(size=cfg.size, train_cases_sha256=case_ids_hash(train.ids), key=key)
    enc.save_encoder(path, state, meta)
    return path


def get_extractor(
    ws: Workspace,
    cfg: DataConfig,
    name: str,
    part: str,
    weights: str | None = None,
    train: VolumeSet | None = None,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FeatureExtractor:
    """Build the named feature extractor ("default" trains/loads the workspace encoder)."""
    from synthct.metrics import features

    if name == "medicalnet":
        if not weights:
            raise ConfigError("--extractor medicalnet needs --weights PATH")
        return features.load_medicalnet(weights)
    if name == "random":
        return features.build_random_extractor()
    if name == "default":
        from synthct.metrics.encoder import load_encoder

        return load_encoder(
            ensure_default_encoder(ws, cfg, part, epochs, seed, train, progress=progress)
        )
    raise ConfigError(f"extractor must be one of {EXTRACTORS}, got {name!r}")


def _extract(
    fx: FeatureExtractor, vs: VolumeSet, part: str, packing: str, label: str, progress: bool
):
    vols = select_part(vs.arrays, part, packing)
    bar = (lambda it: tqdm(it, desc=f"features {label}", unit="batch")) if progress else None
    return fx.extract(vols, progress=bar)


def _csv(path: Path, df: pd.DataFrame) -> None:
    from synthct.csvsafe import to_csv_text  # case ids cannot become spreadsheet formulas

    atomic_write_text(path, to_csv_text(df))


# -- the command ---------------------------------------------------------------------------------
def run_evaluation(
    ws: Workspace,
    opts: EvalConfig,
    progress: bool = True,
    real_loader: Callable[[Workspace, DataConfig, str], VolumeSet] | None = None,
) -> tuple[Path, dict]:
    """Evaluate synthetic set `opts.synthetic`; returns (eval folder, metrics dict).

    `real_loader(ws, cfg, split)` supplies real packed pairs (default `load_real_set`).
    """
    load_real = real_loader or load_real_set
    from synthct.metrics.diversity import msssim_config, pairwise_msssim
    from synthct.metrics.embedding import compute_embedding
    from synthct.metrics.privacy import dcr_report, gallery, voxel_vectors
    from synthct.metrics.statistics import case_statistics, compare_sets, hu_histogram
    from synthct.sets import read_datacard

    set_dir = ws.synthetic_dir(opts.synthetic)
    if not set_dir.is_dir():
        raise WorkspaceError(f"synthetic set {opts.synthetic!r} not found in {ws.synthetic}")
    card = read_datacard(set_dir, cases=False)
    cfg = data_config_of(card, str(set_dir / "datacard.json"))
    view = view_class(card.model.data_view)
    if view.evaluation_level == "slice" and opts.level == "volume":
        raise ConfigError(
            f"synthetic set {opts.synthetic!r} holds 2D slices ({card.model.kind}): "
            "it can only be evaluated with --level slice"
        )
    if (opts.level or view.evaluation_level) == "slice":
        return run_slice_evaluation(ws, opts, set_dir, card, cfg, load_real, progress)

    syn, syn_hu, syn_masks = load_synthetic_set(set_dir, cfg, opts.n, opts.seed, progress)
    real = load_real(ws, cfg, opts.real)
    if len(real.ids) < 4:
        raise WorkspaceError(f"real split {opts.real!r} has {len(real.ids)} cases; need at least 4")
    training = card.training_cases
    train_all = load_real(ws, cfg, (training and training.split) or "train")
    trained_on = set((training and training.case_ids) or train_all.ids)
    train = train_all.subset([i for i, c in enumerate(train_all.ids) if c in trained_on])
    holdout = real.subset([i for i, c in enumerate(real.ids) if c not in trained_on])
    overlap = len(real.ids) - len(holdout.ids)

    fx = get_extractor(
        ws,
        cfg,
        opts.extractor,
        opts.part,
        opts.weights,
        train_all,
        opts.encoder_epochs,
        opts.seed,
        progress,
    )
    info = fx.describe()
    f_syn = _extract(fx, syn, opts.part, cfg.packing, "synthetic", progress)
    f_real = _extract(fx, real, opts.part, cfg.packing, f"real-{opts.real}", progress)
    f_train = _extract(fx, train, opts.part, cfg.packing, "real-train", progress)

    metrics = distance_metrics(f_real, f_syn, info, opts)
    part_vols = {
        "synthetic": select_part(syn.arrays, opts.part, cfg.packing),
        "real": select_part(real.arrays, opts.part, cfg.packing),
    }
    metrics["classifier_is"] = _classifier_is(fx, part_vols, progress, opts.seed)
    ms = msssim_config(part_vols["real"].shape[2:])
    metrics[ms.pop("key")] = {
        **ms,
        **{k: pairwise_msssim(v, opts.msssim_pairs, opts.seed) for k, v in part_vols.items()},
        "note": "mean pairwise MS-SSIM within each set; higher = less diverse",
    }

    # privacy: synthetic -> GAN training cases vs held-out real -> training cases
    privacy: dict[str, Any] = {"overlap_real_split_with_training": overlap}
    tables = []
    if len(holdout.ids) and len(train.ids):
        spaces = {
            "feature": (
                f_syn,
                f_train,
                _extract(fx, holdout, opts.part, cfg.packing, "holdout", False),
            ),
            "voxel": tuple(
                voxel_vectors(select_part(v.arrays, opts.part, cfg.packing))
                for v in (syn, train, holdout)
            ),
        }
        for space, (a, b, c) in spaces.items():
            summ, tab = dcr_report(a, b, c, syn.ids, train.ids, holdout.ids, opts.dcr_quantile)
            privacy[space] = summ
            tables.append(tab.assign(space=space))
        privacy["gallery"] = gallery(tables[1])
        privacy["gallery_space"] = (
            "voxel (RMS difference of [-1, 1] volumes, block-averaged to <= 32^3)"
        )
    else:
        privacy["skipped"] = "no held-out real cases outside the GAN's training cases in this split"
    metrics["privacy"] = privacy

    # statistics from HU images and masks
    r_hu, r_mask = real_hu_and_masks(real, cfg)
    real_stats = pd.DataFrame(
        [case_statistics(h, mk, real.spacing) for h, mk in zip(r_hu, r_mask, strict=True)]
    ).assign(id=real.ids, group=f"real-{opts.real}")
    syn_stats = pd.DataFrame(
        [case_statistics(h, mk, syn.spacing) for h, mk in zip(syn_hu, syn_masks, strict=True)]
    ).assign(id=syn.ids, group="synthetic")
    r_hist, s_hist = hu_histogram(r_hu), hu_histogram(syn_hu)
    metrics["statistics"] = compare_sets(real_stats, syn_stats, r_hist, s_hist)

    # joint embedding: training cases, the real split (minus duplicates), synthetic
    keep_real = [i for i, c in enumerate(real.ids) if c not in set(train.ids)]
    emb = compute_embedding(
        np.vstack([f_train, f_real[keep_real], f_syn]),
        train.ids + [real.ids[i] for i in keep_real] + syn.ids,
        ["real-train"] * len(train.ids)
        + [f"real-{opts.real}"] * len(keep_real)
        + ["synthetic"] * len(syn.ids),
        seed=opts.seed,
    )

    volume_opts = {k: v for k, v in asdict(opts).items() if k not in SLICE_OPTIONS}
    settings = {
        **volume_opts,  # same ids as before the slice-level options existed
        "extractor_sha256": info["weights_sha256"],
        "real_ids": case_ids_hash(real.ids),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[
        :8
    ]
    eval_id = f"{opts.synthetic}-{opts.part}-{opts.extractor}-{digest}"
    from synthct import __version__

    result = {
        "id": eval_id,
        "level": "volume",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "synthct_version": __version__,
        "convention": "n = real samples, m = synthetic samples, d = feature dimension",
        "options": {**asdict(opts), "level": "volume"},
        "data_config": to_dict(cfg),
        "extractor": info,
        "model": {"kind": card.model.kind, "data_view": card.model.data_view},
        "synthetic": {
            "set": opts.synthetic,
            "m": len(syn.ids),
            "m_cases": len(syn.ids),
            "ids_sha256": case_ids_hash(syn.ids),
        },
        "real": {
            "split": opts.real,
            "n": len(real.ids),
            "n_cases": len(real.ids),
            "ids_sha256": case_ids_hash(real.ids),
        },
        "train": {"n": len(train.ids), "ids_sha256": case_ids_hash(train.ids)},
        "holdout": {"n": len(holdout.ids)},
        "metrics": metrics,
    }
    final = ws.eval_dir(eval_id)
    with atomic_dir(final, overwrite=True) as tmp:
        atomic_write_json(tmp / "metrics.json", result)
        _csv(tmp / "embedding.csv", emb)
        if tables:
            _csv(tmp / "privacy.csv", pd.concat(tables, ignore_index=True))
        _csv(tmp / "case_stats.csv", pd.concat([real_stats, syn_stats], ignore_index=True))
        edges = np.asarray(metrics["statistics"]["hu_body"]["bins"])
        _csv(
            tmp / "hu_histogram.csv",
            pd.DataFrame(
                {"hu_low": edges[:-1], "hu_high": edges[1:], "real": r_hist, "synthetic": s_hist}
            ),
        )
    record_in_datacard(set_dir, result)
    return final, result


# -- HPO hook ------------------------------------------------------------------------------------
def fid_for_generator(
    system,
    cfg: DataConfig,
    real: VolumeSet,
    extractor: FeatureExtractor,
    n: int = 64,
    part: str = "pair",
    seed: int = 0,
    batch_size: int = 4,
) -> dict[str, Any]:
    """FID of `n` fresh samples of a volume model vs real packed pairs, in `extractor` space."""
    import torch

    tensors = [*system.parameters(), *system.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    for i in range(0, n, batch_size):
        z = system.sample_latent(min(batch_size, n - i), generator=gen, device=device)
        vol = system.generate(z).clamp(-1, 1).float().cpu().numpy()
        chunks.append(vol[:, 0] if vol.ndim == 5 else vol)
    fake = np.concatenate(chunks)
    f_fake = extractor.extract(select_part(fake, part, cfg.packing))
    f_real = extractor.extract(select_part(real.arrays, part, cfg.packing))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        raw = dist.compute_fid(f_real, f_fake)
    return {
        "fid": max(raw, 0.0),
        "fid_raw": raw,
        "n": len(f_real),
        "m": len(f_fake),
        "d": f_real.shape[1],
        "part": part,
        "extractor": {k: extractor.describe()[k] for k in ("name", "version", "weights_sha256")},
    }


def fid_for_run(
    ws: Workspace,
    run: str,
    checkpoint: str | int = "latest",
    *,
    n: int = 64,
    real_split: str = "val",
    extractor: str = "default",
    weights: str | None = None,
    part: str = "pair",
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """FID of a run's checkpoint (EMA generator) vs the real `real_split`, for HPO ranking.

    Returns {"fid", "fid_raw", "n", "m", "d", "part", "extractor", "run", "checkpoint", "real_split"}.
    """

    from synthct.checkpoint import load_generator

    run_dir = ws.run_dir(check_name(run, "run name"))
    dev = pick_device(device)
    system, run_cfg, meta = load_generator(run_dir, checkpoint, ema=True, device=dev)
    cfg = run_cfg.data
    real = load_real_set(ws, cfg, real_split)
    fx = get_extractor(ws, cfg, extractor, part, weights, seed=seed, progress=False)
    out = fid_for_generator(system, cfg, real, fx, n=n, part=part, seed=seed)
    out.update(
        run=run,
        checkpoint={"step": meta.get("step"), "sha256": meta.get("sha256")},
        real_split=real_split,
    )
    return out
