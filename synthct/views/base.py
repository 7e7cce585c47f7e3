"""Data views: how a generative model sees the packed pairs, and what its samples are on disk.

Every model is built with one view (`model.view`) and the training loop, sampling and evaluation
ask the view — never the model kind — for whatever differs between models of whole volumes and
models of 2D slices:

- training data and batches: `training_data`, `batch` (a pure function of (seed, step));
- the mode-collapse probe and snapshots: `probe` (a fixed real reference, the features the alarm
  compares, the picture the loop saves);
- what a generated sample is: `to_volumes` (generator output -> image HU + mask volumes),
  `output_spacing`, `output_shape`, `card_fields` (the datacard's description of the layout);
- benchmarks: `random_batch` (input of the right shape);
- evaluation of a written set, read back from disk with its datacard (no model needed), as
  class-level hooks: the default evaluation level, the "2D"/"3D" label, the slice resolution of
  slice-level metrics, which tumour mix a set's slices carry, and how a set is cut into cases of
  k slices (`set_case_slices`). `view_class(name)` finds the view a datacard names.

`VolumeView` (synthct/views/volumes.py) serves models of packed (B, 1, S, S, S) pairs,
`SliceView` (synthct/views/slices.py) models of (B, 2, R, R) axial image + mask slice pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

if TYPE_CHECKING:
    from synthct.config import DataConfig, RunConfig, TrainConfig
    from synthct.metrics.slice_cases import CaseSlices
    from synthct.sets import ModelInfo


def mean_pairwise_distance(v: torch.Tensor) -> float:
    """Mean RMS distance over distinct pairs of rows of v (n, d): ||a - b|| / sqrt(d)."""
    u = v.double().flatten(1)
    n, d = u.shape
    dist = torch.cdist(u, u) / d**0.5
    return float(dist.sum() / (n * (n - 1)))


@dataclass
class TrainingData:
    """A training split as a view holds it: `items` (the view's own store), the case ids, the
    centre names and each case's centre index, the packed grid's spacing (mm) and `record`
    (extra fields of the run's train_cases.json)."""

    items: Any
    case_ids: list[str]
    centre_names: list[str]
    centres: torch.Tensor
    spacing: tuple[float, float, float]
    split: str
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_packed(cls, packed, split: str, items: Any, record: dict | None = None) -> TrainingData:
        """From a `preprocess.PackedSet`: ids, centres and spacing as recorded there."""
        names = sorted(set(packed.centres))
        return cls(
            items=items,
            case_ids=list(packed.case_ids),
            centre_names=names,
            centres=torch.tensor([names.index(c) for c in packed.centres]),
            spacing=tuple(float(s) for s in packed.spacing),  # type: ignore[arg-type]
            split=split,
            record=dict(record or {}),
        )


class Probe(ABC):
    """Fixed real reference and features for snapshots and the mode-collapse alarm."""

    real_diversity: float = 0.0

    def set_reference(self, ref: torch.Tensor) -> None:
        """Real diversity of the reference feature rows `ref` (k, d)."""
        self.real_diversity = mean_pairwise_distance(ref) if len(ref) > 1 else 0.0

    @abstractmethod
    def features(self, samples: torch.Tensor) -> torch.Tensor:
        """Generator output -> (n, d) float32 rows whose mean pairwise distance is the
        diversity the alarm compares."""

    @abstractmethod
    def snapshot(self, samples: torch.Tensor) -> np.ndarray:
        """Generator output -> the uint8 picture saved as samples/step-<step>.png."""


class DataView(ABC):
    """What differs between models of volumes and models of slices (see the module docstring)."""

    name: ClassVar[str]  # recorded as the datacard's model.data_view
    dims: ClassVar[str]  # "3D" | "2D": how comparison tables label the model
    evaluation_level: ClassVar[str]  # the default of `synthct evaluate --level` for its sets

    def __init__(self, data_cfg: DataConfig) -> None:
        self.data_cfg = data_cfg

    # -- training -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def memory_format(self) -> torch.memory_format:
        """The channels-last format of this view's batches (used on CUDA)."""

    def check_train_config(self, train_cfg: TrainConfig, kind: str) -> None:  # noqa: B027
        """Raise ConfigError for loop settings this view cannot honour (default: none)."""

    @abstractmethod
    def training_data(self, packed, split: str) -> TrainingData:
        """The packed split (`preprocess.PackedSet`) as this view trains on it."""

    @abstractmethod
    def batch(
        self,
        data: TrainingData,
        run_cfg: RunConfig,
        step: int,
        rank: int,
        world: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(real batch on `device`, case indices into data.case_ids (B,)) for `rank` at `step`;
        a pure function of (seed, step) and `generator` (checkpointed by the loop)."""

    @abstractmethod
    def probe(self, data: TrainingData, run_cfg: RunConfig) -> Probe:
        """The fixed real reference of the run's collapse alarm."""

    @abstractmethod
    def random_batch(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """A random real-shaped batch in [-1, 1] (benchmarks: content does not matter)."""

    # -- samples --------------------------------------------------------------------------------
    @abstractmethod
    def to_volumes(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Generator output (B, ...) in [-1, 1] -> (image HU (B, X, Y, Z) float32, mask uint8)."""

    @abstractmethod
    def output_shape(self) -> list[int]:
        """(X, Y, Z) of one written case."""

    @abstractmethod
    def output_spacing(self, packed_spacing: tuple[float, ...]) -> tuple[float, float, float]:
        """Voxel size (mm) of a written case, from the packed grid's spacing."""

    def card_fields(self) -> dict[str, Any]:
        """Fields this view adds to the datacard's "model" entry (default: none)."""
        return {}

    def sample_name(self) -> str:
        """What one generated sample is, for messages ("64^3 pair", "slice pair")."""
        return f"{self.data_cfg.size}^3 pair"

    def supports_png(self) -> bool:
        """Whether `generate --format png` (one PNG per sample) applies (default: no)."""
        return False

    # -- evaluation of written sets (from the datacard's "model" entry; no model needed) --------
    @classmethod
    @abstractmethod
    def set_resolution(cls, model_info: ModelInfo, data_cfg: DataConfig) -> int:
        """R of slice-level metrics for a set of this view (when not requested)."""

    @classmethod
    @abstractmethod
    def set_tumour_mix(cls, model_info: ModelInfo) -> str | None:
        """Why the set's slices carry the natural tumour mix, or None when the mix is the one
        its training run recorded (`tumour_fraction`)."""

    @classmethod
    @abstractmethod
    def set_case_slices(
        cls,
        set_dir: Path,
        model_info: ModelInfo,
        data_cfg: DataConfig,
        resolution: int,
        k: int,
        n_cases: int,
        fraction: float | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> CaseSlices:
        """At most `n_cases` cases of a written set, k slice pairs each (CaseSlices)."""


VIEWS: dict[str, type[DataView]] = {}  # name -> class (views/__init__.py registers them)


def view_class(name: str) -> type[DataView]:
    """The view a datacard's model.data_view names."""
    try:
        return VIEWS[name]
    except KeyError:
        raise ValueError(f"unknown data view {name!r}; known: {', '.join(VIEWS)}") from None
