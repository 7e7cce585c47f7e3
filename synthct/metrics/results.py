"""An evaluation's result as a typed object: what `synthct evaluate` writes and the app reads.

WS/evals/<id>/metrics.json holds one evaluation (volume or slice level). `EvalResult` reads it
(any synthct version's: fields an older version did not write get their defaults, unknown ones
are kept) and gives typed access to what the CLI and the app show: the compared sets and their
sizes, the extractor, and each distance metric as a `DistanceEntry` (value, case-bootstrap
interval, real-vs-real baseline, sample sizes). The remaining metric blocks (classifier-IS,
MS-SSIM, privacy, statistics) stay mappings; docs/metrics.md defines each of their fields.

`summarise` is the compact record of an evaluation stored in the set's datacard
(`record_in_datacard`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthct.metrics.diversity import find_msssim
from synthct.sets import ModelInfo, load_datacard, update_datacard
from synthct.workspace import Workspace, read_json

DISTANCES = ("fid", "kid", "precision", "recall", "density", "coverage")
RESULT_FILE = "metrics.json"


@dataclass(frozen=True)
class Baseline:
    """A metric between two case-disjoint real halves, and synthetic vs real at that size:
    each {"mean", "median", "std", "low", "high"} over the repeats."""

    size: int | None = None
    repeats: int | None = None
    real_vs_real: dict[str, float] | None = None
    synthetic_vs_real: dict[str, float] | None = None
    synthetic_within_real_vs_real: bool | None = None


@dataclass(frozen=True)
class DistanceEntry:
    """One distance metric (FID, KID, precision, recall, density or coverage)."""

    name: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    baseline: Baseline | None = None
    n: int | None = None
    m: int | None = None
    n_cases: int | None = None
    m_cases: int | None = None
    slices_per_case: int | None = None
    d: int | None = None
    extractor: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> DistanceEntry:
        ci, base = data.get("ci") or {}, data.get("baseline")
        baseline = None
        if isinstance(base, dict):
            names = {f.name for f in dataclasses.fields(Baseline)}
            baseline = Baseline(**{k: v for k, v in base.items() if k in names})
        return cls(
            name=name,
            value=float(data.get("value", math.nan)),
            ci_low=float(ci.get("low", math.nan)),
            ci_high=float(ci.get("high", math.nan)),
            baseline=baseline,
            n=data.get("n"),
            m=data.get("m"),
            n_cases=data.get("n_cases", data.get("n")),
            m_cases=data.get("m_cases", data.get("m")),
            slices_per_case=data.get("slices_per_case"),
            d=data.get("d"),
            extractor=dict(data.get("extractor") or {}),
        )


@dataclass(frozen=True)
class EvalResult:
    """One evaluation (see the module docstring). `raw` is metrics.json as read."""

    id: str
    level: str
    created: str
    options: dict[str, Any]
    data_config: dict[str, Any]
    extractor: dict[str, Any]
    model: dict[str, Any]
    synthetic: dict[str, Any]
    real: dict[str, Any]
    metrics: dict[str, Any]
    slices: dict[str, Any] | None = None
    tumour_mix: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        return cls(
            id=str(data.get("id", "")),
            level=str(data.get("level", "volume")),
            created=str(data.get("created", "")),
            options=dict(data.get("options") or {}),
            data_config=dict(data.get("data_config") or {}),
            extractor=dict(data.get("extractor") or {}),
            model=dict(data.get("model") or {}),
            synthetic=dict(data.get("synthetic") or {}),
            real=dict(data.get("real") or {}),
            metrics=dict(data.get("metrics") or {}),
            slices=data.get("slices"),
            tumour_mix=data.get("tumour_mix"),
            raw=data,
        )

    def to_json(self) -> dict[str, Any]:
        return self.raw

    def distance(self, name: str) -> DistanceEntry | None:
        """The distance metric `name` ("fid", "kid", "precision", …) when it was computed."""
        entry = self.metrics.get(name)
        return DistanceEntry.from_json(name, entry) if isinstance(entry, dict) else None

    def distances(self) -> list[DistanceEntry]:
        return [e for e in map(self.distance, DISTANCES) if e is not None]

    @property
    def data_view(self) -> str:
        """The evaluated set's data view (results written before it was recorded: volumes)."""
        return str(self.model.get("data_view", ModelInfo.data_view))

    @property
    def slices_per_case(self) -> int | None:
        """k of the case protocol at slice level (None: volume level, or the legacy pooled
        slice protocol that predates it)."""
        return (self.slices or {}).get("slices_per_case")


def load_result(ws: Workspace, eval_id: str) -> EvalResult:
    """WS/evals/<id>/metrics.json as an `EvalResult`."""
    return EvalResult.from_json(read_json(ws.eval_dir(eval_id) / RESULT_FILE))


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The compact per-evaluation record stored in the datacard."""
    m = result["metrics"]
    out: dict[str, Any] = {
        "eval": result["id"],
        "level": result.get("level", "volume"),
        "created": result["created"],
        "part": result["options"]["part"],
        "real_split": result["real"]["split"],
        "n": result["real"]["n"],
        "m": result["synthetic"]["m"],
        "n_cases": result["real"].get("n_cases", result["real"]["n"]),
        "m_cases": result["synthetic"].get("m_cases", result["synthetic"]["m"]),
        "extractor": {
            k: result["extractor"][k] for k in ("name", "version", "weights_sha256", "dim")
        },
    }
    for key in DISTANCES:
        if key in m:
            entry = {"value": m[key]["value"], "ci": m[key]["ci"]}
            if m[key].get("baseline"):
                entry["real_vs_real"] = m[key]["baseline"]["real_vs_real"]
            out[key] = entry
    if result.get("slices"):
        out["slices_per_case"] = result["slices"].get("slices_per_case")
        out["tumour_mix"] = (result.get("tumour_mix") or {}).get("value")
    if m.get("classifier_is"):
        cis = m["classifier_is"]
        out["classifier_is"] = {
            "name": cis["name"],
            "value": cis["synthetic"]["value"],
            "real": (cis.get("real") or {}).get("value"),
            "n": cis["synthetic"].get("n"),
            "n_splits": cis.get("n_splits"),
        }
    found = find_msssim(m)
    if found:
        key, ms = found
        out[key] = {"name": ms.get("name", key), "synthetic": ms["synthetic"]["mean"],
                    "real": ms["real"]["mean"]}  # fmt: skip
    if "feature" in m.get("privacy", {}):
        out["privacy_flagged_fraction"] = {
            s: m["privacy"][s]["flagged_fraction"] for s in ("feature", "voxel")
        }
    return out


def record_in_datacard(set_dir: Path, result: dict[str, Any]) -> None:
    """Add the evaluation's compact record (`summarise`) to the set's datacard metrics."""
    merged = dict(load_datacard(set_dir).get("metrics") or {})
    merged[result["id"]] = summarise(result)
    update_datacard(set_dir, "metrics", merged)
