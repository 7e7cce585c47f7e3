"""Executor settings: where a background job runs and what it asks the cluster for.

An `executor:` section in a YAML file — the workspace's own `WS/executor.yaml`, or any file given
with `--executor-config` — sets the defaults; command-line flags override single fields::

    executor:
      kind: slurm                # local (this machine's queue) | slurm
      partition: gpu
      account: my-project
      qos: normal
      time_min: 1440             # SLURM's --time in minutes
      nodes: 1
      gpus_per_node: 1
      tasks_per_node: 1          # processes per node (DDP ranks); default: one per GPU
      cpus_per_task: 8
      mem_gb: 64
      signal_delay_s: 120        # USR2 this long before the time limit: checkpoint + requeue
      max_requeues: 20           # time-limit requeues before the job is left timed out
      setup: ["source /opt/venvs/synthct/bin/activate"]   # shell lines before the job starts
      python: /opt/venvs/synthct/bin/python               # interpreter on the nodes
      sbatch: {reservation: thesis}                       # any other sbatch option

Settings are plain data (a frozen dataclass); they are stored with each job row (`resources`),
so the jobs table says what every job asked for.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthct.config import from_dict, load_yaml, to_dict
from synthct.errors import ConfigError

if TYPE_CHECKING:
    from synthct.workspace import Workspace

EXECUTORS = ("local", "slurm")
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,:+=@%/-]{0,127}$")  # partition, account, qos …


@dataclasses.dataclass(frozen=True)
class ExecutorSettings:
    """Where a job runs (`kind`) and, for SLURM, the resources it requests."""

    kind: str = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int = 1
    mem_gb: float | None = None
    signal_delay_s: int = 120
    max_requeues: int = 20
    setup: tuple[str, ...] = ()
    python: str | None = None
    sbatch: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(
                f"executor kind {self.kind!r} is not valid; expected one of {EXECUTORS}"
            )
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and not _WORD.match(str(value)):
                raise ValueError(f"{name} {value!r} is not a valid SLURM name")
        for name, low in (("time_min", 1), ("nodes", 1), ("cpus_per_task", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        for name in ("gpus_per_node", "max_requeues", "signal_delay_s"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise ValueError(f"tasks_per_node must be >= 1, got {self.tasks_per_node}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ValueError(f"mem_gb must be > 0, got {self.mem_gb}")
        if self.signal_delay_s >= self.time_min * 60:
            raise ValueError(
                f"signal_delay_s ({self.signal_delay_s} s) must be shorter than the time limit "
                f"({self.time_min} min): the job would be asked to stop as soon as it starts"
            )
        if not isinstance(self.sbatch, dict) or not all(
            isinstance(k, str) and re.fullmatch(r"[a-z][a-z0-9-]*", k) for k in self.sbatch
        ):
            raise ValueError(
                f"sbatch must map option names (e.g. reservation) to values, got {self.sbatch!r}"
            )

    @property
    def ntasks_per_node(self) -> int:
        """Processes per node: as given, else one per GPU (at least one)."""
        return self.tasks_per_node or max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.ntasks_per_node


def load_settings(path: str | Path | None) -> dict[str, Any]:
    """The `executor:` mapping of a YAML file ({} when `path` is None or has no such file)."""

    if path is None:
        return {}
    path = Path(path)
    data = load_yaml(path)
    section = data.get("executor", data if "kind" in data else None)
    if not isinstance(section, dict):
        raise ConfigError(
            f"{path}: expected an 'executor:' mapping (see `synthct jobs submit --help`)"
        )
    return section


def resolve_settings(
    ws: Workspace | None = None, config: str | Path | None = None, **overrides: Any
) -> ExecutorSettings:
    """Settings from WS/executor.yaml, then `config`, then the non-None `overrides` (CLI flags)."""

    merged: dict[str, Any] = {}
    if ws is not None and ws.executor_file.is_file():
        merged.update(load_settings(ws.executor_file))
    if config is not None:
        merged.update(load_settings(config))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    where = str(config) if config is not None else "executor settings"
    return from_dict(ExecutorSettings, merged, where=where)


def to_row(settings: ExecutorSettings) -> dict[str, Any]:
    """The settings as plain data for the job row (`resources`)."""

    return to_dict(settings)
