"""Writing the pairs of a synthetic set while it is generated, in bounded memory.

`SetWriter` owns the temporary folder of a set being written (`generate.write_set` puts it in
place only when complete): NIfTI pairs (and optional PNG previews) are written by a small
thread pool (zlib releases the GIL, so compression overlaps with sampling), finished cases are
appended to a JSON-lines file in case-index order, and `finish` gives the written cases
contiguous ids SYN-0001… and writes the datacard from that file as a stream. What it holds in
memory is a few batches of pending writes and out-of-order records, whatever n is.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

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
    write_datacard,
)

RECORDS = ".cases.jsonl"  # finished cases in index order, while the set is written


def slice_pngs(
    image: np.ndarray, mask: np.ndarray, hu_window: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """One-slice pair (X, Y, 1) -> (CT grey uint8 (Y, X): the HU window as 0..255, mask 0/255),
    radiologically oriented (anterior up, patient left on the right)."""
    from synthct.display import Window, extract_slice, window_to_uint8

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
