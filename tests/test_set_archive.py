"""A synthetic set as a zip: read back by Python's zipfile (and Info-ZIP's unzip when present)
with every CRC checked, ZIP64 records where needed, memory that does not grow with the number
of files, and one archive per version of a set, written atomically."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from synthct import set_archive
from synthct.errors import WorkspaceError
from synthct.set_archive import archive_set, write_zip


def _files(folder: Path, n: int, size: int = 1000, big: int = 0) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"f{i:05d}.bin"
        p.write_bytes(os.urandom(big if i == 0 and big else size + i))
        out.append((f"set/grün-{i:05d}.bin", p))
    return out


def _check(zip_path: Path, members: list[tuple[str, Path]]) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None  # every member's CRC-32
        assert zf.namelist() == [a for a, _ in members]
        for arcname, p in members:
            assert zf.read(arcname) == p.read_bytes()
    if shutil.which("unzip"):
        run = subprocess.run(["unzip", "-tq", str(zip_path)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


def test_zip_reads_back_with_every_crc(tmp_path):
    members = _files(tmp_path / "src", 5, big=3 * set_archive.CHUNK + 17)  # one over 3 chunks
    path = write_zip(tmp_path / "out" / "a.zip", iter(members))
    _check(path, members)
    assert b"PK\x06\x06" not in path.read_bytes()  # small: no ZIP64 record needed
    assert [p.name for p in path.parent.iterdir()] == ["a.zip"]  # no temporary file left


def test_zip64_records_where_sizes_offsets_or_counts_need_them(tmp_path, monkeypatch):
    monkeypatch.setattr(set_archive, "ZIP64_SIZE", 2500)  # as if files were over 4 GiB
    monkeypatch.setattr(set_archive, "ZIP64_COUNT", 3)  # as if there were over 65535
    members = _files(tmp_path / "src", 6, size=1200)
    path = write_zip(tmp_path / "z64.zip", iter(members))
    data = path.read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record + locator
    _check(path, members)


def test_a_failed_write_leaves_no_file(tmp_path):
    members = _files(tmp_path / "src", 2)

    def broken():
        yield from members
        yield "set/missing.bin", tmp_path / "src" / "missing.bin"

    with pytest.raises(FileNotFoundError):
        write_zip(tmp_path / "out" / "b.zip", broken())
    assert list((tmp_path / "out").iterdir()) == []


def _peak_bytes(members, path) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        write_zip(path, iter(members))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_files(tmp_path, monkeypatch):
    monkeypatch.setattr(set_archive, "CHUNK", 16 * 1024)  # small reads: the rest shows
    few = _files(tmp_path / "few", 50, size=200)
    many = _files(tmp_path / "many", 2000, size=200)
    _peak_bytes(few, tmp_path / "warm.zip")  # imports and first-use allocations
    growth = _peak_bytes(many, tmp_path / "many.zip") - _peak_bytes(few, tmp_path / "few.zip")
    # zipfile.ZipFile would hold 2000 ZipInfo entries here (about 0.7 MB)
    assert growth < 50_000, growth


def _set(ws, name: str) -> Path:
    d = ws.synthetic_dir(name)
    for sub in ("imagesTr", "labelsTr"):
        (d / sub).mkdir(parents=True)
    for i in (1, 2):
        (d / "imagesTr" / f"SYN-000{i}__CT.nii.gz").write_bytes(os.urandom(300))
        (d / "labelsTr" / f"SYN-000{i}.nii.gz").write_bytes(os.urandom(100))
    (d / "datacard.json").write_text(json.dumps({"name": name}))
    (d / "dataset.json").write_text(json.dumps({"name": name, "training": []}))
    (d / ".datacard.lock").write_text("")
    return d


def test_archive_of_a_set_is_written_once_per_version(workspace):
    d = _set(workspace, "s1")
    path = archive_set(workspace, "s1")
    assert path.parent == workspace.archive_dir("s1")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert names[:2] == ["s1/datacard.json", "s1/dataset.json"]
    assert sorted(names[2:]) == [
        "s1/imagesTr/SYN-0001__CT.nii.gz",
        "s1/imagesTr/SYN-0002__CT.nii.gz",
        "s1/labelsTr/SYN-0001.nii.gz",
        "s1/labelsTr/SYN-0002.nii.gz",
    ]  # fmt: skip  (hidden files such as the card's lock file are left out)
    mtime = path.stat().st_mtime_ns
    assert archive_set(workspace, "s1") == path and path.stat().st_mtime_ns == mtime  # cached

    shutil.rmtree(d)  # the set generated again under the same name
    _set(workspace, "s1")
    new = archive_set(workspace, "s1")
    assert new != path and not path.exists()
    assert [p.name for p in workspace.archive_dir("s1").iterdir()] == [new.name]


def test_archive_refuses_what_is_not_a_complete_set(workspace):
    (workspace.synthetic / "half").mkdir()
    with pytest.raises(WorkspaceError, match="not a complete synthetic set"):
        archive_set(workspace, "half")
    with pytest.raises(WorkspaceError):
        archive_set(workspace, "../escape")
