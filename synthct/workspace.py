"""Where everything lives on disk, and how it is written (atomically).

`Workspace` owns every path of a project and every listing of its artefacts; no other module
joins workspace paths by hand. Layout::

    WS/data/cases.json           case index written by `synthct ingest`
    WS/data/splits.json          split registry: case id -> train | val | test | gan
    WS/data/fixed/               labels repaired at ingest
    WS/data/packed/<key>/        packed pair arrays + manifest.json (one folder per preprocess config)
    WS/runs/<run>/               config.yaml, checkpoints/, losses.csv, samples/
    WS/synthetic/<set>/          imagesTr/, labelsTr/, datacard.json, dataset.json
    WS/archives/<set>/           the set as one zip, written once per version of the set
    WS/evals/<eval>/             metrics.json + per-sample tables
    WS/evals/encoders/           the offline feature encoders trained on the workspace
    WS/evals/hpo-<grid>/         a grid search's ranked summary
    WS/segmentation/<exp>/       folds, curves, results.json
    WS/studies/<study>/          rendered case images + sealed manifest
    WS/jobs/                     background jobs' logs (<id>.log), frozen job configs (configs/),
                                 SLURM jobs' scripts and output files (slurm/)
    WS/executor.yaml             where background jobs run (an `executor:` section; optional)
    WS/optuna.db                 HPO studies (SQLite; in the project database when it is shared)
    WS/sources/                  inputs the workspace made itself (the demo's phantoms)
    WS/configs/                  the workspace's own run configs (beside the shipped ones)
    WS/synthct.db                SQLite (WAL): jobs, studies, raters, ratings
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
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

    @property
    def fixed(self) -> Path:
        return self.data / "fixed"

    @property
    def encoders(self) -> Path:
        return self.evals / "encoders"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def slurm_jobs(self) -> Path:
        """submitit's folder: sbatch scripts, pickled calls, per-task output files."""
        return self.jobs / "slurm"

    @property
    def job_configs(self) -> Path:
        return self.jobs / "configs"

    @property
    def executor_file(self) -> Path:
        return self.root / "executor.yaml"

    @property
    def optuna_db(self) -> Path:
        """The HPO studies' SQLite file (used when the project database is SQLite)."""
        return self.root / "optuna.db"

    @property
    def sources(self) -> Path:
        return self.root / "sources"

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    @property
    def demo_lock(self) -> Path:
        return self.root / ".demo.lock"

    @property
    def demo_state(self) -> Path:
        """The demo build's settings, stage markers and job records (synthct.demo)."""
        return self.root / "demo"

    # -- one artefact ------------------------------------------------------------------------
    def run_dir(self, name: str) -> Path:
        return self.confine(self.runs / check_name(name, "run name"))

    def synthetic_dir(self, name: str) -> Path:
        return self.confine(self.synthetic / check_name(name, "synthetic set name"))

    def archive_dir(self, set_name: str) -> Path:
        """WS/archives/<set>: zip files of a synthetic set (synthct.set_archive)."""
        return self.confine(self.archives / check_name(set_name, "synthetic set name"))

    def eval_dir(self, eval_id: str) -> Path:
        """WS/evals/<id>: an evaluation id is a set name plus its settings (longer names)."""
        return self.confine(self.evals / check_name(eval_id, "evaluation id", ID_MAX_LENGTH))

    def hpo_dir(self, grid: str) -> Path:
        return self.confine(self.evals / f"hpo-{check_name(grid, 'grid name')}")

    def experiment_dir(self, name: str) -> Path:
        return self.confine(self.segmentation / check_name(name, "experiment name", ID_MAX_LENGTH))

    def study_dir(self, name: str) -> Path:
        return self.confine(self.studies / check_name(name, "study name"))

    def encoder_file(self, name: str) -> Path:
        """WS/evals/encoders/<name> (a file name synthct derives from the encoder's settings)."""
        return self.confine(self.encoders / check_name(name, "encoder file", ID_MAX_LENGTH))

    def job_log(self, job_id: int) -> Path:
        """WS/jobs/<id>.log: a local job's output."""
        return self.jobs / f"{int(job_id)}.log"

    def job_config_file(self, name: str) -> Path:
        """WS/jobs/configs/<name>: a run config frozen for a background job."""
        return self.confine(self.job_configs / check_name(name, "job config file", ID_MAX_LENGTH))

    def packed_dir(self, key: str) -> Path:
        """WS/data/packed/<key>, key = s<S>-<hash of the preprocessing config>."""
        return self.confine(self.packed / key)

    # -- listings ------------------------------------------------------------------------------
    def list_runs(self) -> list[str]:
        """Run names (folders of WS/runs with a config.yaml), sorted."""
        return _names(self.runs, "config.yaml")

    def list_sets(self) -> list[str]:
        """Complete synthetic sets (folders with a datacard.json), sorted."""
        return _names(self.synthetic, "datacard.json")

    def list_evals(self) -> list[str]:
        """Evaluation ids (folders of WS/evals with a metrics.json), newest first."""
        found = _folders(self.evals, "metrics.json")
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]

    def list_experiments(self) -> list[str]:
        """Segmentation experiments with a finished results.json, sorted."""
        return _names(self.segmentation, "results.json")

    def list_hpo(self) -> list[str]:
        """Grid searches with a summary (WS/evals/hpo-<grid>/summary.json), sorted by grid."""
        return sorted(p.name[len("hpo-") :] for p in _folders(self.evals, "summary.json")
                      if p.name.startswith("hpo-"))  # fmt: skip

    def list_encoders(self, pattern: str = "*.pt") -> list[Path]:
        """Trained encoder files matching `pattern`, oldest first."""
        if not self.encoders.is_dir():
            return []
        return sorted(self.encoders.glob(pattern), key=lambda p: p.stat().st_mtime)

    def list_packed(self) -> list[Path]:
        """Packed folders (with a manifest.json), sorted by key."""
        return sorted(_folders(self.packed, "manifest.json"))

    def remove_stale_partials(self) -> list[Path]:
        """Partial folders of killed writers, removed from every folder that receives atomic
        folders (see `remove_stale_partials`)."""
        removed: list[Path] = []
        for d in (self.data, self.synthetic, self.evals, self.segmentation, self.studies):
            removed += remove_stale_partials(d)
        return removed

    def confine(self, path: str | os.PathLike) -> Path:
        """Resolve `path` (relative paths are taken inside the workspace) and refuse escapes."""
        p = Path(path)
        p = (p if p.is_absolute() else self.root / p).resolve()
        if p != self.root and self.root not in p.parents:
            raise WorkspaceError(
                f"path {str(path)!r} resolves to {p}, outside workspace {self.root}"
            )
        return p


NAME_MAX_LENGTH = 64
ID_MAX_LENGTH = 128  # identifiers derived from a name (evaluation ids, default experiment names)
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME_RULE_TEXT = (
    "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
)


def check_name(name: str, what: str = "name", max_length: int = NAME_MAX_LENGTH) -> str:
    """The one rule for names of runs, synthetic sets, studies, experiments and grids (they
    become folder names): 1-64 characters from letters, digits, '.', '_', '-', starting with a
    letter or digit — so no hidden folder (never listed), no path, no over-long file name.

    `max_length` is larger only for identifiers synthct derives from such names (an evaluation
    id is the set's name plus its settings). Returns `name`; raises WorkspaceError naming the
    value and the rule.
    """
    if not isinstance(name, str) or not NAME_RULE.match(name) or len(name) > max_length:
        shown = name if not isinstance(name, str) or len(name) <= 80 else name[:77] + "..."
        rule = NAME_RULE_TEXT.replace("1-64", f"1-{max_length}")
        length = f" ({len(name)} characters)" if isinstance(name, str) else ""
        raise WorkspaceError(f"{what} {shown!r}{length} is not valid: use {rule}")
    return name


def _folders(parent: Path, marker: str) -> list[Path]:
    """Visible sub-folders of `parent` that hold `marker` (a complete artefact)."""
    if not parent.is_dir():
        return []
    return [p for p in parent.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / marker).is_file()]  # fmt: skip


def _names(parent: Path, marker: str) -> list[str]:
    return sorted(p.name for p in _folders(parent, marker))


def is_valid_name(name: str) -> bool:
    """True when `name` follows the naming rule (for forms that check as the user types)."""
    try:
        check_name(name)
    except WorkspaceError:
        return False
    return True


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


# -- partial folders ---------------------------------------------------------------------------
PARTIAL_SUFFIX = ".partial"
# .<final name>.<host tag>-<pid>.<random>.partial — the writer is named, so leftovers of a killed
# writer can be told from a live one's work in progress.
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.partial$")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _boot_time() -> float:
    """When the machine booted (seconds since the epoch), to 10 ms (/proc/stat's btime is
    truncated to whole seconds, too coarse to tell a reused pid)."""
    return time.time() - float(Path("/proc/uptime").read_text().split()[0])


def process_start_time(pid: int) -> float | None:
    """Start time (seconds since the epoch, ~0.02 s accuracy) of live process `pid`; None when it
    does not exist or is a zombie. Without /proc (not Linux): 0.0 for any live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: liveness only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()  # fields[0] is the state, fields[19] the start time
    if fields[0] in ("Z", "X"):
        return None
    try:
        return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _writer_alive(pid: int, folder: Path) -> bool:
    """Is the process that created partial `folder` still running? A pid that now belongs to a
    process started after the folder last changed is a reused pid, not the writer."""
    start = process_start_time(pid)
    if start is None:
        return False
    try:
        changed = folder.stat().st_ctime
    except FileNotFoundError:
        return True  # already gone: nothing to do
    return start <= changed + 0.25  # start times are known to ~0.02 s


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the partial folders `atomic_dir` left in `folder` when their writer was killed
    (SIGKILL, power loss). A live writer's partial, and any partial written on another host
    (a shared workspace), are left alone. Returns the folders removed."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    host, removed = _host_tag(), []
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if m is None or m["host"] != host or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if not _writer_alive(int(m["pid"]), path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success rename it to `final`, on error delete it.

    The final folder therefore appears only when complete, and a crash never leaves half a set.
    The temporary folder is hidden and names its writer (host and pid); partial folders of
    writers that were killed are removed first (`remove_stale_partials`).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise WorkspaceError(f"{final} already exists; choose another name or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final.parent)
    tmp = Path(
        tempfile.mkdtemp(
            prefix=f".{final.name}.{_host_tag()}-{os.getpid()}.",
            suffix=PARTIAL_SUFFIX,
            dir=final.parent,
        )
    )
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
