"""The offline default feature space: a small 3D CNN trained on the workspace's real train split.

Why: the standard 3D feature network (MedicalNet) must be downloaded, and synthct never
downloads at run time. This encoder needs only the workspace's own real training cases.

Architecture: four stride-2 conv blocks (GroupNorm, so features never depend on batch
composition) -> global average pool -> a 128-d embedding (the penultimate layer, used as the
features) -> two heads:

* a centre-classification head (softmax over the training centres), so that a valid
  classifier-based Inception Score exists;
* an auxiliary regression head predicting standardised per-case descriptors computed from the
  packed volume itself: log tumour volume fraction, tumour centroid (x, y, z), body fraction and
  mean body intensity. This keeps the embedding informative about anatomy and tumour burden even
  when centres are few (one centre makes the classification loss constant).

Loss = cross-entropy(centre) + MSE(descriptors). Trained with Adam, seeded, deterministic batch
order. The weights file (WS/evals/encoders/<key>-e<epochs>-s<seed>.pt, `key` = hash of the input
grid, part and training case ids) is identified by its SHA-256; it loads with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synthct.config import HU_WINDOW
from synthct.errors import WorkspaceError
from synthct.metrics.features import FeatureExtractor, select_part
from synthct.runtime import file_sha256, load_weights, pick_device, save_weights
from synthct.workspace import Workspace

ENCODER_VERSION = "small3d-v1"
EMBED_DIM = 128
DEFAULT_EPOCHS = 10
DESCRIPTORS = (
    "log_tumour_fraction",
    "tumour_cx",
    "tumour_cy",
    "tumour_cz",
    "body_fraction",
    "body_mean",
)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=2, padding=1),
        nn.GroupNorm(min(8, cout), cout),
        nn.LeakyReLU(0.2),
        nn.Conv3d(cout, cout, 3, padding=1),
        nn.GroupNorm(min(8, cout), cout),
        nn.LeakyReLU(0.2),
    )


class SmallEncoder3D(nn.Module):
    """(B, 1, X, Y, Z) -> features (B, 128); heads: centre logits (B, C), descriptors (B, A)."""

    dim = EMBED_DIM

    def __init__(self, n_classes: int, n_aux: int = len(DESCRIPTORS), width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 8 * w)
        )
        self.embed = nn.Linear(8 * w, EMBED_DIM)
        self.centre_head = nn.Linear(EMBED_DIM, n_classes)
        self.aux_head = nn.Linear(EMBED_DIM, n_aux)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.embed(self.body(x).mean(dim=(2, 3, 4))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.centre_head(f), self.aux_head(f)


def compute_descriptors(
    packed: np.ndarray, packing: str = "z", hu_window: tuple[float, float] = HU_WINDOW
) -> np.ndarray:
    """Per-case targets (N, 6) from packed pairs (N, S, S, S) in [-1, 1] (see `DESCRIPTORS`)."""
    img = select_part(packed, "image", packing)[:, 0]
    msk = select_part(packed, "mask", packing)[:, 0] > 0
    body_level = _body_level(hu_window)
    out = np.zeros((len(img), len(DESCRIPTORS)))
    grid = [
        np.linspace(0, 1, s)[(slice(None),) + (None,) * (2 - i)]
        for i, s in enumerate(msk.shape[1:])
    ]
    for i in range(len(img)):
        m = msk[i]
        frac = m.mean()
        cen = [float((g * m).sum() / m.sum()) if m.any() else 0.5 for g in grid]
        body = img[i] > body_level
        out[i] = [
            np.log(frac + 1e-5),
            *cen,
            body.mean(),
            float(img[i][body].mean()) if body.any() else -1.0,
        ]
    return out


def encoder_key(
    size: int, part: str, packing: str, hu_window: Sequence[float], train_sha: str
) -> str:
    """Hash of what the encoder's features depend on: input grid, part and training cases."""
    blob = json.dumps([ENCODER_VERSION, size, part, packing, list(hu_window), train_sha])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def encoder_path(ws: Workspace, key: str, epochs: int, seed: int) -> Path:
    """WS/evals/encoders/<key>-e<epochs>-s<seed>.pt"""
    return ws.encoder_file(f"{key}-e{epochs}-s{seed}.pt")


def find_encoder(ws: Workspace, key: str) -> Path | None:
    """The newest cached encoder for `key` (any epochs/seed), or None."""
    found = ws.list_encoders(f"{key}-e*-s*.pt")
    return found[-1] if found else None


def train_encoder(
    packed: np.ndarray,
    centres: Sequence[str],
    *,
    part: str = "pair",
    packing: str = "z",
    hu_window: tuple[float, float] = HU_WINDOW,
    epochs: int = 10,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    device=None,
    progress=None,
) -> tuple[dict, dict]:
    """Train on packed real pairs (N, S, S, S) with centre labels; returns (state_dict, meta)."""
    if len(packed) < 2:
        raise WorkspaceError(f"encoder training needs >= 2 training cases, got {len(packed)}")
    dev = pick_device(device)
    classes = sorted(set(centres))
    y = torch.tensor([classes.index(c) for c in centres])
    desc = compute_descriptors(packed, packing, hu_window)
    mu, sd = desc.mean(0), desc.std(0) + 1e-6
    target = torch.tensor((desc - mu) / sd, dtype=torch.float32)
    x_all = torch.as_tensor(
        np.ascontiguousarray(select_part(packed, part, packing)), dtype=torch.float32
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallEncoder3D(len(classes)).to(dev)
    losses = _fit(net, x_all, y, target, dev, epochs, batch_size, lr, seed, progress)
    meta = {
        "version": ENCODER_VERSION,
        "part": part,
        "packing": packing,
        "hu_window": list(hu_window),
        "classes": classes,
        "descriptors": list(DESCRIPTORS),
        "descriptor_mean": mu.tolist(),
        "descriptor_std": sd.tolist(),
        "epochs": epochs,
        "seed": seed,
        "n_train": len(packed),
        "losses": losses,
    }
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}, meta


def _body_level(hu_window: tuple[float, float]) -> float:
    """HU -500 (the body threshold) in the packed [-1, 1] units of `hu_window`."""
    from synthct.preprocess import hu_to_unit

    return float(hu_to_unit(np.float64(-500.0), hu_window))


def _fit(net, x_all, y, target, dev, epochs, batch_size, lr, seed, progress) -> list[float]:
    """Adam on centre cross-entropy + descriptor MSE, seeded shuffles; mean loss per epoch."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    epochs_iter = range(epochs)
    for _ in progress(epochs_iter) if progress else epochs_iter:
        net.train()
        perm = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            b = perm[i : i + batch_size]
            logits, aux = net(x_all[b].to(dev))
            loss = F.cross_entropy(logits, y[b].to(dev)) + F.mse_loss(aux, target[b].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / len(perm))
    return losses


def save_encoder(path: Path, state: dict, meta: dict) -> str:
    """Write the encoder atomically; returns the SHA-256 of the file."""
    save_weights({"state_dict": state, "meta": meta}, path)
    return file_sha256(path)


def load_encoder(path: str | Path, device=None, batch_size: int = 4) -> FeatureExtractor:
    """A trained encoder file -> `FeatureExtractor` (features = 128-d penultimate layer)."""
    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"encoder file {path} not found; run `synthct eval train-encoder`")
    obj = load_weights(path, what="encoder")
    meta = obj["meta"]
    net = SmallEncoder3D(len(meta["classes"]))
    net.load_state_dict(obj["state_dict"])
    return FeatureExtractor(
        net,
        name="default",
        version=f"{meta['version']}-{meta['part']}-{path.stem}",
        weights_sha256=file_sha256(path),
        dim=EMBED_DIM,
        input_note=f"packed {meta['part']} in [-1, 1]; encoder trained on {meta['n_train']} real train cases",
        features_fn=lambda m, x: m.features(x),
        probs_fn=lambda m, x: torch.softmax(m(x)[0], dim=1),
        class_names=list(meta["classes"]),
        batch_size=batch_size,
        device=device,
    )


# -- the 2D twin (slice-level evaluation) -------------------------------------------------------
SLICE_DESCRIPTORS = ("log_tumour_fraction", "tumour_cx", "tumour_cy", "body_fraction", "body_mean")


def slice_descriptors(pairs: np.ndarray, hu_window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Per-slice targets (N, 5) from slice pairs (N, 2, R, R) in [-1, 1] (`SLICE_DESCRIPTORS`)."""
    x = np.asarray(pairs, dtype=np.float64)
    img, msk = x[:, 0], x[:, 1] > 0
    body = img > _body_level(hu_window)
    gx = np.linspace(0, 1, x.shape[2])[None, :, None]
    gy = np.linspace(0, 1, x.shape[3])[None, None, :]
    area = msk.sum((1, 2))
    safe = np.maximum(area, 1)
    cx = np.where(area > 0, (msk * gx).sum((1, 2)) / safe, 0.5)
    cy = np.where(area > 0, (msk * gy).sum((1, 2)) / safe, 0.5)
    n_body = body.sum((1, 2))
    body_mean = np.where(n_body > 0, (img * body).sum((1, 2)) / np.maximum(n_body, 1), -1.0)
    return np.stack([np.log(msk.mean((1, 2)) + 1e-5), cx, cy, body.mean((1, 2)), body_mean], 1)


def slice_encoder_key(resolution: int, part: str, cfg_hash: str, train_sha: str) -> str:
    """Hash of what the 2D encoder depends on: slice side, part, preprocessing, training cases."""
    blob = json.dumps(["small2d-v1", resolution, part, cfg_hash, train_sha])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def slice_encoder_path(ws: Workspace, key: str, epochs: int, seed: int) -> Path:
    """WS/evals/encoders/slices-<key>-e<epochs>-s<seed>.pt"""
    return ws.encoder_file(f"slices-{key}-e{epochs}-s{seed}.pt")


def find_slice_encoder(ws: Workspace, key: str) -> Path | None:
    found = ws.list_encoders(f"slices-{key}-e*-s*.pt")
    return found[-1] if found else None


def train_slice_encoder(
    pairs: np.ndarray,
    centres: Sequence[str],
    *,
    part: str = "pair",
    hu_window: tuple[float, float] = HU_WINDOW,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device=None,
    progress=None,
) -> tuple[dict, dict]:
    """Train `SmallEncoder2D` on real slice pairs (N, 2, R, R) with the centre of each slice's
    case as label, plus the `SLICE_DESCRIPTORS` regression; returns (state_dict, meta)."""
    from synthct.metrics.features import SLICE_ENCODER_VERSION, SLICE_PART_CHANNELS, SmallEncoder2D

    if len(pairs) < 2:
        raise WorkspaceError(f"slice encoder training needs >= 2 slices, got {len(pairs)}")
    dev = pick_device(device)
    classes = sorted(set(centres))
    y = torch.tensor([classes.index(c) for c in centres])
    desc = slice_descriptors(pairs, hu_window)
    mu, sd = desc.mean(0), desc.std(0) + 1e-6
    target = torch.tensor((desc - mu) / sd, dtype=torch.float32)
    chans = SLICE_PART_CHANNELS[part]
    x_all = torch.as_tensor(np.ascontiguousarray(pairs), dtype=torch.float32)[:, chans]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallEncoder2D(len(chans), len(classes), len(SLICE_DESCRIPTORS)).to(dev)
    losses = _fit(net, x_all, y, target, dev, epochs, batch_size, lr, seed, progress)
    meta = {
        "version": SLICE_ENCODER_VERSION,
        "part": part,
        "resolution": int(pairs.shape[-1]),
        "hu_window": list(hu_window),
        "classes": classes,
        "descriptors": list(SLICE_DESCRIPTORS),
        "descriptor_mean": mu.tolist(),
        "descriptor_std": sd.tolist(),
        "epochs": epochs,
        "seed": seed,
        "n_train": len(pairs),
        "losses": losses,
    }
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}, meta
