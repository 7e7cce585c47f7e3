"""Where background jobs run: this machine's queue (`local`) or a SLURM cluster (`slurm`).

- `local` is the embedded default: `synthct.jobs` starts each job as a process on this machine
  (one per GPU, `SYNTHCT_MAX_CPU_JOBS` on the CPU) and watches its pid. A local job belongs to
  the host that submitted it; other hosts sharing the database never start, reconcile or
  cancel it.
- `slurm` (`synthct.executors.slurm`) submits the job with submitit, which writes the sbatch
  script, pickles the call and reads SLURM's accounting; `synthct.executors.slurm_task` is what
  runs on the compute nodes (DDP rendezvous, stop signals, requeue, the job row).

Settings (partition, GPUs, CPUs, memory, time, account …) come from an `executor:` YAML section
or command-line flags: `synthct.executors.settings`.
"""

from __future__ import annotations

from synthct.executors.settings import EXECUTORS, ExecutorSettings, resolve_settings

__all__ = ["EXECUTORS", "ExecutorSettings", "resolve_settings"]
