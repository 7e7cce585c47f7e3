"""Picture of a run's generator against real cases: the collapse probe's eight fixed real train
cases (top block) and its eight fixed-seed EMA samples (bottom block).

    .venv/bin/python scripts/demo_model_grid.py --workspace WS --run demo-hagan64 --out PNG

Each block has four rows per column (one case): axial slices of the image half at 30 %, 50 %
and 70 % of its height, then the tumour mask's projection along z (white: tumour anywhere in
the column). Also prints the probe's diversity numbers (synthct.collapse), the ones the
training loop logs.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def rows(volumes: np.ndarray) -> np.ndarray:
    """(n, S, S, S) packed pairs in [-1, 1] -> uint8 picture (4 S, n S), radiological view."""
    half = volumes.shape[-1] // 2
    img, msk = volumes[..., :half], volumes[..., half:]
    out = [np.concatenate([v[..., int(f * half)].T[::-1] for v in img], 1) for f in (0.3, 0.5, 0.7)]
    out.append(np.concatenate([np.where((m > 0).any(-1), 1.0, -1.0).T[::-1] for m in msk], 1))
    pic = np.concatenate(out, 0)
    return ((np.clip(pic, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--run", default="demo-hagan64")
    ap.add_argument("--checkpoint", default="latest")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from synthct.checkpoint import load_generator
    from synthct.collapse import N_COLLAPSE, check_collapse, probe_samples
    from synthct.io import save_png
    from synthct.preprocess import load_packed
    from synthct.views.volumes import N_PROBE
    from synthct.workspace import Workspace

    ws = Workspace.resolve(args.workspace)
    model, cfg, meta = load_generator(ws.run_dir(args.run), args.checkpoint, ema=True)
    data = model.view.training_data(load_packed(ws, cfg.data, split="train"), "train")
    probe = model.view.probe(data, cfg)
    fake = probe_samples(model, {}, N_COLLAPSE, cfg.train.seed, torch.device("cpu"))
    fake_div, real_div, _ = check_collapse(probe, fake, {"strikes": 0, "flagged": False})
    pick = torch.randperm(len(data.items), generator=torch.Generator().manual_seed(cfg.train.seed))
    real = data.items[pick[:N_PROBE]].numpy()
    size = real.shape[1]
    gap = np.zeros((size // 4, size * N_PROBE), np.uint8)
    picture = np.concatenate([rows(real), gap, rows(fake[:, 0].numpy())], 0)
    picture = picture.repeat(2, 0).repeat(2, 1)
    save_png(picture, args.out)
    print(
        f"step {meta['step']}: sample diversity {fake_div:.4f}, real {real_div:.4f} "
        f"({fake_div / real_div:.2f} x real); wrote {args.out}"
    )


if __name__ == "__main__":
    main()
