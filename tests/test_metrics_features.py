"""Feature extractors: MedicalNet key layout and strict loading, hashes, part selection, encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthct.errors import ConfigError
from synthct.metrics import features as F
from synthct.metrics.encoder import (
    DESCRIPTORS,
    compute_descriptors,
    load_encoder,
    save_encoder,
    train_encoder,
)
from synthct.runtime import file_sha256


def _published_layout(tmp_path, mutate=None):
    """A random MedicalNet-50 state dict saved the way the published file is laid out."""
    torch.manual_seed(0)
    net = F.MedicalNetResNet50()
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    # the published segmentation head (ConvTranspose3d / BN / Conv3d) that we must ignore
    state["module.conv_seg.0.weight"] = torch.randn(2048, 32, 2, 2, 2)
    state["module.conv_seg.0.bias"] = torch.randn(32)
    state["module.conv_seg.1.running_mean"] = torch.zeros(32)
    state["module.conv_seg.6.weight"] = torch.randn(2, 32, 1, 1, 1)
    if mutate:
        mutate(state)
    path = tmp_path / "resnet_50.pth"
    torch.save({"state_dict": state}, path)
    return path, net


def test_medicalnet_key_layout_matches_published_names():
    keys = set(F.MedicalNetResNet50().state_dict())
    for k in (
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",  # shortcut B: 1x1x1 conv ...
        "layer1.0.downsample.1.weight",  # ... + BN
        "layer3.5.conv3.weight",
        "layer4.0.downsample.0.weight",
        "layer4.2.bn3.bias",
    ):
        assert k in keys
    net = F.MedicalNetResNet50()
    assert net.layer3[0].conv2.dilation == (2, 2, 2) and net.layer3[0].conv2.stride == (1, 1, 1)
    assert net.layer4[1].conv2.dilation == (4, 4, 4) and net.layer4[0].conv2.stride == (1, 1, 1)
    assert net.layer2[0].conv2.stride == (2, 2, 2)
    n_params = sum(p.numel() for p in net.parameters())
    assert 46_000_000 < n_params < 46_300_000  # 3D ResNet-50 body: ~46.2 M


def test_medicalnet_loads_published_layout_and_extracts(tmp_path):
    path, ref = _published_layout(tmp_path)
    fx = F.load_medicalnet(path, device="cpu")
    assert fx.dim == 2048 and fx.name == "medicalnet"
    assert fx.weights_sha256 == file_sha256(path)
    x = torch.rand(2, 1, 16, 16, 8) * 2 - 1
    feats = fx.extract(x.numpy())
    assert feats.shape == (2, 2048) and feats.dtype == np.float64
    ref.eval()
    with torch.no_grad():
        np.testing.assert_allclose(feats, ref(x).double().numpy(), rtol=1e-5, atol=1e-6)


def test_medicalnet_missing_and_unexpected_keys_are_listed(tmp_path):
    def drop_and_add(state):
        del state["module.layer2.1.conv2.weight"]
        state["module.fc.weight"] = torch.zeros(3, 3)

    path, _ = _published_layout(tmp_path, drop_and_add)
    with pytest.raises(ConfigError) as e:
        F.load_medicalnet(path)
    msg = str(e.value)
    assert "layer2.1.conv2.weight" in msg and "fc.weight" in msg and str(path) in msg

    def wrong_shape(state):
        state["module.conv1.weight"] = torch.zeros(64, 1, 3, 3, 3)

    path, _ = _published_layout(tmp_path, wrong_shape)
    with pytest.raises(ConfigError, match="conv1.weight"):
        F.load_medicalnet(path)
    with pytest.raises(ConfigError, match="not found"):
        F.load_medicalnet(tmp_path / "nope.pth")


def test_random_extractor_hash_is_stable_and_seed_dependent():
    a, b = F.build_random_extractor(device="cpu"), F.build_random_extractor(device="cpu")
    assert a.weights_sha256 == b.weights_sha256
    assert F.build_random_extractor(seed=1, device="cpu").weights_sha256 != a.weights_sha256
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 16, 16, 8))
    np.testing.assert_array_equal(a.extract(x), b.extract(x))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        a.extract(x * 3)
    # batch composition never changes a case's features (GroupNorm, eval mode)
    np.testing.assert_allclose(a.extract(x[:1]), a.extract(x)[:1], rtol=1e-5, atol=1e-6)


def test_select_part_z_and_interleave():
    p = np.zeros((2, 4, 4, 4), np.float32)
    p[..., :2] = -1.0
    p[..., 2:] = 1.0
    assert (F.select_part(p, "image") == -1).all() and (F.select_part(p, "mask") == 1).all()
    assert F.select_part(p, "pair").shape == (2, 1, 4, 4, 4)
    q = np.zeros((1, 4, 4, 4), np.float32)
    q[..., 0::2], q[..., 1::2] = -1.0, 1.0
    assert (F.select_part(q, "image", "interleave") == -1).all()
    assert (F.select_part(q, "mask", "interleave") == 1).all()
    with pytest.raises(ConfigError):
        F.select_part(p, "both")


def test_descriptors_known_blob():
    s = 16
    packed = -np.ones((1, s, s, s), np.float32)
    packed[0, :, :, : s // 2] = 1.0  # all body at +1 (600 HU)
    packed[0, 2:6, 2:6, s // 2 : s // 2 + 4] = 1.0  # 4x4x4 tumour in the mask half
    d = compute_descriptors(packed)[0]
    assert d[0] == pytest.approx(np.log(64 / (16 * 16 * 8) + 1e-5))
    assert d[1] == pytest.approx(3.5 / 15) and d[3] == pytest.approx(1.5 / 7)
    assert d[4] == pytest.approx(1.0) and d[5] == pytest.approx(1.0)
    assert len(d) == len(DESCRIPTORS)


def test_encoder_learns_centres_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    s = 16
    packed = rng.uniform(-1, -0.5, (12, s, s, s)).astype(np.float32)
    centres = ["A", "B"] * 6
    packed[1::2, :, :, : s // 2] += 1.2  # centre B is brighter
    state, meta = train_encoder(packed, centres, epochs=15, seed=0, device="cpu")
    assert meta["losses"][-1] < meta["losses"][0]
    path = tmp_path / "enc.pt"
    sha = save_encoder(path, state, meta)
    fx = load_encoder(path, device="cpu")
    assert fx.weights_sha256 == sha == file_sha256(path) and fx.class_names == ["A", "B"]
    probs = fx.class_probs(packed[:, None])
    assert probs.shape == (12, 2) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1) == np.array([0, 1] * 6)).mean() == 1.0
    assert fx.extract(packed[:, None]).shape == (12, 128)
    # same settings and data -> same weights -> same hash
    state2, meta2 = train_encoder(packed, centres, epochs=15, seed=0, device="cpu")
    assert save_encoder(tmp_path / "enc2.pt", state2, meta2) == sha


def test_evaluate_builds_each_extractor(tmp_path, workspace):
    from synthct.config import DataConfig
    from synthct.metrics.evaluation import get_extractor

    path, _ = _published_layout(tmp_path)
    cfg = DataConfig(size=16)
    med = get_extractor(workspace, cfg, "medicalnet", "pair", weights=str(path))
    assert med.describe()["weights_sha256"] == file_sha256(path) and med.dim == 2048
    rnd = get_extractor(workspace, cfg, "random", "image")
    assert rnd.describe()["name"] == "random" and not rnd.has_classifier
    with pytest.raises(ConfigError, match="weights"):
        get_extractor(workspace, cfg, "medicalnet", "pair")
