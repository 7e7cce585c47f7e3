"""Sample a trained generator into a synthetic data set (HECKTOR layout) with its dataset card.

The set's layout and card are described in `synthct.sets`; `synthct.set_writer` writes its files.

Reproducibility: case i draws its latent from its own seed (`case_seed(base, i, attempt)`), so a
case can be regenerated alone (`generate_case`) and the set does not depend on the batch size.
The same command on the same machine gives byte-identical files; across batch sizes or devices
the latents are identical and the outputs agree up to the backend's float rounding of batched
convolutions (~1e-6 in [-1, 1]: at most 1 HU, and a mask voxel only where the output is ~0).

Postprocessing: the model's view turns generator output into image HU and mask volumes
(`DataView.to_volumes`: packed pairs are unpacked into S x S x S/2 halves, 2D slice pairs into
one-slice (R, R, 1) volumes or a mosaic's stack) with the voxel size it states
(`DataView.output_spacing`); the mask is optionally filtered by connected components
(scipy.ndimage.label), and empty masks are handled by a stated policy (keep, drop or resample
with bounded redraws). The set folder appears only when complete (`atomic_dir`).

Memory does not grow with the number of cases: case indices are drawn as they are needed
(redraws first, so at most a few batches of cases are ever pending) and finished cases go to the
writer's record file on disk (`SetWriter`).

The sampling loop is hand-written because it is specific to this product: per-case seeds,
out-of-memory batch halving and empty-mask redraws.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from synthct import __version__
from synthct.checkpoint import load_generator
from synthct.config import RunConfig, to_dict
from synthct.errors import ConfigError, SynthctError, WorkspaceError
from synthct.io import spacing_affine
from synthct.models.base import GenerativeModel
from synthct.preprocess import load_packed
from synthct.runtime import case_ids_hash, pick_device
from synthct.set_writer import SetWriter
from synthct.sets import CheckpointInfo, Datacard, TrainingCases
from synthct.workspace import Workspace, atomic_dir, read_json

Progress = Callable[[float, str], None]

FORMATS = ("nifti", "png")
EMPTY_POLICIES = ("keep", "drop", "resample")


class GenerationError(SynthctError):
    """Sampling cannot proceed (e.g. out of GPU memory even at batch size 1)."""


@dataclass(frozen=True)
class GenerateConfig:
    """How a set is sampled and postprocessed (recorded in the dataset card).

    mask_postprocess: "binary" (mask > 0 only) | "largest" (keep the largest connected
        component) | "min-size:K" (drop components smaller than K voxels).
    empty_masks: "keep" | "drop" (the set then has fewer cases) | "resample" (redraw new seeds
        for that case until its mask is non-empty, at most `max_redraws` times; a case still
        empty after that is kept and counted as `resample_exhausted`).
    """

    n: int
    seed: int = 0
    batch_size: int = 4
    mask_postprocess: str = "binary"
    empty_masks: str = "keep"
    max_redraws: int = 10
    centre: str | None = None
    write_workers: int = 3
    format: str = "nifti"  # "png": also imagesPng/<id>.png + labelsPng/<id>.png (2D sets)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"number of cases must be >= 1, got {self.n}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.empty_masks not in EMPTY_POLICIES:
            raise ConfigError(
                f"empty-mask policy {self.empty_masks!r} is not valid; expected one of {EMPTY_POLICIES}"
            )
        if self.format not in FORMATS:
            raise ConfigError(f"format {self.format!r} is not valid; expected one of {FORMATS}")
        if self.max_redraws < 0:
            raise ConfigError(f"max_redraws must be >= 0, got {self.max_redraws}")
        parse_mask_postprocess(self.mask_postprocess)


# -- pure helpers ---------------------------------------------------------------------------------
def case_seed(base_seed: int, index: int, attempt: int = 0) -> int:
    """The seed of case `index` (0-based) at draw `attempt` (0 = first draw, >0 = redraws).

    Derived with numpy's SeedSequence so seeds of different cases and redraws never collide in
    practice; 63-bit so it fits JSON integers and `torch.Generator.manual_seed`.
    """
    state = np.random.SeedSequence([int(base_seed), int(index), int(attempt)]).generate_state(
        1, np.uint64
    )
    return int(state[0] >> np.uint64(1))


def parse_mask_postprocess(spec: str) -> tuple[str, int]:
    """ "binary" -> ("binary", 0); "largest" -> ("largest", 0); "min-size:K" -> ("min-size", K)."""
    if spec in ("binary", "largest"):
        return spec, 0
    if spec.startswith("min-size:"):
        raw = spec.split(":", 1)[1]
        if raw.isdigit() and int(raw) >= 1:
            return "min-size", int(raw)
    raise ConfigError(
        f"mask postprocess {spec!r} is not valid; expected binary, largest or min-size:K (K >= 1 voxels)"
    )


def postprocess_mask(mask: np.ndarray, spec: str = "binary") -> tuple[np.ndarray, int]:
    """Connected-component filtering of one mask (X, Y, Z) uint8; returns (mask, components removed).

    Components are 26-connected foreground (mask > 0) regions; removed voxels become 0, kept voxels
    keep their label (so multiclass masks stay multiclass).
    """
    mode, min_size = parse_mask_postprocess(spec)
    if mode == "binary":
        return mask, 0
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return mask, 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if mode == "largest":
        keep = np.zeros(n + 1, dtype=bool)
        keep[1 + int(np.argmax(sizes))] = True
    else:
        keep = np.concatenate([[False], sizes >= min_size])
    out = np.where(keep[labels], mask, 0).astype(mask.dtype, copy=False)
    return out, int(n - (keep.sum()))


def to_hu_int16(image_hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Round an HU image to int16 inside the window (the window bounds the generator's range)."""
    lo, hi = hu_window
    return np.rint(np.clip(image_hu, lo, hi)).astype(np.int16)


# -- sampling -------------------------------------------------------------------------------------
def _latents(model: GenerativeModel, seeds: list[int], device: torch.device) -> torch.Tensor:
    """(B, …) latents, row i from seed i alone on a CPU generator (device-independent)."""
    rows = [
        model.sample_latent(1, generator=torch.Generator().manual_seed(s), device="cpu")
        for s in seeds
    ]
    return torch.cat(rows).to(device)


def _centre_for(seed: int, n_centres: int, fixed: int | None) -> int | None:
    """Centre label for a conditional model: the requested one, else drawn from the case seed."""
    if n_centres <= 0:
        return None
    if fixed is not None:
        return fixed
    return int(np.random.default_rng(seed).integers(n_centres))


def sample_pairs(
    model: GenerativeModel,
    seeds: list[int],
    device: torch.device | str = "cpu",
    centres: list[int | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one batch as volumes: (image_hu (B, X, Y, Z) float32, mask uint8), the layout of
    the model's view (`DataView.to_volumes`: (S, S, S/2) halves, or (R, R, 1) slices)."""
    device = torch.device(device)
    z = _latents(model, seeds, device)
    centre = None
    if centres is not None and any(c is not None for c in centres):
        centre = torch.tensor([int(c) for c in centres], dtype=torch.long, device=device)
    out = model.generate(z, centre) if centre is not None else model.generate(z)
    return model.view.to_volumes(out.detach().float().cpu().numpy())


def generate_case(
    model: GenerativeModel,
    seed: int,
    device: torch.device | str = "cpu",
    mask_postprocess: str = "binary",
    centre: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Regenerate one case from its recorded seed: (image int16 HU, mask uint8) in the layout of
    the model's view ((S, S, S/2) for volume models, (R, R, 1) or a mosaic's stack for 2D)."""
    centre = _centre_for(seed, model.n_centres, centre)
    image_hu, mask = sample_pairs(model, [seed], device, [centre])
    m, _ = postprocess_mask(mask[0], mask_postprocess)
    return to_hu_int16(image_hu[0], model.view.data_cfg.hu_window), m


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


def write_set(
    out_dir: str | os.PathLike,
    model: GenerativeModel,
    spacing: tuple[float, float, float],
    options: GenerateConfig,
    device: torch.device | str = "cpu",
    centre_index: int | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Datacard:
    """Sample `options.n` pairs from `model` into `out_dir` (atomically); returns the datacard
    without its per-case list (which datacard.json holds; see the module notes).

    `spacing` (mm, x y z) is the voxel size of the written volumes (`DataView.output_spacing` of
    the packed grid's); it goes into every affine. `provenance` holds the run-level datacard
    fields (run, checkpoint, run_config, training_cases, centre, model). A CUDA out-of-memory
    error halves the batch (down to 1) and retries. Memory stays flat in `options.n`.
    """
    view, out_dir, device = model.view, Path(out_dir), torch.device(device)
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    if len(spacing) != 3 or not all(s > 0 and np.isfinite(s) for s in spacing):
        raise ConfigError(f"spacing must be three positive mm values, got {spacing}")
    if options.format == "png" and not view.supports_png():
        raise ConfigError(
            "--format png writes one PNG per slice pair: it is for 2D slice models (fastgan, "
            f"stylegan2 on slices), not {model.kind!r} {view.sample_name()}s"
        )
    png_window = tuple(view.data_cfg.hu_window) if options.format == "png" else None
    report = progress or (lambda _f, _m: None)
    model.eval()
    counts = dict.fromkeys(COUNTS, 0) | {"requested": options.n}
    affine = spacing_affine(spacing)  # type: ignore[arg-type]
    with (
        atomic_dir(out_dir, overwrite=overwrite) as tmp,
        SetWriter(tmp, affine, options.n, png_window, options.write_workers) as writer,
    ):
        batch = _sample_into(writer, model, options, device, centre_index, counts, report)
        counts["written"] = writer.written
        card = _datacard(out_dir.name, model, options, counts, batch, spacing, device,
                         provenance or {})  # fmt: skip
        writer.finish(card)
    report(1.0, f"{counts['written']} pairs written to {out_dir}")
    return card


COUNTS = ("requested", "written", "empty_masks_sampled", "empty_masks_kept", "dropped",
          "redraws", "resample_exhausted", "components_removed")  # fmt: skip


def _sample_into(
    writer: SetWriter,
    model: GenerativeModel,
    options: GenerateConfig,
    device: torch.device,
    centre_index: int | None,
    counts: dict[str, int],
    report: Progress,
) -> int:
    """The sampling loop: batches of (case, attempt) items, out-of-memory halving, the
    empty-mask policy per case; finished cases go to `writer`. Returns the batch size used."""
    batch, work = options.batch_size, _CaseQueue(options.n)
    while items := work.take(batch):
        seeds = [case_seed(options.seed, i, a) for i, a in items]
        centres = [_centre_for(s, model.n_centres, centre_index) for s in seeds]
        try:
            with torch.no_grad():
                images, masks = sample_pairs(model, seeds, device, centres)
        except Exception as e:
            if not _is_oom(e):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch == 1:
                raise GenerationError(
                    f"out of GPU memory generating one {model.view.sample_name()} on {device}; "
                    "free the GPU or use --device cpu"
                ) from None
            batch = max(1, batch // 2)
            work.put_back(items)
            warnings.warn(f"out of memory: retrying with batch size {batch}", stacklevel=3)
            continue
        for k, (i, attempt) in enumerate(items):
            mask, removed = postprocess_mask(masks[k], options.mask_postprocess)
            counts["components_removed"] += removed
            action = _empty_mask_action(bool(mask.any()), attempt, options, counts)
            if action == "redraw":
                work.redraw(i, attempt + 1)
            elif action == "drop":
                writer.drop(i)
            else:
                record = {"index": i, "seed": seeds[k], "redraws": attempt,
                          "centre": centres[k], "mask_voxels": int(np.count_nonzero(mask))}  # fmt: skip
                image = to_hu_int16(images[k], model.view.data_cfg.hu_window)
                writer.add(i, record, image, mask, backlog=2 * writer.workers + batch)
        report(
            min(1.0, writer.finished / options.n) * 0.98,
            f"{writer.finished}/{options.n} pairs sampled",
        )
    writer.drain(0)
    return batch


def _empty_mask_action(
    has_tumour: bool, attempt: int, options: GenerateConfig, counts: dict[str, int]
) -> str:
    """ "keep" | "drop" | "redraw" for a sampled case under the empty-mask policy (counted)."""
    if has_tumour:
        return "keep"
    counts["empty_masks_sampled"] += 1
    if options.empty_masks == "resample":
        if attempt < options.max_redraws:
            counts["redraws"] += 1
            return "redraw"
        counts["resample_exhausted"] += 1
    if options.empty_masks == "drop":
        counts["dropped"] += 1
        return "drop"
    counts["empty_masks_kept"] += 1
    return "keep"


def _datacard(name, model, options, counts, batch, spacing, device, provenance) -> Datacard:
    """The set's card, without its per-case list (the writer streams it)."""
    data_cfg = model.view.data_cfg
    tc, ck = provenance.get("training_cases"), provenance.get("checkpoint")
    model_info = {"kind": model.kind, "size": int(data_cfg.size),
                  "latent_dim": int(model.latent_dim), **provenance.get("model", {}),
                  "data_view": model.view.name, **model.view.card_fields()}  # fmt: skip
    return Datacard(
        name=name,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        synthct_version=__version__,
        run=provenance.get("run"),
        checkpoint=None if ck is None else CheckpointInfo(**ck),
        run_config=provenance.get("run_config"),
        training_cases=None if tc is None else TrainingCases(
            tc.get("split"), tuple(tc.get("case_ids") or ()), tc.get("sha256")),
        centre=provenance.get("centre"),
        model=Datacard.from_json({"model": model_info}).model,
        base_seed=options.seed,
        counts=dict(counts),
        postprocess={
            "mask": options.mask_postprocess,
            "empty_masks": options.empty_masks,
            "max_redraws": options.max_redraws,
            "hu_window": list(data_cfg.hu_window),
            "packing": data_cfg.packing,
            "mask_mode": data_cfg.mask,
            "image_dtype": "int16",
            "mask_dtype": "uint8",
        },
        options=asdict(options),
        device=str(device),
        batch_size_used=batch,
        spacing=tuple(spacing),
        shape=tuple(model.view.output_shape()),
    )  # fmt: skip


# -- the order cases are sampled in ----------------------------------------------------------
class _CaseQueue:
    """Work items (case index, attempt), produced on demand: cases put back after an
    out-of-memory retry, then redraws, then fresh indices. Redraws come before fresh cases, so
    the items held never exceed a few batches, whatever n is."""

    def __init__(self, n: int) -> None:
        self.n, self.next_index = n, 0
        self.waiting: deque[tuple[int, int]] = deque()

    def take(self, k: int) -> list[tuple[int, int]]:
        items = []
        while self.waiting and len(items) < k:
            items.append(self.waiting.popleft())
        while self.next_index < self.n and len(items) < k:
            items.append((self.next_index, 0))
            self.next_index += 1
        return items

    def put_back(self, items: list[tuple[int, int]]) -> None:
        self.waiting.extendleft(reversed(items))

    def redraw(self, index: int, attempt: int) -> None:
        self.waiting.append((index, attempt))


# -- from a run -----------------------------------------------------------------------------------
def load_training_cases(run_dir: Path) -> dict[str, Any]:
    """The run's train_cases.json, with its SHA-256 checked against the listed case ids."""
    path = run_dir / "train_cases.json"
    if not path.is_file():
        raise WorkspaceError(
            f"{path} is missing: the run must record its training cases so synthetic sets can be "
            "checked for leakage"
        )
    data = read_json(path)
    ids = data.get("case_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list):
        raise WorkspaceError(
            f"{path}: expected {{'split', 'case_ids', 'sha256'}}, got {data!r:.200}"
        )
    digest = case_ids_hash(ids)
    if data.get("sha256") and data["sha256"] != digest:
        raise WorkspaceError(
            f"{path}: sha256 {data['sha256']} does not match its case ids (computed {digest})"
        )
    return {"split": data.get("split"), "sha256": digest, "case_ids": sorted(map(str, ids))}


def packed_spacing(
    ws: Workspace, run_cfg: RunConfig, *sources: dict[str, Any]
) -> tuple[float, float, float]:
    """Voxel spacing (mm) of the packed grid the run trained on: the first `spacing` recorded in
    `sources` (checkpoint meta, train_cases.json), else the packed set's (`load_packed`)."""
    for src in sources:
        if isinstance(src, dict) and src.get("spacing") is not None:
            return tuple(float(s) for s in src["spacing"])  # type: ignore[return-value]
    split = run_cfg.train.split
    return tuple(float(s) for s in load_packed(ws, run_cfg.data, split=split).spacing)


def _centre_index(centre: str | None, centres: list[str] | None, n_centres: int) -> int | None:
    if centre is None:
        return None
    if n_centres <= 0:
        raise ConfigError(f"--centre {centre} given but the model is not centre-conditioned")
    if not centres or centre not in centres:
        raise ConfigError(f"centre {centre!r} is not one of the run's centres {centres}")
    return centres.index(centre)


def generate_from_run(
    ws: Workspace,
    run: str,
    out: str,
    options: GenerateConfig,
    checkpoint: str | int = "latest",
    ema: bool = True,
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """`synthct generate`: load a run's checkpoint and write WS/synthetic/<out>/; returns the folder."""
    return sample_from_run(
        ws, run, out, options, checkpoint, ema=ema, device=device, overwrite=overwrite,
        progress=progress,
    )[0]  # fmt: skip


def sample_from_run(
    ws: Workspace,
    run: str,
    out: str,
    options: GenerateConfig,
    checkpoint: str | int = "latest",
    ema: bool = True,
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[Path, Datacard]:
    """`generate_from_run`, also returning the datacard without its per-case list (counts,
    provenance), so a caller never has to load a possibly huge datacard.json back."""
    run_dir, out_dir = ws.run_dir(run), ws.synthetic_dir(out)
    if not run_dir.is_dir():
        raise WorkspaceError(f"run {run!r} not found in {ws.runs}")
    if out_dir.exists() and not overwrite:
        raise WorkspaceError(
            f"synthetic set {out_dir} already exists; choose another name or pass --overwrite"
        )
    training = load_training_cases(run_dir)
    recorded = read_json(run_dir / "train_cases.json")  # may also hold spacing and centres
    dev = pick_device(device)
    model, run_cfg, meta = load_generator(run_dir, checkpoint, ema=ema, device=dev)
    spacing = model.view.output_spacing(packed_spacing(ws, run_cfg, meta, recorded))
    centres = meta.get("centres") or recorded.get("centres")
    centre_index = _centre_index(options.centre, centres, model.n_centres)
    provenance = {
        "run": run,
        "checkpoint": {
            "path": str(meta.get("path")),
            "step": meta.get("step"),
            "sha256": meta.get("sha256"),
            "ema": bool(meta.get("ema", ema)),
        },
        "run_config": to_dict(run_cfg),
        "training_cases": training,
        "centre": options.centre,
        "model": {"kind": run_cfg.model.kind, "size": int(run_cfg.data.size)},
    }
    card = write_set(
        out_dir,
        model,
        spacing,
        options,
        device=dev,
        centre_index=centre_index,
        provenance=provenance,
        overwrite=overwrite,
        progress=progress,
    )
    return out_dir, card
