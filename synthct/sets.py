"""A synthetic set on disk: its layout, its dataset card (typed), and reading its pairs.

A set is a folder WS/synthetic/<set>/::

    imagesTr/SYN-0001__CT.nii.gz   int16 HU on the packed grid's real voxel spacing
    labelsTr/SYN-0001.nii.gz       uint8 tumour mask ({0, 1}; {0, 1, 2} for multiclass runs)
    imagesPng/, labelsPng/         optional PNG previews of 2D sets (`generate --format png`)
    datacard.json                  provenance: checkpoint hash, run config, seeds, counts,
                                   postprocessing, the training case ids (leakage checks), metrics

`Datacard` is the card as a typed object for code that reads it (the CLI, the app, evaluation,
segmentation); `load_datacard` returns the file's raw mapping, and `Datacard.from_json` reads
cards of every synthct version (fields a version did not write get their defaults; fields this
version does not know are kept in `extra` and written back). The per-case lists (`cases`,
`seeds`) can be huge (a 10^6-case set has a ~150 MB card): `write_datacard` streams them, and
`read_datacard(..., cases=False)` drops them after parsing.

Light on purpose (no torch): listing and reading sets must not load the models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthct.errors import WorkspaceError
from synthct.io import Volume, load_volume
from synthct.workspace import atomic_write, atomic_write_json, check_name, read_json

DATACARD = "datacard.json"
IMAGES = "imagesTr"
LABELS = "labelsTr"
PNG_IMAGES = "imagesPng"  # optional previews of 2D sets (--format png)
PNG_LABELS = "labelsPng"


def image_file(set_dir: Path, case_id: str) -> Path:
    return Path(set_dir) / IMAGES / f"{case_id}__CT.nii.gz"


def label_file(set_dir: Path, case_id: str) -> Path:
    return Path(set_dir) / LABELS / f"{case_id}.nii.gz"


# -- the dataset card -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """What generated the set. size: the data size S (a 2D model's slice side R); data_view:
    the model's view ("volumes" | "slices"; sets written before it was recorded are volume
    sets); 2D sets also record data_size (S), layout ("slices" | "mosaic") and grid."""

    kind: str = "unknown"
    size: int = 0
    latent_dim: int = 0
    data_view: str = "volumes"
    data_size: int | None = None
    layout: str | None = None
    grid: tuple[int, int] | None = None


@dataclass(frozen=True)
class CheckpointInfo:
    path: str | None = None
    step: int | None = None
    sha256: str | None = None
    ema: bool = True


@dataclass(frozen=True)
class TrainingCases:
    """The real cases the generator trained on (the leakage checks compare against them)."""

    split: str | None = None
    case_ids: tuple[str, ...] | None = None  # None: not recorded (leakage cannot be checked)
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # what the run recorded besides


@dataclass(frozen=True)
class CaseRecord:
    """One written case: its id, index among the requested cases, seed and postprocessing."""

    case_id: str
    index: int | None = None
    seed: int | None = None
    redraws: int = 0
    centre: int | None = None
    mask_voxels: int = 0


# Key order of the file (provenance first, per-case lists in the middle, as 0.1.0 wrote them).
_ORDER = ("name", "created", "synthct_version", "run", "checkpoint", "run_config",
          "training_cases", "centre", "model", "seeds", "base_seed", "cases", "counts",
          "postprocess", "options", "device", "batch_size_used", "spacing", "shape", "metrics")  # fmt: skip
_OPTIONAL = ("run", "checkpoint", "run_config", "training_cases", "centre")  # absent: not written


@dataclass(frozen=True)
class Datacard:
    """A synthetic set's card (see the module docstring). Lists are tuples; `cases` may be
    empty when the card was read without them (`cases_read` says which)."""

    name: str
    model: ModelInfo
    created: str = ""
    synthct_version: str = ""
    run: str | None = None
    checkpoint: CheckpointInfo | None = None
    run_config: dict[str, Any] | None = None
    training_cases: TrainingCases | None = None
    centre: str | None = None
    base_seed: int = 0
    cases: tuple[CaseRecord, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    batch_size_used: int = 0
    spacing: tuple[float, ...] = ()
    shape: tuple[int, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    cases_read: bool = True

    @property
    def seeds(self) -> list[int | None]:
        return [c.seed for c in self.cases]

    @property
    def n_written(self) -> int:
        return int(self.counts.get("written", len(self.cases)))

    @classmethod
    def from_json(cls, data: dict[str, Any], cases: bool = True) -> Datacard:
        """A card from its JSON mapping (any synthct version's)."""
        known = {f.name for f in dataclasses.fields(cls)} | {"seeds"}
        model = _build(ModelInfo, data.get("model") or {})
        if model.grid is not None:
            model = dataclasses.replace(model, grid=tuple(model.grid))
        tc = data.get("training_cases")
        return cls(
            name=str(data.get("name", "")),
            model=model,
            created=str(data.get("created", "")),
            synthct_version=str(data.get("synthct_version", "")),
            run=data.get("run"),
            checkpoint=_build(CheckpointInfo, data["checkpoint"]) if data.get("checkpoint") else None,
            run_config=data.get("run_config"),
            training_cases=None if not isinstance(tc, dict) else TrainingCases(
                tc.get("split"),
                None if tc.get("case_ids") is None else tuple(map(str, tc["case_ids"])),
                tc.get("sha256"),
                {k: v for k, v in tc.items() if k not in ("split", "case_ids", "sha256")}),
            centre=data.get("centre"),
            base_seed=int(data.get("base_seed", 0)),
            cases=tuple(_build(CaseRecord, c) for c in data.get("cases") or ()) if cases else (),
            counts=dict(data.get("counts") or {}),
            postprocess=dict(data.get("postprocess") or {}),
            options=dict(data.get("options") or {}),
            device=str(data.get("device", "")),
            batch_size_used=int(data.get("batch_size_used", 0)),
            spacing=tuple(float(s) for s in data.get("spacing") or ()),
            shape=tuple(int(s) for s in data.get("shape") or ()),
            metrics=dict(data.get("metrics") or {}),
            extra={k: v for k, v in data.items() if k not in known},
            cases_read=cases,
        )  # fmt: skip

    def to_json(self, lists: bool = True) -> dict[str, Any]:
        """The JSON mapping as datacard.json holds it (`lists=False`: without `seeds` and
        `cases`, the part `write_datacard` writes around the streamed lists)."""
        out: dict[str, Any] = {}
        for key in _ORDER:
            if key in ("seeds", "cases"):
                if lists:
                    out[key] = self.seeds if key == "seeds" else [_plain(c) for c in self.cases]
                continue
            value = getattr(self, key)
            if key in _OPTIONAL and value is None:
                continue
            out[key] = _plain(value)
        out.update(self.extra)
        return out


def _build(cls, data: dict[str, Any]):
    """`cls(**data)` keeping only the fields `cls` has (newer or older cards)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _plain(value: Any) -> Any:
    if isinstance(value, ModelInfo) and value.data_size is None:  # no slice-layout fields
        skip = {"data_size", "layout", "grid"}
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if k not in skip}
    if isinstance(value, TrainingCases):
        out = {"split": value.split, "case_ids": _plain(value.case_ids), "sha256": value.sha256}
        return {**out, **value.extra}
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_datacard(set_dir: str | os.PathLike) -> dict[str, Any]:
    """The set's datacard.json as its raw mapping (WorkspaceError naming the file when missing
    or not a JSON object)."""
    card = read_json(Path(set_dir) / DATACARD)
    if not isinstance(card, dict):
        raise WorkspaceError(f"{Path(set_dir) / DATACARD}: expected a JSON object")
    return card


def read_datacard(set_dir: str | os.PathLike, cases: bool = True) -> Datacard:
    """The set's card as a `Datacard` (`cases=False`: without the per-case list)."""
    return Datacard.from_json(load_datacard(set_dir), cases=cases)


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


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The per-case records of a JSON-lines file, one dict a line."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def write_datacard(path: Path, card: Datacard, records: Iterable[dict[str, Any]] | Path) -> None:
    """datacard.json of `card` (without its lists) with `seeds` and `cases` streamed from
    `records` (the case records, or a JSON-lines file of them), exactly as
    `json.dumps(card, indent=2)` would write the whole card, without building it in memory."""
    head = card.to_json(lists=False)

    def rows() -> Iterator[dict[str, Any]]:
        return iter_records(records) if isinstance(records, Path) else iter(records)

    def field_text(key: str, value: Any) -> str:
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
        keys = list(head)
        split = keys.index("base_seed")
        f.write(b"{\n")
        f.write(",\n".join(field_text(k, head[k]) for k in keys[:split]).encode() + b",\n")
        streamed(f, "seeds", (r["seed"] for r in rows()))
        f.write(f",\n{field_text('base_seed', head['base_seed'])},\n".encode())
        streamed(f, "cases", rows())
        rest = keys[split + 1 :]
        f.write(b",\n" + ",\n".join(field_text(k, head[k]) for k in rest).encode() + b"\n}\n")

    atomic_write(path, write)


# -- reading pairs --------------------------------------------------------------------------------
def load_synthetic_pair(set_dir: str | os.PathLike, case_id: str) -> tuple[Volume, Volume]:
    """(image in HU as float32 Volume (X, Y, Z), mask as uint8 Volume) of one synthetic case."""
    set_dir = Path(set_dir)
    check_name(case_id, "case id")
    image, label = image_file(set_dir, case_id), label_file(set_dir, case_id)
    for p in (image, label):
        if not p.is_file():
            raise WorkspaceError(f"synthetic case {case_id!r}: {p} does not exist")
    return load_volume(image, dtype=np.float32), load_volume(label, dtype=np.uint8)
