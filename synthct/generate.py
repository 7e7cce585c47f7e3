"""Sample a trained generator into a synthetic data set (HECKTOR layout) with its dataset card.

A set is written to WS/synthetic/<set>/::

    imagesTr/SYN-0001__CT.nii.gz   int16 HU on the packed grid's real voxel spacing
    labelsTr/SYN-0001.nii.gz       uint8 tumour mask ({0, 1}; {0, 1, 2} for multiclass runs)
    datacard.json                  provenance: checkpoint hash, run config, seeds, counts,
                                   postprocessing, the training case ids (leakage checks), metrics

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
(redraws first, so at most a few batches of cases are ever pending), finished cases go to a
temporary list on disk in case order, and the datacard is written from it as a stream. A set
of 10^6 cases has a datacard of ~150 MB on disk; `write_set` returns the card without its
per-case lists (`cases`, `seeds`), which only the file holds.

The sampling loop is hand-written because it is specific to this product: per-case seeds,
out-of-memory batch halving and a bounded thread pool for gzip-compressed NIfTI writing (zlib
releases the GIL, so a few threads overlap compression with sampling).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synthct.errors import ConfigError, SynthctError, WorkspaceError
from synthct.io import Volume, load_volume, save_png, save_volume, spacing_affine
from synthct.runtime import case_ids_hash, pick_device
from synthct.workspace import (
    Workspace,
    atomic_dir,
    atomic_write,
    atomic_write_json,
    check_name,
    read_json,
)

if TYPE_CHECKING:
    import torch

    from synthct.config import RunConfig
    from synthct.models.base import GenerativeModel

Progress = Callable[[float, str], None]

DATACARD = "datacard.json"
IMAGES = "imagesTr"
LABELS = "labelsTr"
PNG_IMAGES = "imagesPng"  # optional previews of 2D sets (--format png)
PNG_LABELS = "labelsPng"
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
    from scipy import ndimage

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
    import torch

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
    import torch

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
    import torch

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
) -> dict[str, Any]:
    """Sample `options.n` pairs from `model` into `out_dir` (atomically); returns the datacard
    without its per-case lists (`cases`, `seeds`: in datacard.json only, see the module notes).

    `spacing` (mm, x y z) is the voxel size of the written volumes (`DataView.output_spacing` of
    the packed grid's); it goes into every affine. `provenance` holds the run-level datacard
    fields (run, checkpoint, run_config, training_cases, …). A CUDA out-of-memory error halves
    the batch (down to 1) and retries. Memory stays flat in `options.n`.
    """
    import torch

    view = model.view
    data_cfg = view.data_cfg
    out_dir = Path(out_dir)
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    if len(spacing) != 3 or not all(s > 0 and np.isfinite(s) for s in spacing):
        raise ConfigError(f"spacing must be three positive mm values, got {spacing}")
    affine = spacing_affine(spacing)  # type: ignore[arg-type]
    device = torch.device(device)
    if options.format == "png" and not view.supports_png():
        raise ConfigError(
            "--format png writes one PNG per slice pair: it is for 2D slice models (fastgan, "
            f"stylegan2 on slices), not {model.kind!r} {view.sample_name()}s"
        )
    png = options.format == "png"
    png_window = tuple(data_cfg.hu_window) if png else None
    width = max(4, len(str(options.n)))
    model.eval()

    counts = {
        "requested": options.n,
        "written": 0,
        "empty_masks_sampled": 0,
        "empty_masks_kept": 0,
        "dropped": 0,
        "redraws": 0,
        "resample_exhausted": 0,
        "components_removed": 0,
    }
    batch = options.batch_size
    report = progress or (lambda _f, _m: None)

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / IMAGES).mkdir()
        (tmp / LABELS).mkdir()
        if png:
            (tmp / PNG_IMAGES).mkdir()
            (tmp / PNG_LABELS).mkdir()
        workers = max(1, options.write_workers)
        pool = ThreadPoolExecutor(max_workers=workers)
        pending: set[Future] = set()
        work = _CaseQueue(options.n)
        ordered = _OrderedRecords(tmp / _RECORDS)

        def drain(limit: int) -> None:
            while len(pending) > limit:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    pending.discard(f)
                    f.result()  # re-raise a write error here, inside atomic_dir

        try:
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
                            f"out of GPU memory generating one {view.sample_name()} on {device}; "
                            "free the GPU or use --device cpu"
                        ) from None
                    batch = max(1, batch // 2)
                    work.put_back(items)
                    warnings.warn(f"out of memory: retrying with batch size {batch}", stacklevel=2)
                    continue
                for k, (i, attempt) in enumerate(items):
                    mask, removed = postprocess_mask(masks[k], options.mask_postprocess)
                    counts["components_removed"] += removed
                    empty = not mask.any()
                    counts["empty_masks_sampled"] += int(empty)
                    if empty and options.empty_masks == "resample":
                        if attempt < options.max_redraws:
                            counts["redraws"] += 1
                            work.redraw(i, attempt + 1)
                            continue
                        counts["resample_exhausted"] += 1
                    if empty and options.empty_masks == "drop":
                        counts["dropped"] += 1
                        ordered.add(i, None)
                        continue
                    counts["empty_masks_kept"] += int(empty)
                    name = f"SYN-{i + 1:0{width}d}"
                    image = to_hu_int16(images[k], data_cfg.hu_window)
                    ordered.add(
                        i,
                        {
                            "index": i,
                            "seed": seeds[k],
                            "redraws": attempt,
                            "centre": centres[k],
                            "mask_voxels": int(np.count_nonzero(mask)),
                            "_name": name,
                        },
                    )
                    pending.add(
                        pool.submit(_write_pair, tmp, name, image, mask, affine, png_window)
                    )
                    drain(2 * workers + batch)
                report(
                    min(1.0, ordered.finished / options.n) * 0.98,
                    f"{ordered.finished}/{options.n} pairs sampled",
                )
            drain(0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            ordered.close()

        counts["written"] = ordered.written
        head = {
            "name": out_dir.name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "synthct_version": _version(),
            **(provenance or {}),
            "model": {
                "kind": model.kind,
                "size": int(data_cfg.size),
                "latent_dim": int(model.latent_dim),
                **(provenance or {}).get("model", {}),
                **view.card_fields(),
            },
        }
        tail = {
            "base_seed": options.seed,
            "counts": counts,
            "postprocess": {
                "mask": options.mask_postprocess,
                "empty_masks": options.empty_masks,
                "max_redraws": options.max_redraws,
                "hu_window": list(data_cfg.hu_window),
                "packing": data_cfg.packing,
                "mask_mode": data_cfg.mask,
                "image_dtype": "int16",
                "mask_dtype": "uint8",
            },
            "options": asdict(options),
            "device": str(device),
            "batch_size_used": batch,
            "spacing": list(spacing),
            "shape": view.output_shape(),
            "metrics": {},
        }
        records = tmp / _RECORDS
        _renumber(tmp, records, width, png)
        _write_datacard(tmp / DATACARD, head, records, tail)
        records.unlink()
    report(1.0, f"{counts['written']} pairs written to {out_dir}")
    return {**head, **tail}


# -- bounded bookkeeping of a set being written ---------------------------------------------------
_RECORDS = ".cases.jsonl"  # finished cases in index order, while the set is written


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


class _OrderedRecords:
    """Finished cases appended to a JSON-lines file in case-index order. Cases finish slightly
    out of order (a redraw finishes after later cases), so those ahead of the next expected
    index wait here — at most a few batches' worth of small dicts. `None` marks a dropped case.
    """

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.waiting: dict[int, dict[str, Any] | None] = {}
        self.next, self.finished, self.written = 0, 0, 0

    def add(self, index: int, record: dict[str, Any] | None) -> None:
        self.waiting[index] = record
        self.finished += 1
        while self.next in self.waiting:
            rec = self.waiting.pop(self.next)
            if rec is not None:
                self.file.write(json.dumps(rec) + "\n")
                self.written += 1
            self.next += 1

    def close(self) -> None:
        self.file.close()


def _iter_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _write_datacard(path: Path, head: dict[str, Any], records: Path, tail: dict[str, Any]) -> None:
    """datacard.json as `json.dumps(card, indent=2)` would write it, with the per-case lists
    (`seeds`, `cases`) streamed from `records` rather than built in memory."""

    def field(key: str, value: Any) -> str:
        body = json.dumps(value, indent=2, default=str).replace("\n", "\n  ")
        return f"  {json.dumps(key)}: {body}"

    def streamed(f, key: str, items: Iterator[Any]) -> None:
        f.write(f"  {json.dumps(key)}: [".encode())
        first = True
        for item in items:
            body = json.dumps(item, indent=2, default=str).replace("\n", "\n    ")
            f.write(("\n    " if first else ",\n    ").encode() + body.encode())
            first = False
        f.write(b"]" if first else b"\n  ]")

    def write(f) -> None:
        f.write(b"{\n")
        f.write(",\n".join(field(k, v) for k, v in head.items()).encode() + b",\n")
        streamed(f, "seeds", (r["seed"] for r in _iter_records(records)))
        f.write(f",\n{field('base_seed', tail['base_seed'])},\n".encode())
        streamed(f, "cases", _iter_records(records))
        rest = {k: v for k, v in tail.items() if k != "base_seed"}
        f.write(b",\n" + ",\n".join(field(k, v) for k, v in rest.items()).encode() + b"\n}\n")

    atomic_write(path, write)


def slice_pngs(
    image: np.ndarray, mask: np.ndarray, hu_window: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """One-slice pair (X, Y, 1) -> (CT grey uint8 (Y, X): the HU window as 0..255, mask 0/255),
    radiologically oriented (anterior up, patient left on the right)."""
    from synthct.display import Window, extract_slice, window_to_uint8

    lo, hi = hu_window
    grey = window_to_uint8(extract_slice(image, "axial", 0), Window((lo + hi) / 2, hi - lo))
    return grey, np.where(extract_slice(mask, "axial", 0) > 0, 255, 0).astype(np.uint8)


def _write_pair(
    folder: Path,
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    png_window: tuple[float, float] | None = None,
) -> None:
    save_volume(Volume(image, affine), folder / IMAGES / f"{name}__CT.nii.gz", dtype=np.int16)
    save_volume(Volume(mask, affine), folder / LABELS / f"{name}.nii.gz", dtype=np.uint8)
    if png_window is not None:
        grey, label = slice_pngs(image, mask, png_window)
        save_png(grey, folder / PNG_IMAGES / f"{name}.png")
        save_png(label, folder / PNG_LABELS / f"{name}.png")


def _renumber(folder: Path, records: Path, width: int, png: bool = False) -> None:
    """Give the written cases contiguous ids SYN-0001… in case order (gaps appear after drops),
    renaming their files, and rewrite `records` with each case's final `case_id` (streamed)."""
    final = records.with_name(records.name + ".final")
    with open(final, "w", encoding="utf-8") as out:
        for k, c in enumerate(_iter_records(records)):
            old, new = c.pop("_name"), f"SYN-{k + 1:0{width}d}"
            if old != new:
                os.replace(
                    folder / IMAGES / f"{old}__CT.nii.gz", folder / IMAGES / f"{new}__CT.nii.gz"
                )
                os.replace(folder / LABELS / f"{old}.nii.gz", folder / LABELS / f"{new}.nii.gz")
                if png:
                    for sub in (PNG_IMAGES, PNG_LABELS):
                        os.replace(folder / sub / f"{old}.png", folder / sub / f"{new}.png")
            out.write(json.dumps({"case_id": new, **c}) + "\n")
    os.replace(final, records)


def _version() -> str:
    from synthct import __version__

    return __version__


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
    from synthct.preprocess import load_packed

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
) -> tuple[Path, dict[str, Any]]:
    """`generate_from_run`, also returning the datacard without its per-case lists (counts,
    provenance), so a caller never has to load a possibly huge datacard.json back."""
    from synthct.checkpoint import load_generator
    from synthct.config import to_dict

    run_dir = ws.run_dir(check_name(run, "run name"))
    out_dir = ws.synthetic_dir(check_name(out, "set name"))
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


# -- reading sets ---------------------------------------------------------------------------------
def list_sets(ws: Workspace) -> list[str]:
    """Names of complete synthetic sets (folders with a datacard), sorted."""
    if not ws.synthetic.is_dir():
        return []
    return sorted(
        p.name
        for p in ws.synthetic.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / DATACARD).is_file()
    )


def load_datacard(set_dir: str | os.PathLike) -> dict[str, Any]:
    """The set's datacard.json as a dict (WorkspaceError naming the file when missing/invalid)."""
    card = read_json(Path(set_dir) / DATACARD)
    if not isinstance(card, dict):
        raise WorkspaceError(f"{Path(set_dir) / DATACARD}: expected a JSON object")
    return card


def update_datacard(set_dir: str | os.PathLike, key: str, value: Any) -> dict[str, Any]:
    """Set `card[key] = value` atomically; a lock file serialises concurrent updaters."""
    set_dir = Path(set_dir)
    path = set_dir / DATACARD
    if not path.is_file():
        raise WorkspaceError(f"{path} does not exist: {set_dir} is not a synthetic set")
    with open(set_dir / ".datacard.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            card = load_datacard(set_dir)
            card[key] = value
            atomic_write_json(path, card)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_UN)
    return card


def load_synthetic_pair(set_dir: str | os.PathLike, case_id: str) -> tuple[Volume, Volume]:
    """(image in HU as float32 Volume (X, Y, Z), mask as uint8 Volume) of one synthetic case."""
    set_dir = Path(set_dir)
    check_name(case_id, "case id")
    image = set_dir / IMAGES / f"{case_id}__CT.nii.gz"
    label = set_dir / LABELS / f"{case_id}.nii.gz"
    for p in (image, label):
        if not p.is_file():
            raise WorkspaceError(f"synthetic case {case_id!r}: {p} does not exist")
    return load_volume(image, dtype=np.float32), load_volume(label, dtype=np.uint8)
