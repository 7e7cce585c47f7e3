"""Where everything lives on disk, and how it is written (atomically).

Layout of a workspace (design §4)::

    WS/data/cases.json           case index written by `synthct ingest`
    WS/data/splits.json          split registry: case id -> train | val | test
    WS/data/packed/<key>/        packed pair arrays + manifest.json (one folder per preprocess config)
    WS/runs/<run>/               config.yaml, checkpoints/, losses.csv, samples/
    WS/synthetic/<set>/          imagesTr/, labelsTr/, datacard.json
    WS/evals/<eval>/             metrics.json + per-sample tables
    WS/segmentation/<exp>/       folds, curves, results.json
    WS/studies/<study>/          rendered PNGs + sealed manifest
    WS/synthct.db                SQLite (WAL): jobs, studies, raters, ratings
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from synthct.errors import WorkspaceError

ENV_WORKSPACE = "SYNTHCT_WORKSPACE"
DEFAULT_WORKSPACE = "workspace"


@dataclass(frozen=True)
class Workspace:
    """A project folder. All paths are absolute; nothing here creates files except `ensure`."""

    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None) -> Workspace:
        """`path`, else $SYNTHCT_WORKSPACE, else ./workspace."""
        raw = path if path is not None else os.environ.get(ENV_WORKSPACE, DEFAULT_WORKSPACE)
        return cls(Path(raw).expanduser().resolve())

    def ensure(self) -> Workspace:
        for d in (
            self.data,
            self.runs,
            self.synthetic,
            self.evals,
            self.segmentation,
            self.studies,
        ):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # -- folders -----------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def packed(self) -> Path:
        return self.data / "packed"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    @property
    def evals(self) -> Path:
        return self.root / "evals"

    @property
    def segmentation(self) -> Path:
        return self.root / "segmentation"

    @property
    def studies(self) -> Path:
        return self.root / "studies"

    # -- files -------------------------------------------------------------------------------
    @property
    def case_index(self) -> Path:
        return self.data / "cases.json"

    @property
    def splits(self) -> Path:
        return self.data / "splits.json"

    @property
    def database(self) -> Path:
        return self.root / "synthct.db"

    def run_dir(self, name: str) -> Path:
        return self.confine(self.runs / name)

    def synthetic_dir(self, name: str) -> Path:
        return self.confine(self.synthetic / name)

    def confine(self, path: str | os.PathLike) -> Path:
        """Resolve `path` (relative paths are taken inside the workspace) and refuse escapes."""
        p = Path(path)
        p = (p if p.is_absolute() else self.root / p).resolve()
        if p != self.root and self.root not in p.parents:
            raise WorkspaceError(
                f"path {str(path)!r} resolves to {p}, outside workspace {self.root}"
            )
        return p


def check_name(name: str, what: str = "name") -> str:
    """A run/set/study name must be a plain folder name: letters, digits, '-', '_', '.'."""
    ok = name and name not in {".", ".."} and all(c.isalnum() or c in "-_." for c in name)
    if not ok:
        raise WorkspaceError(f"{what} {name!r} is not valid: use letters, digits, '-', '_' or '.'")
    return name


# -- atomic writes -----------------------------------------------------------------------------
def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(f)` on a temp file in the same folder, fsync, then os.replace onto `path`.

    Readers see the old file or the whole new one, never a part; on error the temp file is
    removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkspaceError(f"{path} does not exist") from None
    except json.JSONDecodeError as e:
        raise WorkspaceError(f"{path} is not valid JSON: {e}") from None


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success rename it to `final`, on error delete it.

    The final folder therefore appears only when complete, and a crash never leaves half a set.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise WorkspaceError(f"{final} already exists; choose another name or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
