"""Start a two-process gloo DDP test on CPU, retrying a start that lost its port.

The free port is only free when chosen: another process on the machine can take it before
rank 0 binds it, and the rendezvous then fails. Such a start is retried on a new port and in a
fresh folder; a failure of the training itself fails every attempt.
"""

from __future__ import annotations

import socket
from pathlib import Path

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker, tmp_path: Path, *args, world: int = 2) -> Path:
    """Run `worker(rank, world, port, ws_root, out, *args)` on `world` ranks; returns `out`."""
    for attempt in range(3):
        out = tmp_path / f"attempt{attempt}"
        try:
            mp.start_processes(
                worker, args=(world, free_port(), str(out / "ws"), str(out), *args),
                nprocs=world, join=True, start_method="spawn",
            )  # fmt: skip
            return out
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
