"""2D sets end to end: generation from a trained 2D run, slice-level evaluation of 2D and 3D sets,
and the model comparison table. Uses the phantom workspace of test_train_slices (S = 32)."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
import torch
from test_train_slices import packed_ws, tiny  # noqa: F401 (module fixture)

from synthct import generate as gen
from synthct.config import DataConfig

S = 32


@pytest.fixture(scope="module")
def fastgan_run(packed_ws):  # noqa: F811
    from synthct.train import train

    return train(tiny("fastgan", steps=2, snapshot_every=0, collapse_every=0), packed_ws, "g2d")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_2d_set_shapes_spacing_datacard_and_reproducibility(packed_ws, fastgan_run):  # noqa: F811
    from synthct.checkpoint import load_generator
    from synthct.preprocess import load_packed

    opts = gen.GenerateOptions(n=5, seed=3, batch_size=2, format="png")
    out = gen.generate_from_run(packed_ws, "g2d", "syn2d", opts, device="cpu")
    card = gen.load_datacard(out)
    assert card["model"]["kind"] == "fastgan" and card["model"]["size"] == S
    assert card["model"]["data_view"] == "slices" and card["model"]["grid"] is None
    assert card["shape"] == [S, S, 1] and card["counts"]["written"] == 5
    packed = load_packed(packed_ws, DataConfig(size=S), "train")
    assert card["spacing"] == pytest.approx(list(packed.spacing))  # R = S: same field of view
    assert card["training_cases"]["case_ids"] == sorted(packed.case_ids)
    system, cfg, _ = load_generator(fastgan_run, device="cpu")
    for i, case in enumerate(card["cases"]):
        img = nib.load(out / "imagesTr" / f"{case['case_id']}__CT.nii.gz")
        lab = nib.load(out / "labelsTr" / f"{case['case_id']}.nii.gz")
        assert img.shape == (S, S, 1) and img.get_data_dtype() == np.int16
        assert lab.get_data_dtype() == np.uint8
        np.testing.assert_allclose(nib.affines.voxel_sizes(img.affine), packed.spacing, rtol=1e-5)
        # independent recomputation from the generator output
        z = system.sample_latent(1, torch.Generator().manual_seed(case["seed"]))
        o = system.generate(z)[0].numpy()
        lo, hi = cfg.data.hu_window
        want_hu = np.rint(np.clip((o[0] * 0.5 + 0.5) * (hi - lo) + lo, lo, hi))
        assert np.abs(np.asarray(img.dataobj)[..., 0] - want_hu).max() <= 1
        assert np.array_equal(np.asarray(lab.dataobj)[..., 0], (o[1] > 0).astype(np.uint8))
        assert case["seed"] == gen.case_seed(3, i)
        assert (out / "imagesPng" / f"{case['case_id']}.png").is_file()
        assert (out / "labelsPng" / f"{case['case_id']}.png").is_file()
    again = gen.generate_from_run(
        packed_ws,
        "g2d",
        "syn2d-again",
        gen.GenerateOptions(n=5, seed=3, batch_size=5),
        device="cpu",
    )
    for sub in ("imagesTr", "labelsTr"):
        a = sorted((out / sub).iterdir())
        b = sorted((again / sub).iterdir())
        assert [p.name for p in a] == [p.name for p in b]
        assert [_sha(p) for p in a] == [_sha(p) for p in b]


def test_half_resolution_2d_model_scales_the_in_plane_spacing():
    from synthct.config import ModelConfig
    from synthct.models import build_system

    system = build_system(ModelConfig(kind="stylegan2", latent_dim=8, width=1 / 32,
                                      resolution=32, diffaug=""), 64)  # fmt: skip
    assert gen.slice_spacing((1.5, 1.2, 3.0), 64, system.resolution) == (3.0, 2.4, 3.0)
    img, msk = gen.sample_pairs(system, [1, 2], DataConfig(size=64))
    assert img.shape == (2, 32, 32, 1) and msk.shape == (2, 32, 32, 1) and msk.dtype == np.uint8


def test_mosaic_output_is_cut_back_into_a_volume():
    from synthct.slices import mosaic

    vol = torch.rand(2, 2, 4, 8, 8) * 2 - 1  # (B, channel, Z, X, Y)
    vol[:, 1] = torch.sign(vol[:, 1])
    tiles = mosaic(vol, 2, 2)  # (B, 2, 16, 16)
    img, msk = gen.slices_to_volumes(tiles.numpy(), (-1000.0, 1000.0), grid=(2, 2))
    assert img.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(img, vol[:, 0].permute(0, 2, 3, 1).numpy() * 1000, atol=1e-3)
    assert np.array_equal(msk, (vol[:, 1] > 0).permute(0, 2, 3, 1).numpy())


def test_png_format_is_refused_for_3d_models(tmp_path):
    from synthct.config import ModelConfig
    from synthct.errors import ConfigError
    from synthct.models import build_system

    system = build_system(ModelConfig(kind="hagan", latent_dim=8, width=1 / 16), S)
    with pytest.raises(ConfigError, match="png"):
        gen.write_set(tmp_path / "x", system, DataConfig(size=S), (1, 1, 1),
                      gen.GenerateOptions(n=1, format="png"))  # fmt: skip
    with pytest.raises(ConfigError, match="format"):
        gen.GenerateOptions(n=1, format="jpeg")
    assert not (tmp_path / "x").exists()
