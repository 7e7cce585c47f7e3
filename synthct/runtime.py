"""Where code runs and how its weights and identities are kept: device choice, hashing, weights I/O.

One place for three things every stage needs:

- `pick_device(spec)`: "auto" is the current CUDA device when there is one, else the CPU;
  "cpu", "cuda" and "cuda:N" are checked against this machine.
- hashes that identify artefacts in results: `file_sha256` (weights, checkpoints, sets),
  `case_ids_hash` (which real cases trained a model), `short_hash` (cache keys, ids).
- `save_weights` / `load_weights`: `torch.save` written atomically (temp file + fsync + rename)
  and `torch.load(weights_only=True)`, so a file from elsewhere cannot run code when loaded.

torch is imported inside the device and weights functions: hashing is used by light commands
(`synthct --help`, ingest) that must not pay torch's import time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthct.errors import ConfigError, WorkspaceError
from synthct.workspace import atomic_write_bytes

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def pick_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device for `spec` ("auto"/None: CUDA when available, else CPU).

    Raises ConfigError for an unknown spec or a CUDA device this machine does not have.
    """
    import torch  # heavy: only when a device is actually needed

    if isinstance(spec, torch.device):
        return spec
    if spec in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {spec!r} is not valid; expected {DEVICE_CHOICES}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {spec!r} is not supported; expected {DEVICE_CHOICES}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available on this machine")
    return dev


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def case_ids_hash(ids: Iterable[str]) -> str:
    """SHA-256 hex of the sorted case ids joined by newlines (which cases trained a model)."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode("utf-8")).hexdigest()


def short_hash(obj: Any, length: int = 12) -> str:
    """First `length` hex digits of the SHA-256 of `obj` as canonical JSON (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]


def save_weights(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to `path` atomically. `obj` must be plain data (dicts, lists, numbers,
    strings, tensors) so that `load_weights` can read it with weights_only=True."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_weights(path: str | os.PathLike, map_location: Any = "cpu", what: str = "weights") -> Any:
    """`torch.load(path, weights_only=True)`; WorkspaceError naming the file when it is missing
    or not a plain-data torch file (`what` names it in the message, e.g. "checkpoint")."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # RuntimeError / UnpicklingError / EOFError for bad files
        raise WorkspaceError(
            f"{what} {path} is unreadable or not a plain-data torch file ({type(e).__name__}: {e})"
        ) from None
