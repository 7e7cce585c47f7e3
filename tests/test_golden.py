"""Golden tests: seeded numbers of every model kind, a generated case and an evaluation, pinned.

They pin behaviour, not structure: for every model kind at its tiny (test) size and at the
reference size, the parameter sums after a seeded initialisation and a seeded forward of each
network; at the tiny size also the losses of two seeded training steps through the loop's own
update; a seeded generated case; and the distance block of an evaluation on fixed features.
A refactoring that keeps the maths keeps these numbers (to float32 rounding); a change that
alters what a network computes (e.g. zeroing the HA-GAN discriminator's slab position) does not.

The values live in tests/golden_values.json. After a deliberate change of behaviour, rewrite
them with `SYNTHCT_WRITE_GOLDEN=1 pytest tests/test_golden.py` and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).with_name("golden_values.json")
WRITE = os.environ.get("SYNTHCT_WRITE_GOLDEN") == "1"
RTOL = 2e-4  # float32 rounding of a reordered reduction; real changes move values far more

# kind, size class, model settings, data size S
SYSTEMS = {
    "hagan-tiny": ("hagan", dict(latent_dim=64, width=0.125), 32),
    "hagan-tiny-centres": ("hagan", dict(latent_dim=64, width=0.125, n_centres=3), 32),
    "hagan-reference-128": ("hagan", dict(latent_dim=1024, width=1.0), 128),
    "vanilla-tiny": ("vanilla", dict(width=0.125), 32),
    "wgan-gp-tiny": ("wgan", dict(width=0.125, wgan_mode="gp", n_critic=2), 32),
    "wgan-clip-tiny": ("wgan", dict(width=0.125, wgan_mode="clip", n_critic=2), 32),
    "fastgan-tiny": ("fastgan", dict(latent_dim=64, width=0.125, diffaug="color,translation"), 32),
    "fastgan-reference-256": ("fastgan", dict(latent_dim=256, width=1.0, resolution=256), 256),
    "stylegan2-tiny": (
        "stylegan2",
        dict(latent_dim=64, width=0.0625, diffaug="color,translation,cutout"),
        32,
    ),
    "stylegan2-reference-128": ("stylegan2", dict(latent_dim=512, width=1.0), 128),
}
TRAINED = [k for k in SYSTEMS if "reference" not in k]


def _golden() -> dict:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


def _record(key: str, value) -> None:
    data = _golden()
    data[key] = value
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _summary(t) -> dict:
    """Shape, sum, sum of squares and 8 fixed entries of a tensor/array (float64 reductions)."""
    a = np.asarray(t.detach().double().cpu().numpy() if torch.is_tensor(t) else t, np.float64)
    flat = a.ravel()
    idx = np.linspace(0, flat.size - 1, 8).round().astype(int)
    return {
        "shape": list(a.shape),
        "sum": float(flat.sum()),
        "sumsq": float((flat**2).sum()),
        "probe": [float(v) for v in flat[idx]],
    }


def _close(got, want, path: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{path}: keys differ"
        for k in want:
            _close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: length differs"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        scale = max(abs(want), 1e-3)
        assert abs(got - want) <= RTOL * scale, f"{path}: {got!r} != golden {want!r}"
    else:
        assert got == want, f"{path}: {got!r} != golden {want!r}"


def _check(key: str, value) -> None:
    value = json.loads(json.dumps(value))  # the JSON round trip the golden file went through
    if WRITE:
        _record(key, value)
        return
    golden = _golden()
    assert key in golden, f"no golden value for {key}; run with SYNTHCT_WRITE_GOLDEN=1"
    _close(value, golden[key], key)


def _system(name: str):
    from synthct.config import DataConfig
    from synthct.models import build_model, thesis_model_config

    kind, settings, size = SYSTEMS[name]
    torch.manual_seed(0)
    return build_model(thesis_model_config(kind, **settings), DataConfig(size=size))


def _network_sums(system) -> dict:
    return {
        name: float(sum(p.detach().double().sum() for p in child.parameters()))
        for name, child in system.named_children()
        if any(True for _ in child.parameters())
    }


def _real_batch(system, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if system.view.name == "slices":
        r = system.resolution
        x = torch.rand(batch, 2, r, r, generator=g) * 2 - 1
        x[:, 1] = torch.where(x[:, 1] > 0.6, 1.0, -1.0)  # a binary mask channel
        return x
    s = system.size
    x = torch.rand(batch, 1, s, s, s, generator=g) * 2 - 1
    x[..., s // 2 :] = torch.where(x[..., s // 2 :] > 0.6, 1.0, -1.0)
    return x


def _forwards(name: str, system) -> dict:
    """A seeded forward of each network of the system."""
    kind = SYSTEMS[name][0]
    g = torch.Generator().manual_seed(1)
    out: dict = {}
    with torch.no_grad():
        if kind == "hagan":
            from synthct.models.hagan import crop_positions, extract_slab

            z = torch.randn(2, system.latent_dim, generator=g)
            onehot = None
            if system.n_centres:
                onehot = torch.nn.functional.one_hot(torch.tensor([0, 2]), system.n_centres)
                onehot = onehot.float()
            last = crop_positions(system.size)[-1]
            out["G.slab"], out["G.low"] = system.G(z, onehot, last)
            real = _real_batch(system, 2, 2)
            for crop in (0, last):
                logit, cls = system.D(*system.real_targets(real, crop), crop)
                out[f"D.crop{crop}"] = logit
                if cls is not None:
                    out[f"D.class.crop{crop}"] = cls
            out["E"] = system.E(extract_slab(real, 0))
            out["Sub_E"] = system.Sub_E(system.encode_latent(real))
        elif kind in ("vanilla", "wgan"):
            z = system.sample_latent(2, generator=g)
            out["G"] = system.G(z)
            out["D"] = system.D(_real_batch(system, 2, 2))
        elif kind == "fastgan":
            from synthct.models.fastgan import _down

            z = torch.randn(2, system.latent_dim, generator=g)
            out["G.big"], out["G.small"] = system.G(z, torch.Generator().manual_seed(2))
            real = _real_batch(system, 2, 2)
            logits, recs = system.D(real, _down(real, system.resolution // 2), 1)
            out["D.logits"] = logits
            for i, r in enumerate(recs):
                out[f"D.rec{i}"] = r
        else:
            z = torch.randn(2, system.latent_dim, generator=g)
            out["G"] = system.generate(z)
            out["D"] = system.D(_real_batch(system, 2, 2))
    return {k: _summary(v) for k, v in out.items()}


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_init_and_forward(name):
    system = _system(name)
    system.train()
    _check(f"{name}/init", _network_sums(system))
    system.eval()
    _check(f"{name}/forward", _forwards(name, system))


@pytest.mark.parametrize("name", TRAINED)
def test_train_steps_and_generate(name):
    from synthct.models.base import StepContext
    from synthct.train import make_update

    system = _system(name)
    system.train()
    opts = system.configure_optimizers()
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(6)
    losses = []
    centre = torch.tensor([0, 2]) if system.n_centres else None
    for step in range(2):
        ctx = StepContext(step, torch.device("cpu"), gen, make_update(opts, step, 1))
        real = _real_batch(system, 2, 10 + step)
        out = (
            system.train_step(real, ctx, centre)
            if centre is not None
            else system.train_step(real, ctx)
        )
        losses.append({k: float(v) for k, v in out.items()})
    _check(f"{name}/losses", losses)
    _check(f"{name}/after-steps", _network_sums(system))

    from synthct.generate import generate_case

    system.eval()
    image, mask = generate_case(system, 1234, mask_postprocess="binary")
    _check(
        f"{name}/generated-case",
        {"image": _summary(image.astype(np.float64)), "mask_voxels": int(mask.sum())},
    )


def test_evaluation_distance_block():
    """The distance block of an evaluation on fixed (cases, slices, d) features."""
    from synthct.metrics.distance_block import distance_metrics
    from synthct.metrics.evaluation import EvalConfig

    rng = np.random.default_rng(3)
    real = rng.normal(size=(16, 1, 12)) + rng.normal(size=(16, 3, 12)) * 0.5
    syn = rng.normal(size=(14, 1, 12)) * 1.1 + 0.2 + rng.normal(size=(14, 3, 12)) * 0.5
    opts = EvalConfig(synthetic="golden", n_boot=20, baseline_repeats=5, kid_subsets=10)
    info = {"name": "fixed", "version": "1", "weights_sha256": "0" * 64}
    got = distance_metrics(real, syn, info, opts)

    def numbers(d):
        if isinstance(d, dict):
            return {k: numbers(v) for k, v in d.items() if k not in ("method", "warnings")}
        return d

    _check("evaluation/distance-block", numbers(got))
