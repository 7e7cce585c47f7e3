"""What a rater's browser receives for a case: PNG bytes whose length and name say nothing.

A rendered case PNG is compressed, so its byte length depends on the picture: in a study of
smooth synthetic and noisy real scans the size alone can tell them apart, and Streamlit names
each image by a hash of its bytes, so a duplicate case would arrive under the same URL as its
original. Every PNG a rater receives is therefore the sealed case PNG with one padding chunk
inserted right after IHDR:

- the chunk's type `PAD_TYPE` is a private, ancillary PNG chunk (PNG spec §5.4: decoders ignore
  it; it carries no metadata);
- its data are a 16-byte nonce followed by zero bytes, sized so that every image of a study has
  the same total length `study_length` (the study's largest case PNG + the chunk, rounded up to
  4 KiB);
- the nonce is HMAC-SHA256(rater key, public id): stable across reloads (the browser may cache
  it), different for every (rater, case slot) — duplicates included — and independent of the
  image content.

The sealed manifest keeps hashing the case PNG files (`png_sha256`); `strip_padding` returns a
received image to exactly those bytes, so anyone holding a received image can check it against
the manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import Iterable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAD_TYPE = b"blNk"  # ancillary (b), private (l), reserved bit clear (N), safe to copy (k)
NONCE_BYTES = 16
BLOCK = 4096
_CHUNK_OVERHEAD = 12  # length (4) + type (4) + CRC (4)


def _chunks(png: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, end offset) of every chunk; refuses bytes that are not a whole PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG: the 8-byte signature is missing")
    out, pos = [], len(PNG_SIGNATURE)
    while pos < len(png):
        if pos + 8 > len(png):
            raise ValueError(f"truncated PNG: chunk header at byte {pos}")
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        end = pos + _CHUNK_OVERHEAD + length
        if end > len(png):
            raise ValueError(f"truncated PNG: chunk at byte {pos} claims {length} bytes")
        out.append((pos, png[pos + 4 : pos + 8], end))
        pos = end
    if not out or out[0][1] != b"IHDR" or out[-1][1] != b"IEND":
        raise ValueError("not a PNG: it must start with IHDR and end with IEND")
    return out


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from the IHDR chunk."""
    _chunks(png)
    return struct.unpack(">II", png[16:24])


def study_length(case_png_sizes: Iterable[int]) -> int:
    """The one byte length every image of a study is padded to."""
    largest = max(case_png_sizes)
    need = largest + _CHUNK_OVERHEAD + NONCE_BYTES
    return -(-need // BLOCK) * BLOCK


def nonce(key: bytes, slot: str) -> bytes:
    """The per-(rater, case slot) nonce: HMAC-SHA256(key, slot), first NONCE_BYTES bytes."""
    return hmac.new(key, slot.encode("utf-8"), hashlib.sha256).digest()[:NONCE_BYTES]


def pad_png(png: bytes, length: int, nonce_bytes: bytes) -> bytes:
    """`png` with a padding chunk after IHDR so that the result is exactly `length` bytes."""
    chunks = _chunks(png)
    if any(ctype == PAD_TYPE for _, ctype, _ in chunks):
        raise ValueError("the PNG is already padded")
    if len(nonce_bytes) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce_bytes)}")
    data_len = length - len(png) - _CHUNK_OVERHEAD
    if data_len < NONCE_BYTES:
        raise ValueError(
            f"a {len(png)}-byte PNG cannot be padded to {length} bytes "
            f"(needs at least {len(png) + _CHUNK_OVERHEAD + NONCE_BYTES})"
        )
    data = nonce_bytes + bytes(data_len - NONCE_BYTES)
    crc = zlib.crc32(PAD_TYPE + data) & 0xFFFFFFFF
    chunk = struct.pack(">I", data_len) + PAD_TYPE + data + struct.pack(">I", crc)
    # Right after IHDR, the nonce lies in the first 64 KiB, which Streamlit hashes into the media
    # URL even for files over 1 MiB (it samples head, middle and tail of large files).
    ihdr_end = chunks[0][2]
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def strip_padding(png: bytes) -> bytes:
    """The sealed case PNG inside a received image (padding chunks removed)."""
    kept = [png[start:end] for start, ctype, end in _chunks(png) if ctype != PAD_TYPE]
    return PNG_SIGNATURE + b"".join(kept)
