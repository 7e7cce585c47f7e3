"""The SegResNet recipe: config round trip, network shapes, schedule, transforms, ensembling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthct.config import from_dict
from synthct.errors import ConfigError
from synthct.segment import recipe
from synthct.segment.recipe import SegConfig

TINY = SegConfig(size=32, init_filters=4, blocks_down=(1, 2, 2), epochs=10, warmup_epochs=3)


def test_seg_config_yaml_round_trip_and_errors(tmp_path):
    path = tmp_path / "seg.yaml"
    recipe.save_seg_config(TINY, path)
    assert recipe.load_seg_config(path) == TINY
    assert TINY.volume_shape == (32, 32, 16) and TINY.roi == (32, 32, 16)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(SegConfig, {"init_filter": 8})
    with pytest.raises(ConfigError, match="divisible by 16"):
        from_dict(SegConfig, {"size": 32, "roi_size": [24, 24, 16]})
    with pytest.raises(ConfigError, match="mask must be"):
        from_dict(SegConfig, {"mask": "gtvp"})


def test_defaults_are_the_auto3dseg_recipe():
    cfg = SegConfig()
    assert (cfg.init_filters, cfg.blocks_down, cfg.dsdepth) == (32, (1, 2, 2, 4, 4), 4)
    assert (cfg.lr, cfg.weight_decay, cfg.epochs, cfg.folds) == (2e-4, 1e-5, 300, 5)
    assert cfg.volume_shape == (128, 128, 64) and cfg.spacing == 1.5
    opt = recipe.build_optimizer(torch.nn.Linear(2, 2), cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["weight_decay"] == 1e-5


@pytest.mark.parametrize("mask", ["binary", "multiclass"])
def test_network_shapes_with_deep_supervision(mask):
    cfg = SegConfig(size=32, init_filters=4, mask=mask)  # the recipe's 5 levels, dsdepth 4
    torch.manual_seed(0)
    net = recipe.build_network(cfg)
    x = torch.randn(2, 1, *cfg.volume_shape)
    outs = net(x)  # train mode: one output per supervised decoder level, full resolution first
    c = cfg.out_channels
    assert [tuple(o.shape) for o in outs] == [
        (2, c, 32, 32, 16),
        (2, c, 16, 16, 8),
        (2, c, 8, 8, 4),
        (2, c, 4, 4, 2),
    ]
    loss = recipe.build_loss(cfg)(outs, torch.zeros(2, 1, *cfg.volume_shape))
    assert loss.ndim == 0 and torch.isfinite(loss)
    net.eval()
    assert tuple(net(x).shape) == (2, c, 32, 32, 16)


def test_warmup_cosine_schedule_per_epoch():
    net = torch.nn.Linear(2, 2)
    opt = recipe.build_optimizer(net, TINY)
    sched = recipe.build_scheduler(opt, TINY)
    lrs = []
    for _ in range(TINY.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    w, t = TINY.warmup_epochs, TINY.epochs

    def expected(e):  # linear warm-up from 0.1 x lr, then half a cosine to 0
        if e < w:
            return TINY.lr * (0.1 + 0.9 * e / w)
        return TINY.lr * 0.5 * (1 + math.cos(math.pi * (e - w) / (t - w)))

    assert lrs == pytest.approx([expected(e) for e in range(t)])
    assert lrs[0] == pytest.approx(2e-5) and max(lrs) == pytest.approx(2e-4)


def test_normalise_hu_window():
    hu = np.array([-3000, -1024, -212, 600, 31743], dtype=np.float32)
    out = recipe.normalise_hu(hu, (-1024.0, 600.0))
    assert out.dtype == np.float32
    assert out.tolist() == pytest.approx([-1, -1, 0, 1, 1])


def test_train_transforms_keep_labels_binary_and_shapes():
    cfg = SegConfig(size=32, init_filters=4, blocks_down=(1, 2, 2))
    t = recipe.build_train_transforms(cfg)
    t.set_random_state(seed=1)
    label = torch.zeros(1, *cfg.volume_shape)
    label[:, 10:20, 10:20, 4:10] = 1
    image = torch.randn(1, *cfg.volume_shape)
    changed = 0
    for _ in range(6):
        out = t({"image": image.clone(), "label": label.clone()})
        assert tuple(out["image"].shape) == (1, 32, 32, 16)
        assert set(torch.unique(torch.as_tensor(out["label"])).tolist()) <= {0.0, 1.0}
        changed += not torch.equal(torch.as_tensor(out["image"]), image)
    assert changed >= 3  # flips alone hit most draws
    cropped = SegConfig(size=32, init_filters=4, blocks_down=(1, 2), roi_size=(16, 16, 8))
    out = recipe.build_train_transforms(cropped)({"image": image, "label": label})
    out = out[0] if isinstance(out, list) else out
    assert tuple(out["image"].shape) == (1, 16, 16, 8)


def test_ensemble_is_the_mean_of_fold_softmaxes():
    cfg = SegConfig(size=32, init_filters=4, blocks_down=(1, 2, 2))
    models = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        models.append(recipe.build_network(cfg).eval())
    x = torch.randn(1, 1, *cfg.volume_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        manual = sum(torch.softmax(m(x), dim=1) for m in models) / 3
    ens = recipe.ensemble_probs(models, x, cfg)
    assert torch.allclose(ens, manual, atol=1e-5)
    assert torch.allclose(ens.sum(1), torch.ones(1, *cfg.volume_shape), atol=1e-5)
    # the mean differs from any single model's prediction (the test can fail)
    assert not torch.allclose(ens, recipe.predict_probs(models[0], x, cfg), atol=1e-3)


def test_cpu_uses_fp32_and_no_scaler():
    dev = torch.device("cpu")
    assert recipe.resolve_precision(SegConfig(precision="bf16"), dev) == "fp32"
    assert not recipe.make_scaler("fp32", dev).is_enabled()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert recipe.select_device().type == recipe.select_device("auto").type == expected
    assert recipe.select_device("cpu").type == "cpu"
