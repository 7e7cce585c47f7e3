"""A synthetic set as one zip file, written once per version of the set, in flat memory.

`archive_set` writes WS/archives/<set>/<stamp>.zip (atomically: a temporary file in the same
folder, then `os.replace`) and returns it; the stamp comes from the set folder's and its cards'
identities, so a set generated again under the same name gets a new archive and the old one is
removed. The zip holds `<set>/datacard.json`, `<set>/dataset.json`, `<set>/imagesTr/…`,
`<set>/labelsTr/…` (and the PNG previews of 2D sets), every member stored as it is (the NIfTI
files are gzip already).

Why a writer of our own: Python's `zipfile` keeps one `ZipInfo` per member until it writes the
central directory at the end, so its memory grows with the number of files. `ZipStream` writes
each member's central-directory record to a temporary spool file instead and copies it to the
end of the archive, so what it holds is one read buffer, whatever the number or size of the
files. It writes the ZIP format (PKWARE APPNOTE 6.3.9) with stored members, UTF-8 names, and
ZIP64 fields only where a size, an offset or the member count needs them; tests read its
output back with `zipfile` and check every CRC.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from synthct.errors import WorkspaceError
from synthct.workspace import Workspace

CHUNK = 1 << 20  # bytes read at a time
_MAX32, _MAX16 = 0xFFFFFFFF, 0xFFFF  # "see the ZIP64 record" placeholders
ZIP64_SIZE, ZIP64_COUNT = _MAX32, _MAX16  # from these on a field needs ZIP64
_UTF8 = 0x0800  # general purpose flag: names are UTF-8
_VERSION = 45  # "4.5: ZIP64 format extensions"
_MADE_BY = (3 << 8) | _VERSION  # UNIX, so the external attributes carry the file mode


def _dos_time(mtime: float) -> tuple[int, int]:
    t = time.localtime(max(mtime, 315532800.0))  # DOS dates start in 1980
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), (
        ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    )


def _field(value: int, limit: int, placeholder: int) -> int:
    """A value for a 16/32-bit field: itself, or the placeholder when ZIP64 holds it."""
    return placeholder if value >= limit else value


def _field(value: int, limit: int, placeholder: int) -> int:
    """A value for a 16/32-bit field: itself, or the placeholder when ZIP64 holds it."""
    return placeholder if value >= limit else value


class ZipStream:
    """A zip written member by member to a seekable binary file (see the module docstring)."""

    def __init__(self, out: BinaryIO, spool: BinaryIO) -> None:
        self.out, self.spool = out, spool
        self.count = 0
        self.start = out.tell()

    def add_file(self, arcname: str, path: Path) -> None:
        """Append the file at `path` as member `arcname` (stored, with its CRC-32)."""
        st = os.stat(path)
        size, offset = st.st_size, self.out.tell() - self.start
        name = arcname.encode("utf-8")
        dos_t, dos_d = _dos_time(st.st_mtime)
        big = size >= ZIP64_SIZE
        extra = struct.pack("<HHQQ", 1, 16, size, size) if big else b""
        sz32 = _MAX32 if big else size
        header = (0x04034B50, _VERSION, _UTF8, 0, dos_t, dos_d, 0, sz32, sz32, len(name),
                  len(extra))  # fmt: skip
        self.out.write(struct.pack("<IHHHHHIIIHH", *header) + name + extra)
        crc, done = 0, 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                crc = zlib.crc32(chunk, crc)
                done += len(chunk)
                self.out.write(chunk)
        if done != size:
            raise WorkspaceError(f"{path} changed size while it was archived ({size} -> {done})")
        end = self.out.tell()
        self.out.seek(self.start + offset + 14)  # the local header's CRC-32 field
        self.out.write(struct.pack("<I", crc))
        self.out.seek(end)

        fields = [v for v, needed in ((size, big), (size, big), (offset, offset >= ZIP64_SIZE))
                  if needed]  # fmt: skip
        cextra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        record = (0x02014B50, _MADE_BY, _VERSION, _UTF8, 0, dos_t, dos_d, crc, sz32, sz32,
                  len(name), len(cextra), 0, 0, 0, (st.st_mode & 0xFFFF) << 16,
                  _field(offset, ZIP64_SIZE, _MAX32))  # fmt: skip
        self.spool.write(struct.pack("<IHHHHHHIIIHHHHHII", *record) + name + cextra)
        self.count += 1

    def close(self) -> None:
        """Copy the central directory after the members and write the end records."""
        cd_offset = self.out.tell() - self.start
        self.spool.seek(0)
        shutil.copyfileobj(self.spool, self.out, CHUNK)
        cd_size = self.out.tell() - self.start - cd_offset
        n = self.count
        if n >= ZIP64_COUNT or cd_size >= ZIP64_SIZE or cd_offset >= ZIP64_SIZE:
            at = self.out.tell() - self.start
            end64 = (0x06064B50, 44, _MADE_BY, _VERSION, 0, 0, n, n, cd_size, cd_offset)
            self.out.write(struct.pack("<IQHHIIQQQQ", *end64))
            self.out.write(struct.pack("<IIQI", 0x07064B50, 0, at, 1))  # the ZIP64 locator
        n16 = _field(n, ZIP64_COUNT, _MAX16)
        end = (0x06054B50, 0, 0, n16, n16, _field(cd_size, ZIP64_SIZE, _MAX32),
               _field(cd_offset, ZIP64_SIZE, _MAX32), 0)  # fmt: skip
        self.out.write(struct.pack("<IHHHHIIH", *end))


def write_zip(path: Path, members: Iterator[tuple[str, Path]]) -> Path:
    """Write `members` ((name in the zip, file)) into the zip `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as out, tempfile.TemporaryFile(dir=path.parent) as spool:
            z = ZipStream(out, spool)
            for arcname, file in members:
                z.add_file(arcname, file)
            z.close()
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def set_members(set_dir: Path) -> Iterator[tuple[str, Path]]:
    """(name in the zip, file) of every file of a set: its cards, then each subfolder (in
    directory order: listing them sorted would hold every name); hidden files are left out."""
    set_dir = Path(set_dir)
    for entry in sorted(os.scandir(set_dir), key=lambda e: (e.is_dir(), e.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            yield f"{set_dir.name}/{entry.name}", Path(entry.path)
        elif entry.is_dir():
            with os.scandir(entry.path) as files:
                for f in files:
                    if not f.name.startswith(".") and f.is_file():
                        yield f"{set_dir.name}/{entry.name}/{f.name}", Path(f.path)


def set_stamp(set_dir: Path) -> str:
    """An identity of this version of the set: the folder and its cards (a set written again,
    or given a dataset.json, gets a new one)."""
    parts = []
    for p in (set_dir, set_dir / "datacard.json", set_dir / "dataset.json"):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def archive_path(ws: Workspace, name: str) -> Path:
    """Where the zip of this version of the set `name` is (or will be) kept."""
    set_dir = ws.synthetic_dir(name)
    if name not in ws.list_sets():
        raise WorkspaceError(f"{set_dir} is not a complete synthetic set (no datacard.json)")
    return ws.archive_dir(name) / f"{set_stamp(set_dir)}.zip"


def set_bytes(set_dir: Path) -> int:
    """Total size of the files a zip of the set holds (bytes), without reading them."""
    return sum(p.stat().st_size for _, p in set_members(set_dir))


def archive_set(ws: Workspace, name: str) -> Path:
    """WS/archives/<set>/<stamp>.zip of the complete set `name`, written if this version of
    the set has none yet (older versions' archives are removed)."""
    path = archive_path(ws, name)
    if not path.is_file():
        write_zip(path, set_members(ws.synthetic_dir(name)))
    for old in path.parent.glob("*.zip"):
        if old != path:
            old.unlink(missing_ok=True)
    return path
