"""Intensity normalisation of segmentation inputs: the Auto3DSeg CT recipe (default) or a linear window.

Auto3DSeg's SegResNet template (MONAI research-contributions, `algorithm_templates/segresnet`)
handles CT ("range" mode, chosen when the modality is CT) in two steps:

1. its data analysis (`monai.auto3dseg` `FgImageStats` per case, `FgImageStatsSumm` over cases)
   takes, for each training case, the 0.5th and 99.5th percentiles of the image intensities
   inside the label (label > 0), and averages each percentile over the cases; `algo.py` writes
   them as `intensity_bounds = [a_min, a_max]`;
2. `segmenter.py` then applies `ScaleIntensityRanged(a_min, a_max, b_min=-1, b_max=1,
   clip=False)` followed by `Lambdad(func=torch.sigmoid)`: HU -> (0, 1), steepest inside the
   tumour intensity range, no hard clip.

synthct computes the bounds the same way (MONAI's own analysers) in HU on the packed grid, from
the cases a model trains on and nothing else: each cross-validation fold uses its *real*
training cases (never its validation fold or the test split); a stage with no real training case
(the synthetic-only experiment, the synthetic pre-training) uses its synthetic training cases.
Two deliberate differences from the template: cases with an empty label are left out (the
analyser would count them as one voxel of 0 HU, pulling both bounds towards water) and are
counted in the record; and Auto3DSeg analyses the whole data list once, while synthct fits each
fold separately so that no validation label shapes the normalisation.

`linear` is the GAN's own HU window clipped and mapped linearly to [-1, 1] (synthct's previous
default), kept for comparison.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from synthct.errors import ConfigError
from synthct.runtime import case_ids_hash

NORMALISATIONS = ("auto3dseg-ct", "linear")
FG_PERCENTILES = (0.5, 99.5)  # the data analysis's percentile_00_5 / percentile_99_5


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """How images (HU) become network inputs, with where the bounds came from.

    mode "auto3dseg-ct": sigmoid(2 (HU - a_min) / (a_max - a_min) - 1), no clipping;
    mode "linear": clip HU to [a_min, a_max], map linearly to [-1, 1].
    source: "real" | "synthetic" (the cases the bounds came from) | "hu_window" (linear).
    """

    mode: str
    a_min: float
    a_max: float
    source: str = "hu_window"
    n_cases: int = 0
    n_empty_excluded: int = 0
    case_ids_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.mode!r}")
        if not (np.isfinite(self.a_min) and np.isfinite(self.a_max) and self.a_max > self.a_min):
            raise ValueError(
                f"intensity bounds must be finite with a_max > a_min, got "
                f"[{self.a_min}, {self.a_max}]"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.mode == "auto3dseg-ct":
            d["percentiles"] = list(FG_PERCENTILES)
            d["recipe"] = (
                "ScaleIntensityRange(a_min, a_max, b_min=-1, b_max=1, clip=False) then sigmoid; "
                "a_min/a_max = mean over training cases of the 0.5/99.5 percentiles of HU "
                "inside the label"
            )
        else:
            d["recipe"] = "clip to [a_min, a_max] HU, map linearly to [-1, 1]"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalisation:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _transforms(norm: Normalisation, keys=None) -> list:
    """MONAI transforms of `norm`: dict transforms on `keys`, or array transforms (keys None)."""
    import torch
    from monai.transforms import Lambda, Lambdad, ScaleIntensityRange, ScaleIntensityRanged

    sigmoid = norm.mode == "auto3dseg-ct"
    kw = {"a_min": norm.a_min, "a_max": norm.a_max, "b_min": -1.0, "b_max": 1.0}
    if keys is None:
        ts: list = [ScaleIntensityRange(**kw, clip=not sigmoid)]
        return ts + ([Lambda(func=torch.sigmoid)] if sigmoid else [])
    ts = [ScaleIntensityRanged(keys=keys, **kw, clip=not sigmoid)]
    return ts + ([Lambdad(keys=keys, func=torch.sigmoid)] if sigmoid else [])


def dict_transforms(norm: Normalisation, key: str = "image") -> list:
    """The normalisation as MONAI dict transforms on `key` (first in a training Compose)."""
    return _transforms(norm, keys=key)


def apply(norm: Normalisation, hu):
    """Normalise HU (numpy array or tensor, any shape) -> float32 torch tensor, same shape."""
    import torch

    x = torch.as_tensor(np.asarray(hu, dtype=np.float32) if not torch.is_tensor(hu) else hu)
    x = x.float()
    for t in _transforms(norm):
        x = t(x)
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)  # MetaTensor -> Tensor
    return x.float()


def foreground_percentiles(image_hu: np.ndarray, label: np.ndarray) -> tuple[float, float] | None:
    """(p0.5, p99.5) of the HU inside label > 0 for one case, by MONAI's `FgImageStats`;
    None when the label is empty."""
    import torch
    from monai.auto3dseg.analyzer import FgImageStats

    lab = np.asarray(label)
    if not np.any(lab > 0):
        return None
    report = FgImageStats(image_key="image", label_key="label")(
        {
            "image": torch.from_numpy(np.asarray(image_hu, dtype=np.float32)[None].copy()),
            "label": torch.from_numpy(lab.astype(np.uint8)),
        }
    )["image_foreground_stats"]["intensity"][0]
    return float(report["percentile_00_5"]), float(report["percentile_99_5"])


# per-case percentiles do not depend on the fold: each case is analysed once per process
_PERCENTILES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _case_percentiles(case) -> tuple[float, float] | None:
    try:
        return _PERCENTILES[case]
    except (KeyError, TypeError):
        pass
    p = foreground_percentiles(case.image_hu, case.label)
    with contextlib.suppress(TypeError):  # not weak-referenceable: just not cached
        _PERCENTILES[case] = p
    return p


def fit_normalisation(cases: Sequence, mode: str, hu_window: Sequence[float]) -> Normalisation:
    """The normalisation a model trained on `cases` (SegCase-like: image_hu, label, source,
    case_id) uses. "auto3dseg-ct": bounds from the real cases' foreground (the synthetic ones
    when there is no real case); "linear": the HU window."""
    if mode == "linear":
        return Normalisation("linear", float(hu_window[0]), float(hu_window[1]))
    if mode not in NORMALISATIONS:
        raise ConfigError(f"normalisation must be one of {NORMALISATIONS}, got {mode!r}")
    real = [c for c in cases if c.source == "real"]
    use = real or list(cases)
    source = "real" if real else "synthetic"
    lows, highs, used = [], [], []
    for c in use:
        p = _case_percentiles(c)
        if p is not None:
            lows.append(p[0])
            highs.append(p[1])
            used.append(c.case_id)
    if not used:
        raise ConfigError(
            f"none of the {len(use)} {source} training cases has a labelled voxel, so the "
            "Auto3DSeg CT intensity range (foreground percentiles) is undefined; use "
            "--normalisation linear"
        )
    # FgImageStatsSumm's summary of percentile_00_5 / percentile_99_5 is the mean over cases
    a_min, a_max = float(np.mean(lows)), float(np.mean(highs))
    if not a_max > a_min:  # a constant foreground: widen by 1 HU so the scaling is defined
        a_min, a_max = a_min - 0.5, a_max + 0.5
    return Normalisation(
        "auto3dseg-ct",
        a_min,
        a_max,
        source=source,
        n_cases=len(used),
        n_empty_excluded=len(use) - len(used),
        case_ids_sha256=case_ids_hash(used),
    )
