"""Cached access to the volumes the pages show (bounded, shared, never copied per rerun)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from synthct.config import HU_WINDOW
from synthct.workspace import Workspace

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Source:
    """A data set the Browse page can show: real cases of a split, or a synthetic set."""

    label: str
    kind: str  # "real" (original files) | "packed" (real, preprocessed grid) | "synthetic"
    key: str  # split name, "<split>@<size>" for packed, or set name


@dataclass(frozen=True)
class Case:
    image_hu: np.ndarray  # (X, Y, Z) float32
    mask: np.ndarray  # (X, Y, Z) uint8
    spacing: tuple[float, float, float]
    meta: dict = field(default_factory=dict)
    # The HU window the data were clipped to in preprocessing (None for original scans).
    hu_window: tuple[float, float] | None = None


def sources(ws: Workspace) -> list[Source]:
    out: list[Source] = []
    if ws.splits.exists():
        from synthct.datasets import load_splits
        from synthct.preprocess import list_packed

        present = [s for s in SPLITS if s in set(load_splits(ws).values())]
        for _, cfg in list_packed(ws):  # the real cases on the grid the GAN learns from
            out += [
                Source(f"Real · {s} · preprocessed S={cfg.size}", "packed", f"{s}@{cfg.size}")
                for s in present
            ]
        out += [Source(f"Real · {s} · original", "real", s) for s in present]
    out += [Source(f"Synthetic · {name}", "synthetic", name) for name in ws.list_sets()]
    return out


def case_ids(ws: Workspace, source: Source) -> list[str]:
    if source.kind in ("real", "packed"):
        from synthct.datasets import cases_in_split

        return [r.case_id for r in cases_in_split(ws, source.key.split("@")[0])]
    from synthct.sets import read_datacard

    return [c.case_id for c in read_datacard(ws.synthetic_dir(source.key)).cases]


@st.cache_resource(max_entries=8, show_spinner="Loading volume…")
def load_case(root: str, kind: str, key: str, case_id: str) -> Case:
    """One case as arrays (cached per process; at most 8 volumes are kept)."""
    ws = Workspace.resolve(root)
    if kind == "packed":
        from synthct.preprocess import list_packed, load_packed_case

        split, size = key.split("@")
        cfg = next(c for _, c in list_packed(ws) if c.size == int(size))
        image_hu, mask, spacing = load_packed_case(ws, cfg, case_id)
        meta = {"case id": case_id, "split": split, "grid": f"preprocessed S={size}"}
        return _with_volume_meta(Case(image_hu, mask, spacing, meta, tuple(cfg.hu_window)))
    if kind == "real":
        from synthct.datasets import cases_in_split
        from synthct.io import load_volume

        rec = next(r for r in cases_in_split(ws, key) if r.case_id == case_id)
        image = load_volume(rec.image)
        mask = load_volume(rec.mask, dtype=np.uint8)
        meta = {
            "case id": rec.case_id,
            "centre": rec.centre,
            "split": key,
            "status": rec.status,
            "problems": "; ".join(rec.problems) or "—",
            "file": rec.image,
        }
    else:
        from dataclasses import asdict

        from synthct.sets import load_synthetic_pair, read_datacard

        set_dir = ws.synthetic_dir(key)
        image, mask = load_synthetic_pair(set_dir, case_id)
        card = read_datacard(set_dir)
        entry = next((asdict(c) for c in card.cases if c.case_id == case_id), {})
        meta = {
            "case id": case_id,
            "set": key,
            **{k: v for k, v in entry.items() if k != "case_id"},
        }
        meta["model"] = f"{card.model.kind} S={card.model.size}"
        data_cfg = (card.run_config or {}).get("data") or {}
        window = tuple(float(v) for v in data_cfg.get("hu_window", HU_WINDOW))
        return _with_volume_meta(Case(image.array, mask.array, image.spacing, meta, window))
    return _with_volume_meta(Case(image.array, mask.array, image.spacing, meta))


def _with_volume_meta(case: Case) -> Case:
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    case.meta["shape"] = "×".join(map(str, case.image_hu.shape))
    case.meta["spacing (mm)"] = " × ".join(f"{s:.2f}" for s in case.spacing)
    case.meta["tumour volume (mL)"] = round(float(np.count_nonzero(case.mask)) * voxel_ml, 2)
    return case
