"""Writing the pairs of a synthetic set while it is generated, in bounded memory.

`SetWriter` owns the temporary folder of a set being written (`generate.write_set` puts it in
place only when complete): NIfTI pairs (and optional PNG previews) are written by a small
thread pool (zlib releases the GIL, so compression overlaps with sampling), finished cases are
appended to a JSON-lines file in case-index order, and `finish` gives the written cases
contiguous ids SYN-0001… and writes the datacard and dataset.json from that file as streams.
What it holds in memory is a few batches of pending writes and out-of-order records, whatever n
is.

dataset.json is the Medical Segmentation Decathlon's dataset description (name, description,
tensorImageSize, modality, labels, numTraining, training: [{image, label}], …), the file MONAI's
`load_decathlon_datalist` and Auto3DSeg read; its paths are relative to the set's folder and
name the files as they are: `./imagesTr/SYN-0001__CT.nii.gz` with `./labelsTr/SYN-0001.nii.gz`.
(nnU-Net v2 wants `imagesTr/<case>_0000.nii.gz` and a different dataset.json: not this one.)
`write_dataset_json` adds it to a set written before synthct wrote it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from synthct.display import Window, extract_slice, window_to_uint8
from synthct.errors import WorkspaceError
from synthct.io import Volume, save_png, save_volume
from synthct.sets import (
    DATACARD,
    IMAGES,
    LABELS,
    PNG_IMAGES,
    PNG_LABELS,
    Datacard,
    image_file,
    iter_records,
    label_file,
    read_datacard,
    write_datacard,
)
from synthct.workspace import atomic_write

RECORDS = ".cases.jsonl"  # finished cases in index order, while the set is written
DATASET_JSON = "dataset.json"  # the Decathlon-format description (see the module docstring)


def slice_pngs(
    image: np.ndarray, mask: np.ndarray, hu_window: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """One-slice pair (X, Y, 1) -> (CT grey uint8 (Y, X): the HU window as 0..255, mask 0/255),
    radiologically oriented (anterior up, patient left on the right)."""

    lo, hi = hu_window
    grey = window_to_uint8(extract_slice(image, "axial", 0), Window((lo + hi) / 2, hi - lo))
    return grey, np.where(extract_slice(mask, "axial", 0) > 0, 255, 0).astype(np.uint8)


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


class SetWriter:
    """The temporary folder of a set being written (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        affine: np.ndarray,
        n: int,
        png_window: tuple[float, float] | None = None,
        workers: int = 3,
    ) -> None:
        self.folder, self.affine, self.png_window = Path(folder), affine, png_window
        self.width = max(4, len(str(n)))  # SYN-0001 … SYN-<n> with enough digits
        for sub in (IMAGES, LABELS) + ((PNG_IMAGES, PNG_LABELS) if png_window else ()):
            (self.folder / sub).mkdir()
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        self.pending: set[Future] = set()
        self.records = _OrderedRecords(self.folder / RECORDS)

    def __enter__(self) -> SetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def finished(self) -> int:
        """Cases decided so far (written or dropped)."""
        return self.records.finished

    @property
    def written(self) -> int:
        return self.records.written

    def add(self, index: int, record: dict[str, Any], image: np.ndarray, mask: np.ndarray,
            backlog: int) -> None:  # fmt: skip
        """Queue case `index` (record: its datacard entry) for writing; waits while more than
        `backlog` writes are pending."""
        name = f"SYN-{index + 1:0{self.width}d}"
        self.records.add(index, {**record, "_name": name})
        self.pending.add(self.pool.submit(self._write_pair, name, image, mask))
        self.drain(backlog)

    def drop(self, index: int) -> None:
        """Case `index` is left out of the set (the empty-mask policy "drop")."""
        self.records.add(index, None)

    def drain(self, limit: int = 0) -> None:
        """Wait until at most `limit` writes are pending; re-raises a write's error here."""
        while len(self.pending) > limit:
            done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            for f in done:
                self.pending.discard(f)
                f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.records.close()

    def finish(self, card: Datacard) -> None:
        """Contiguous ids for the written cases, then datacard.json (`card` without its lists;
        the lists come from the records)."""
        self.drain(0)
        self.close()
        records = self.folder / RECORDS
        self._renumber(records)
        write_datacard(self.folder / DATACARD, card, records)
        dataset_json(self.folder, card, (r["case_id"] for r in iter_records(records)))
        records.unlink()

    def _write_pair(self, name: str, image: np.ndarray, mask: np.ndarray) -> None:
        save_volume(Volume(image, self.affine), image_file(self.folder, name), dtype=np.int16)
        save_volume(Volume(mask, self.affine), label_file(self.folder, name), dtype=np.uint8)
        if self.png_window is not None:
            grey, label = slice_pngs(image, mask, self.png_window)
            save_png(grey, self.folder / PNG_IMAGES / f"{name}.png")
            save_png(label, self.folder / PNG_LABELS / f"{name}.png")

    def _renumber(self, records: Path) -> None:
        """Give the written cases contiguous ids SYN-0001… in case order (gaps appear after
        drops), renaming their files, and rewrite `records` with each case's final `case_id`."""
        final = records.with_name(records.name + ".final")
        png = self.png_window is not None
        with open(final, "w", encoding="utf-8") as out:
            for k, c in enumerate(iter_records(records)):
                old, new = c.pop("_name"), f"SYN-{k + 1:0{self.width}d}"
                if old != new:
                    os.replace(image_file(self.folder, old), image_file(self.folder, new))
                    os.replace(label_file(self.folder, old), label_file(self.folder, new))
                    if png:
                        for sub in (PNG_IMAGES, PNG_LABELS):
                            d = self.folder / sub
                            os.replace(d / f"{old}.png", d / f"{new}.png")
                out.write(json.dumps({"case_id": new, **c}) + "\n")
        os.replace(final, records)


# -- dataset.json (Medical Segmentation Decathlon format) -----------------------------------------
def decathlon_labels(card: Datacard) -> dict[str, str]:
    """The label map: multiclass runs write GTVp = 1, GTVn = 2; binary ones their union."""
    mask = ((card.run_config or {}).get("data") or {}).get("mask", "binary")
    if mask == "multiclass":
        return {"0": "background", "1": "GTVp", "2": "GTVn"}
    return {"0": "background", "1": "tumour (GTVp + GTVn)"}


def dataset_json(set_dir: Path, card: Datacard, case_ids: Iterable[str]) -> Path:
    """Write SET/dataset.json (atomically) listing `case_ids` in order; the training list is
    streamed, so memory does not grow with the number of cases. Returns its path."""
    set_dir = Path(set_dir)
    source = f"a {card.model.kind} generator"
    if card.run:
        source += f" (run {card.run}"
        step = card.checkpoint.step if card.checkpoint else None
        source += f", checkpoint step {step})" if step is not None else ")"
    version = f"synthct {card.synthct_version}".strip()
    head = {
        "name": card.name,
        "description": (
            f"Synthetic head-and-neck CT + tumour-mask pairs sampled by {version} from {source}; "
            "provenance, seeds and postprocessing in datacard.json"
        ),
        "reference": "datacard.json",
        "release": card.created,
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": decathlon_labels(card),
        "numTraining": 0,
        "numTest": 0,
    }
    tmp_list = set_dir / f".{DATASET_JSON}.training"
    count = 0
    with open(tmp_list, "w", encoding="utf-8") as f:  # the list first: numTraining comes before
        for case_id in case_ids:
            pair = {
                "image": "./" + image_file(set_dir, case_id).relative_to(set_dir).as_posix(),
                "label": "./" + label_file(set_dir, case_id).relative_to(set_dir).as_posix(),
            }
            f.write(("," if count else "") + "\n    " + json.dumps(pair))
            count += 1
    head["numTraining"] = count

    def write(out) -> None:
        text = json.dumps(head, indent=2)[:-2]  # without the closing "\n}"
        out.write(f'{text},\n  "training": ['.encode())
        with open(tmp_list, "rb") as f:
            while chunk := f.read(1 << 20):
                out.write(chunk)
        out.write(("\n  ]," if count else "],").encode() + b'\n  "test": []\n}\n')

    try:
        return atomic_write(set_dir / DATASET_JSON, write)
    finally:
        tmp_list.unlink(missing_ok=True)


def write_dataset_json(set_dir: str | os.PathLike) -> Path:
    """Add dataset.json to a complete set (one written before synthct wrote it, or to rewrite
    it). The cases are SYN-0001… in order, as `SetWriter.finish` numbered them; every image and
    label file is checked to exist (WorkspaceError naming the first one missing)."""
    set_dir = Path(set_dir)
    card = read_datacard(set_dir, cases=False)
    n = card.n_written
    width = max(4, len(str(int(card.counts.get("requested", n)))))

    def ids() -> Iterator[str]:
        for k in range(n):
            case_id = f"SYN-{k + 1:0{width}d}"
            for p in (image_file(set_dir, case_id), label_file(set_dir, case_id)):
                if not p.is_file():
                    raise WorkspaceError(
                        f"{set_dir}: {p.relative_to(set_dir)} is missing; the datacard lists "
                        f"{n} written cases SYN-{1:0{width}d}…SYN-{n:0{width}d}"
                    )
            yield case_id

    return dataset_json(set_dir, card, ids())
