"""The training loop's snapshots and mode-collapse alarm, for every model and view.

Every `collapse_every` steps the loop draws a fixed-seed batch of N_COLLAPSE samples from the
EMA networks and asks the model's view for their features (`Probe.features`: the image halves
pooled to <= 16x16x8 voxels for volumes, the CT channel pooled to <= 32x32 for slices); their
diversity is the mean pairwise RMS distance between samples (in [-1, 1] units). The same number
is computed once for a fixed draw of real train cases (`Probe.real_diversity`). The run is
flagged when the samples' diversity falls below COLLAPSE_RATIO (0.25) of the real diversity at
two consecutive checks: identical samples score 0. A distance, unlike a cosine around the real
mean, is not fooled by a common offset of all samples (e.g. all too bright).

Snapshots: N_SNAPSHOT samples from the same fixed latents, drawn by the view (`Probe.snapshot`).
Sampling never touches the training RNG streams (`ema_swapped` forks them), so snapshots and
checks do not change the losses of a run.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from synthct.models.base import GenerativeModel
from synthct.run_log import COLLAPSE_RATIO
from synthct.views import Probe, mean_pairwise_distance

N_SNAPSHOT, N_COLLAPSE = 4, 8
PROBE_SEED_OFFSET = 12345  # fixed latents: generator seeded with train.seed + this


@contextlib.contextmanager
def ema_swapped(model: GenerativeModel, ema: dict[str, nn.Module]):
    """Temporarily put the EMA networks into the model, in eval mode, RNG untouched."""
    live = {n: getattr(model, n) for n in ema}
    was_training = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            for n, m in ema.items():
                setattr(model, n, m)
            model.eval()
            yield model
        finally:
            for n, m in live.items():
                setattr(model, n, m)
            model.train(was_training)


def probe_samples(
    model: GenerativeModel, ema: dict[str, nn.Module], n: int, seed: int, device: torch.device
) -> torch.Tensor:
    """n samples of the EMA networks from fixed latents (a conditioned model cycles through
    its centres), float32, in the view's shape."""
    g = torch.Generator().manual_seed(seed + PROBE_SEED_OFFSET)
    with ema_swapped(model, ema):
        z = model.sample_latent(n, generator=g, device=device)
        centre = None
        if model.n_centres > 0:
            centre = torch.arange(n, device=device) % model.n_centres
        return model.generate(z, centre).float()


def check_collapse(probe: Probe, samples: torch.Tensor, alarm: dict) -> tuple[float, float, bool]:
    """(sample diversity, real diversity, flagged) and update the alarm's strike count."""
    fake_div = mean_pairwise_distance(probe.features(samples))
    alike = fake_div < COLLAPSE_RATIO * probe.real_diversity
    alarm["strikes"] = alarm["strikes"] + 1 if alike else 0
    alarm["flagged"] = bool(alarm["flagged"] or alarm["strikes"] >= 2)
    return fake_div, probe.real_diversity, alarm["strikes"] >= 2
