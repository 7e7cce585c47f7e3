"""Feature extractors for distribution metrics: one interface, three feature spaces.

A `FeatureExtractor` maps volumes (N, 1, X, Y, Z) in [-1, 1] to features (N, d) float64, in
batches, without gradients, on CUDA when present. It carries its identity (name, version, SHA-256
of its weights, output dimension, input preparation) so that every number computed from its
features can say what produced it (design §7).

Feature spaces:

* ``medicalnet``: MedicalNet ResNet-50 (Chen et al. 2019): 3D ResNet with bottleneck blocks,
  shortcut type B (1x1x1 conv + BN projections), layer3 dilation 2 and layer4 dilation 4 with
  stride 1, segmentation head replaced by global average pooling -> 2048-d. Input in [-1, 1] as
  in HA-GAN's evaluation. Weights come from a file the user supplies; the layout of the
  published file ({"state_dict": {"module.conv1.weight": ...}}) is accepted. Written here
  because no installed library ships this network (MONAI's ResNet has no dilation option), and
  loading must stay offline and `weights_only`.
* ``default``: a small 3D CNN trained on the workspace's real train split
  (`synthct.metrics.encoder`).
* ``random``: the same small CNN with fixed-seed random weights, a sanity baseline.

Slice level (2D models, and 3D sets compared slice by slice): `SliceFeatureExtractor` maps
slice pairs (N, 2, R, R) to (N, d); ``default`` is `SmallEncoder2D` trained on the real train
slices with a centre head (`encoder.train_slice_encoder`), ``random`` its fixed-seed twin.

`select_part` cuts the packed pair (image half, mask half or both) out of packed arrays.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthct.errors import ConfigError
from synthct.runtime import file_sha256, load_weights, pick_device

PARTS = ("image", "mask", "pair")
MEDICALNET_VERSION = "resnet50-shortcutB-dil2-4-gap"
RANDOM_SEED = 0


def select_part(packed: np.ndarray, part: str, packing: str = "z") -> np.ndarray:
    """Packed pairs (N, S, S, S) or (N, 1, S, S, S) -> (N, 1, X, Y, Z) of the requested part.

    part "image" -> image half (N, 1, S, S, S/2), "mask" -> mask half, "pair" -> the whole pair.
    packing "z": image in z < S/2; "interleave": image on even z slices (contract 2).
    """
    if part not in PARTS:
        raise ConfigError(f"part must be one of {PARTS}, got {part!r}")
    arr = np.asarray(packed)
    if arr.ndim == 4:
        arr = arr[:, None]
    if arr.ndim != 5 or arr.shape[1] != 1:
        raise ValueError(f"packed arrays must be (N, S, S, S) or (N, 1, S, S, S), got {arr.shape}")
    if part == "pair":
        return arr
    z = arr.shape[-1]
    if packing == "interleave":
        return arr[..., 0::2] if part == "image" else arr[..., 1::2]
    return arr[..., : z // 2] if part == "image" else arr[..., z // 2 :]


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over sorted keys, dtypes, shapes and raw bytes: stable for equal weights."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


class FeatureExtractor:
    """A frozen network + its identity. `extract((N, 1, X, Y, Z) in [-1, 1]) -> (N, d) float64`.

    `features_fn(module, x) -> (B, d)`; `probs_fn(module, x) -> (B, C)` when the network has a
    classifier head (only then is a classifier-IS defined).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        version: str,
        weights_sha256: str,
        dim: int,
        input_note: str,
        features_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        probs_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
        class_names: list[str] | None = None,
        batch_size: int = 4,
        device: torch.device | str | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.module = module.to(self.device).eval().requires_grad_(False)
        self.name, self.version, self.weights_sha256 = name, version, weights_sha256
        self.dim, self.input_note = dim, input_note
        self._features_fn, self._probs_fn = features_fn, probs_fn
        self.class_names = class_names or []
        self.batch_size = batch_size

    @property
    def has_classifier(self) -> bool:
        return self._probs_fn is not None

    def describe(self) -> dict:
        """Plain-dict identity recorded with every result."""
        return {
            "name": self.name,
            "version": self.version,
            "weights_sha256": self.weights_sha256,
            "dim": self.dim,
            "input": self.input_note,
            "classes": list(self.class_names),
        }

    def _check_shape(self, inputs) -> None:
        if inputs.ndim != 5 or inputs.shape[1] != 1:
            raise ValueError(f"volumes must be (N, 1, X, Y, Z), got shape {tuple(inputs.shape)}")

    def _select(self, x: torch.Tensor) -> torch.Tensor:
        """The part of a checked batch the network reads (all of it here)."""
        return x

    def _batches(self, inputs, progress: Callable | None):
        self._check_shape(inputs)
        idx = range(0, len(inputs), self.batch_size)
        for i in progress(idx) if progress else idx:
            x = torch.as_tensor(np.asarray(inputs[i : i + self.batch_size]), dtype=torch.float32)
            lo, hi = float(x.min()), float(x.max())
            if lo < -1.001 or hi > 1.001:
                raise ValueError(f"extractor input must lie in [-1, 1], got [{lo:.3f}, {hi:.3f}]")
            yield self._select(x).to(self.device)

    @torch.no_grad()
    def extract(self, volumes, progress: Callable | None = None) -> np.ndarray:
        """(N, 1, X, Y, Z) in [-1, 1] -> (N, d) float64 features."""
        out = [
            self._features_fn(self.module, x).double().cpu()
            for x in self._batches(volumes, progress)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim))

    @torch.no_grad()
    def class_probs(self, volumes, progress: Callable | None = None) -> np.ndarray:
        """(N, 1, X, Y, Z) -> (N, C) class probabilities (softmax of the classifier head)."""
        if self._probs_fn is None:
            raise ValueError(f"extractor {self.name!r} has no classifier head")
        out = [
            self._probs_fn(self.module, x).double().cpu() for x in self._batches(volumes, progress)
        ]
        return torch.cat(out).numpy()


# -- MedicalNet ResNet-50 -------------------------------------------------------------------------
class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(
            planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class MedicalNetResNet50(nn.Module):
    """MedicalNet ResNet-50 backbone; forward (B, 1, X, Y, Z) -> (B, 2048) pooled features."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = self._layer(64, layers[0], stride=1, dilation=1)
        self.layer2 = self._layer(128, layers[1], stride=2, dilation=1)
        self.layer3 = self._layer(256, layers[2], stride=1, dilation=2)
        self.layer4 = self._layer(512, layers[3], stride=1, dilation=4)

    def _layer(self, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * 4:  # shortcut type B: projection
            down = nn.Sequential(
                nn.Conv3d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm3d(planes * 4),
            )
        mods = [_Bottleneck(self.inplanes, planes, stride, dilation, down)]
        self.inplanes = planes * 4
        mods += [_Bottleneck(self.inplanes, planes, 1, dilation, None) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))


def _medicalnet_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a MedicalNet weights file and normalise its keys (no `module.`, no `conv_seg.`)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"MedicalNet weights file {path} not found") from None
    except Exception as e:  # pickle/zip errors: not a weights file, or unsafe content
        raise ConfigError(
            f"{path}: cannot load as weights-only PyTorch file ({type(e).__name__}: {e})"
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"{path}: expected a dict of tensors, or {{'state_dict': {{...}}}} as MedicalNet publishes"
        )
    clean = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module.") :]
        if k.startswith("conv_seg."):
            continue  # the published segmentation head; replaced by global average pooling
        clean[k] = v
    return clean


def load_medicalnet(
    weights: str | os.PathLike, batch_size: int = 2, device=None
) -> FeatureExtractor:
    """MedicalNet ResNet-50 extractor from a user-supplied weights file (2048-d features).

    Strict: missing or unexpected keys raise `ConfigError` listing them (BatchNorm
    `num_batches_tracked` counters, absent from old files and unused in eval mode, are exempt).
    """
    path = Path(weights).expanduser().resolve()
    state = _medicalnet_state(path)
    net = MedicalNetResNet50()
    expected = net.state_dict()
    missing = sorted(
        k for k in expected if k not in state and not k.endswith("num_batches_tracked")
    )
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise ConfigError(
            f"{path}: not a MedicalNet ResNet-50 state dict; "
            f"missing keys ({len(missing)}): {missing[:20]}; "
            f"unexpected keys ({len(unexpected)}): {unexpected[:20]}"
        )
    bad = [k for k in state if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise ConfigError(
            f"{path}: {len(bad)} tensors have the wrong shape, e.g. {k}: "
            f"{tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
        )
    net.load_state_dict(state, strict=False)
    return FeatureExtractor(
        net,
        name="medicalnet",
        version=MEDICALNET_VERSION,
        weights_sha256=file_sha256(path),
        dim=2048,
        input_note="packed part in [-1, 1] (HA-GAN evaluation convention), no resizing",
        features_fn=lambda m, x: m(x),
        batch_size=batch_size,
        device=device,
    )


def build_random_extractor(seed: int = RANDOM_SEED, device=None) -> FeatureExtractor:
    """The small encoder architecture with fixed-seed random weights (sanity baseline)."""
    from synthct.metrics.encoder import ENCODER_VERSION, SmallEncoder3D

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallEncoder3D(n_classes=1, n_aux=1)
    return FeatureExtractor(
        net,
        name="random",
        version=f"{ENCODER_VERSION}-seed{seed}",
        weights_sha256=state_dict_sha256(net.state_dict()),
        dim=net.dim,
        input_note="packed part in [-1, 1], random weights (no training)",
        features_fn=lambda m, x: m.features(x),
        device=device,
    )


# -- 2D (slice-level) feature spaces ------------------------------------------------------------
SLICE_ENCODER_VERSION = "small2d-v1"
SLICE_EMBED_DIM = 128
SLICE_PART_CHANNELS = {"image": [0], "mask": [1], "pair": [0, 1]}


class SmallEncoder2D(nn.Module):
    """Slices (B, C, R, R) -> features (B, 128); heads: centre logits (B, K), descriptors (B, A).

    The 2D twin of `encoder.SmallEncoder3D`: four stride-2 conv blocks with GroupNorm (features
    independent of batch composition), global average pool, a 128-d SiLU embedding.
    """

    dim = SLICE_EMBED_DIM

    def __init__(self, in_channels: int = 2, n_classes: int = 1, n_aux: int = 5, width: int = 16):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                nn.GroupNorm(min(8, cout), cout),
                nn.LeakyReLU(0.2),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.GroupNorm(min(8, cout), cout),
                nn.LeakyReLU(0.2),
            )

        w = width
        self.in_channels = in_channels
        self.body = nn.Sequential(
            block(in_channels, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 8 * w)
        )
        self.embed = nn.Linear(8 * w, SLICE_EMBED_DIM)
        self.centre_head = nn.Linear(SLICE_EMBED_DIM, n_classes)
        self.aux_head = nn.Linear(SLICE_EMBED_DIM, n_aux)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(self.embed(self.body(x).mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.centre_head(f), self.aux_head(f)


class SliceFeatureExtractor(FeatureExtractor):
    """A `FeatureExtractor` over slice pairs: `extract((N, 2, R, R) in [-1, 1]) -> (N, d)`.

    `part` picks the channels the network reads (image = CT channel, mask, pair = both).
    """

    def __init__(self, module: nn.Module, *, part: str = "pair", **kwargs) -> None:
        if part not in SLICE_PART_CHANNELS:
            raise ConfigError(f"part must be one of {PARTS}, got {part!r}")
        super().__init__(module, **kwargs)
        self.part = part
        self.channels = SLICE_PART_CHANNELS[part]

    def describe(self) -> dict:
        return {**super().describe(), "level": "slice", "part": self.part}

    def _check_shape(self, inputs) -> None:
        if inputs.ndim != 4 or inputs.shape[1] != 2:
            raise ValueError(f"slice pairs must be (N, 2, R, R), got shape {tuple(inputs.shape)}")

    def _select(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.channels]


def build_random_slice_extractor(
    part: str = "pair", seed: int = RANDOM_SEED, device=None
) -> SliceFeatureExtractor:
    """`SmallEncoder2D` with fixed-seed random weights over slice pairs (sanity baseline)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallEncoder2D(len(SLICE_PART_CHANNELS.get(part, [0, 1])), n_classes=1, n_aux=1)
    return SliceFeatureExtractor(
        net,
        part=part,
        name="random",
        version=f"{SLICE_ENCODER_VERSION}-seed{seed}",
        weights_sha256=state_dict_sha256(net.state_dict()),
        dim=net.dim,
        input_note=f"axial slice pairs, {part}, in [-1, 1], random weights (no training)",
        features_fn=lambda m, x: m.features(x),
        batch_size=64,
        device=device,
    )


def load_slice_encoder(path: str | os.PathLike, device=None) -> SliceFeatureExtractor:
    """A trained 2D encoder file (`encoder.train_slice_encoder`) -> `SliceFeatureExtractor`."""
    from synthct.errors import WorkspaceError

    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"slice encoder file {path} not found")
    obj = load_weights(path, what="slice encoder")
    meta = obj["meta"]
    net = SmallEncoder2D(
        len(SLICE_PART_CHANNELS[meta["part"]]), len(meta["classes"]), len(meta["descriptors"])
    )
    net.load_state_dict(obj["state_dict"])
    return SliceFeatureExtractor(
        net,
        part=meta["part"],
        name="default",
        version=f"{meta['version']}-{meta['part']}-r{meta['resolution']}-{path.stem}",
        weights_sha256=file_sha256(path),
        dim=SLICE_EMBED_DIM,
        input_note=(
            f"axial slice pairs {meta['resolution']}^2, {meta['part']}, in [-1, 1]; encoder "
            f"trained on {meta['n_train']} slices of {meta['n_cases']} real train cases"
        ),
        features_fn=lambda m, x: m.features(x),
        probs_fn=lambda m, x: torch.softmax(m(x)[0], dim=1),
        class_names=list(meta["classes"]),
        batch_size=64,
        device=device,
    )
