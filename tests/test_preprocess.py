"""Preprocessing: HU window, packing, crop, one-step resize, unpack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthct.config import DataConfig
from synthct.errors import ImageReadError
from synthct.io import Volume, spacing_affine
from synthct.preprocess import (
    align_mask,
    extract_box,
    field_of_view_mm,
    find_head_neck_crop,
    hu_to_unit,
    mask_to_unit,
    pack,
    preprocess_pair,
    resize,
    unit_to_hu,
    unpack,
    unpack_halves,
)


def _dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# -- HU window ----------------------------------------------------------------------------------
def test_hu_window_endpoints_exact_and_clipped():
    w = (-1024.0, 600.0)
    hu = np.array([-3024, -1024, -212, 600, 31743], dtype=np.float32)
    np.testing.assert_array_equal(hu_to_unit(hu, w), np.array([-1, -1, 0, 1, 1], np.float32))
    x = np.random.default_rng(0).uniform(-1, 1, 1000)
    np.testing.assert_allclose(hu_to_unit(unit_to_hu(x, w), w), x, atol=1e-12)
    assert unit_to_hu(np.float64(-1.0), w) == -1024.0 and unit_to_hu(np.float64(1.0), w) == 600.0


# -- packing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("packing", ["z", "interleave"])
@pytest.mark.parametrize("mask_kind", ["binary", "multiclass"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_pack_unpack_round_trip_exact_without_resize(packing, mask_kind, backend):
    s = 16
    cfg = DataConfig(size=s, packing=packing, mask=mask_kind)
    rng = np.random.default_rng(1)
    hu = rng.integers(-1024, 601, size=(2, s, s, s // 2)).astype(np.float32)
    labels = rng.integers(0, 3 if mask_kind == "multiclass" else 2, size=hu.shape).astype(np.uint8)
    img_u, msk_u = hu_to_unit(hu, cfg.hu_window), mask_to_unit(labels, mask_kind)
    if backend == "torch":
        img_u, msk_u = torch.from_numpy(img_u), torch.from_numpy(msk_u.astype(np.float32))
    packed = pack(img_u, msk_u, packing)
    assert tuple(packed.shape) == (2, s, s, s)
    hu_back, lab_back = unpack(packed, cfg)
    hu_back, lab_back = np.asarray(hu_back), np.asarray(lab_back)
    assert hu_back.dtype == np.float32 and lab_back.dtype == np.uint8
    np.testing.assert_array_equal(lab_back, labels)
    np.testing.assert_allclose(hu_back, hu, atol=1e-3)


def test_interleave_puts_image_on_even_and_mask_on_odd_slices():
    img = np.full((8, 8, 4), 0.25, np.float32)
    msk = np.full((8, 8, 4), 1.0, np.float32)
    p = pack(img, msk, "interleave")
    assert np.all(p[..., 0::2] == 0.25) and np.all(p[..., 1::2] == 1.0)
    zi, zm = unpack_halves(pack(img, msk, "z"), "z")
    assert np.all(zi == 0.25) and np.all(zm == 1.0)


def test_multiclass_unpack_thresholds_continuous_values():
    cfg = DataConfig(size=8, mask="multiclass")
    packed = np.zeros((8, 8, 8), np.float32)
    packed[..., 4:] = np.array([-0.9, -0.4, 0.3, 0.8])[None, None, :]
    _, lab = unpack(packed, cfg)
    np.testing.assert_array_equal(lab[0, 0], [0, 1, 1, 2])
    _, lab_bin = unpack(packed, DataConfig(size=8))
    np.testing.assert_array_equal(lab_bin[0, 0], [0, 0, 1, 1])


# -- resize, alignment ----------------------------------------------------------------------------
def _blob_case(shape=(60, 60, 30), spacing=(1.0, 1.0, 2.0)):
    idx = np.indices(shape).astype(np.float32)
    c = np.array(shape)[:, None, None, None] / 2
    r2 = (((idx - c) * np.array(spacing)[:, None, None, None]) ** 2).sum(0)
    hu = (-1000 + 1100 * np.exp(-r2 / (2 * 14.0**2))).astype(np.float32)  # smooth
    label = (r2 < 12.0**2).astype(np.uint8)
    aff = spacing_affine(spacing)
    return Volume(hu, aff), Volume(label, aff)


def test_resize_round_trip_keeps_blob_and_bounds_image_error():
    image, label = _blob_case()
    cfg = DataConfig(size=32, crop=False)
    pair = preprocess_pair(image, label, cfg)
    assert pair.packed.shape == (32, 32, 32) and pair.packed.dtype == np.float32
    assert pair.packed.min() >= -1 and pair.packed.max() <= 1
    hu, lab = unpack(pair.packed, cfg)
    np.testing.assert_allclose(pair.spacing, (60 / 32, 60 / 32, 60 / 16))
    hu_back = resize(hu, image.shape, "image")
    lab_back = resize(lab.astype(np.float32), image.shape, "mask")
    assert _dice(lab_back, label.array) > 0.9
    err = np.abs(hu_back - np.clip(image.array, -1024, 600))
    assert err.mean() < 5.0 and err.max() < 60.0  # HU; the window is 1624 HU wide
    # the packed affine maps the packed blob centre onto the source blob centre (30, 30, 15) vox
    centre_packed = np.array(np.nonzero(lab)).mean(axis=1)
    world = pair.affine @ np.array([*centre_packed, 1.0])
    np.testing.assert_allclose(world[:3], [29.5, 29.5, 29.0], atol=1.0)


def test_align_mask_absorbs_one_voxel_oversize_and_rejects_other_grids():
    image, label = _blob_case((20, 20, 10))
    bigger = Volume(np.pad(label.array, ((0, 0), (0, 1), (0, 0))), label.affine)
    np.testing.assert_array_equal(align_mask(bigger, image), label.array)
    shifted_aff = label.affine.copy()
    shifted_aff[:3, 3] -= np.array(label.spacing) * [0, 1, 0]  # starts one voxel earlier in y
    shifted = Volume(np.pad(label.array, ((0, 0), (1, 0), (0, 0))), shifted_aff)
    np.testing.assert_array_equal(align_mask(shifted, image), label.array)
    other = Volume(label.array, spacing_affine((2.0, 1.0, 2.0)))
    with pytest.raises(ImageReadError, match="spacing"):
        align_mask(other, image, "CHUM-001 mask")
    far = Volume(np.pad(label.array, ((0, 9), (0, 0), (0, 0))), label.affine)
    with pytest.raises(ImageReadError, match=r"within 5 voxels"):
        align_mask(far, image)


def test_multiclass_rejects_unknown_labels():
    image, label = _blob_case((20, 20, 10))
    bad = Volume(label.array * 7, label.affine)
    with pytest.raises(ImageReadError, match="label values"):
        preprocess_pair(image, bad, DataConfig(size=16, mask="multiclass", crop=False), "X-1")


def test_extract_box_pads_outside_the_array():
    from synthct.preprocess import CropBox

    a = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out = extract_box(a, CropBox((-1, 1, 0), (2, 4, 3), "t"), fill=-5)
    assert out.shape == (3, 3, 3)
    np.testing.assert_array_equal(out[0], -5)
    np.testing.assert_array_equal(out[1:, :2], a[:2, 1:])
    np.testing.assert_array_equal(out[1:, 2], -5)


# -- crop on phantoms ---------------------------------------------------------------------------
WHOLE_BODY = ["CHUP-000", "CHUP-001", "CHUV-005", "MDA-002", "HMR-004"]
HEAD_NECK = ["CHUM-000", "CHUM-004", "CHUS-001", "HGJ-002", "MDA-000", "CHUV-001"]


@pytest.fixture(scope="module")
def phantoms():
    from synthct.phantom import make_case

    return {cid: make_case(cid, seed=1, scale=0.25) for cid in WHOLE_BODY + HEAD_NECK}


@pytest.mark.parametrize("case_id", WHOLE_BODY + HEAD_NECK)
def test_crop_keeps_whole_tumour_on_phantoms(phantoms, case_id):
    pc = phantoms[case_id]
    image, label = pc
    labels = align_mask(label, image)
    box = find_head_neck_crop(image, field_of_view_mm(DataConfig(size=32)))
    # kept = every tumour voxel of the source lies inside the box
    assert np.count_nonzero(extract_box(labels, box, 0)) == np.count_nonzero(labels) > 0
    # the box is the fixed physical field of view (192 mm) within one source voxel
    np.testing.assert_allclose(np.array(box.size) * image.spacing, 192.0, atol=max(image.spacing))
    if case_id in WHOLE_BODY:
        assert pc.info["whole_body"] and box.method == "neck"
        # the legs and pelvis are far outside: the box stays within the top 450 mm of the body
        assert (image.shape[2] - box.start[2]) * image.spacing[2] < 500


@pytest.mark.parametrize("padding", [-2048.0, -3024.0])
def test_crop_ignores_padding_outside_the_scan_circle(phantoms, padding):
    image, label = phantoms["CHUP-001"]
    arr = image.array.copy()
    n = arr.shape[0]
    yy, xx = np.mgrid[:n, :n]
    outside = (xx - n / 2 + 0.5) ** 2 + (yy - n / 2 + 0.5) ** 2 > (0.45 * n) ** 2
    arr[outside] = padding
    padded = Volume(arr, image.affine)
    fov = field_of_view_mm(DataConfig(size=32))
    assert find_head_neck_crop(padded, fov) == find_head_neck_crop(image, fov)
    pair = preprocess_pair(padded, label, DataConfig(size=32))
    assert pair.tumour_kept == 1.0 and pair.packed[..., :16].min() >= -1.0


def test_crop_without_body_falls_back_to_the_scan_centre():
    air = Volume(np.full((40, 40, 20), -1024.0, np.float32), spacing_affine((5.0, 5.0, 10.0)))
    box = find_head_neck_crop(air, (100.0, 100.0, 100.0))
    assert box.method == "centre" and box.start == (10, 10, 5) and box.stop == (30, 30, 15)


def test_every_hagan_slab_along_x_holds_image_and_mask(phantoms):
    """The packing axis (z) is orthogonal to HA-GAN's slab axis (x)."""
    s = 32
    cfg = DataConfig(size=s)
    image, label = phantoms["CHUS-001"]
    packed = preprocess_pair(image, label, cfg).packed
    hu, lab = unpack(packed, cfg)
    assert lab.any()
    depth = s // 8
    tumour_slabs = 0
    for x0 in range(0, s, depth):
        slab = packed[x0 : x0 + depth]  # what HA-GAN's D^H sees
        img_half, msk_half = unpack_halves(slab, cfg.packing)
        assert img_half.shape == msk_half.shape == (depth, s, s // 2)
        np.testing.assert_array_equal(msk_half > 0, lab[x0 : x0 + depth] > 0)
        assert set(np.unique(msk_half)) <= {-1.0, 1.0}
        if (img_half > -0.5).any() and (msk_half > 0).any():
            tumour_slabs += 1
    assert tumour_slabs >= 1
    # whereas a slab along the packing axis would hold only image or only mask
    assert set(np.unique(packed[:, :, s // 2 : s // 2 + depth])) <= {-1.0, 1.0}


# -- workspace: synthct preprocess + load_packed ------------------------------------------------
@pytest.fixture(scope="module")
def phantom_src(tmp_path_factory):
    from synthct.phantom import write_phantom_set

    return write_phantom_set(tmp_path_factory.mktemp("src") / "cases", n=6, seed=4, scale=0.125)[
        0
    ].parent.parent


@pytest.fixture
def ingested(workspace, phantom_src):
    from synthct.datasets import ingest

    ingest(phantom_src, workspace, test_fraction=0.3, seed=0, workers=1)
    return workspace


def _cli(*args):
    from typer.testing import CliRunner

    from synthct.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_preprocess_command_packs_every_case_once_and_load_packed_filters(ingested):
    from synthct.datasets import cases_in_split, load_splits
    from synthct.preprocess import load_packed, packed_dir, read_manifest

    ws = ingested
    cfg = DataConfig(size=16)
    res = _cli("preprocess", "--size", "16", "--workers", "2", "--workspace", str(ws.root))
    assert res.exit_code == 0, res.output
    folder = packed_dir(ws, cfg)
    assert folder.name.startswith("s16-") and folder.parent == ws.packed
    manifest = read_manifest(folder)
    usable = [r.case_id for r in cases_in_split(ws, "all")]
    splits = load_splits(ws)
    assert sorted(manifest["cases"]) == usable and manifest["failed"] == {}
    for cid, entry in manifest["cases"].items():
        assert entry["split"] == splits[cid] and entry["tumour_kept"] == 1.0
        assert entry["centre"] == cid.split("-")[0].split("_")[0]
        assert len(entry["crop"]["start"]) == 3 and len(entry["crop"]["mm_min"]) == 3
        # packed grid spacing = crop extent / grid size
        size = np.array(entry["crop"]["stop"]) - np.array(entry["crop"]["start"])
        expect = size * np.array(entry["source_spacing"]) / np.array([16, 16, 8])
        np.testing.assert_allclose(entry["spacing"], expect, rtol=1e-4)
        assert np.load(folder / entry["file"]).dtype == np.float16
    mean = np.mean([e["spacing"] for e in manifest["cases"].values()], axis=0)
    np.testing.assert_allclose(manifest["mean_spacing"], mean, rtol=1e-4)

    train = load_packed(ws, cfg, "train")
    test = load_packed(ws, cfg, "test")
    assert train.arrays.dtype == np.float32 and train.arrays.shape[1:] == (16, 16, 16)
    assert train.case_ids == [r.case_id for r in cases_in_split(ws, "train")]
    assert set(train.case_ids).isdisjoint(test.case_ids) and test.case_ids
    assert train.centres == [manifest["cases"][c]["centre"] for c in train.case_ids]
    stored = np.load(folder / f"{train.case_ids[0]}.npy").astype(np.float32)
    np.testing.assert_array_equal(train.arrays[0], stored)
    np.testing.assert_allclose(
        train.spacing, np.mean([manifest["cases"][c]["spacing"] for c in train.case_ids], 0)
    )

    # a second run skips everything and rewrites no array
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    res = _cli("preprocess", "--size", "16", "--workspace", str(ws.root))
    assert res.exit_code == 0 and f"0 packed, {len(usable)} already done" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")} == mtimes
    assert not list(folder.glob(".*"))  # no temp files left behind


def test_split_limits_the_work_and_missing_cases_are_named(ingested):
    from synthct.datasets import cases_in_split
    from synthct.errors import WorkspaceError
    from synthct.preprocess import load_packed, preprocess_workspace

    ws = ingested
    cfg = DataConfig(size=16, packing="interleave")
    with pytest.raises(WorkspaceError, match="synthct preprocess --size 16 .*--packing interleave"):
        load_packed(ws, cfg, "train")
    out = preprocess_workspace(ws, cfg, split="test", workers=1, progress=False)
    test_ids = [r.case_id for r in cases_in_split(ws, "test")]
    assert out["done"] == test_ids and not out["skipped"]
    assert load_packed(ws, cfg, "test").case_ids == test_ids
    with pytest.raises(WorkspaceError, match=r"train cases are not packed.*--split train"):
        load_packed(ws, cfg, "train")


def test_one_bad_case_is_reported_and_the_others_are_kept(ingested):
    from synthct.datasets import cases_in_split
    from synthct.preprocess import load_packed, packed_dir, read_manifest

    ws = ingested
    records = cases_in_split(ws, "all")
    bad = records[0]
    path = Path(bad.image)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # the file is truncated after ingest
    try:
        res = _cli("preprocess", "--size", "16", "--workers", "2", "--workspace", str(ws.root))
    finally:
        path.write_bytes(data)  # the source folder is shared by the module's tests
    assert res.exit_code == 1
    assert f"failed {bad.case_id}" in res.output and "truncated" in res.output
    cfg = DataConfig(size=16)
    manifest = read_manifest(packed_dir(ws, cfg))
    assert set(manifest["cases"]) == {r.case_id for r in records[1:]}
    assert list(manifest["failed"]) == [bad.case_id]
    with pytest.warns(UserWarning, match=bad.case_id):
        packed = load_packed(ws, cfg, "all")
    assert packed.case_ids == [r.case_id for r in records[1:]]


def test_preprocess_command_rejects_bad_options(workspace):
    from synthct.errors import ConfigError

    ws = str(workspace.root)
    with pytest.raises(ConfigError, match=r"--split 'dev'.*expected one of"):
        _cli("preprocess", "--size", "16", "--split", "dev", "--workspace", ws)
    with pytest.raises(ConfigError, match="multiple of 8"):
        _cli("preprocess", "--size", "12", "--workspace", ws)
    with pytest.raises(ConfigError, match="hu_window"):
        _cli("preprocess", "--size", "16", "--hu-window", "600", "-1024", "--workspace", ws)


def test_list_and_load_one_packed_case_match_load_packed(tmp_path):
    from synthct.config import DataConfig
    from synthct.datasets import ingest
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import (
        list_packed,
        load_packed,
        load_packed_case,
        preprocess_workspace,
        unpack,
    )
    from synthct.workspace import Workspace

    ws = Workspace.resolve(tmp_path / "ws").ensure()
    write_phantom_set(tmp_path / "src", n=4, seed=3, scale=0.1)
    ingest(tmp_path / "src", ws, test_fraction=0.25, seed=0)
    cfg = DataConfig(size=16)
    preprocess_workspace(ws, cfg, workers=1, progress=False)
    assert [c for _, c in list_packed(ws)] == [cfg]
    packed = load_packed(ws, cfg, split="train")
    image_hu, mask, spacing = load_packed_case(ws, cfg, packed.case_ids[0])
    ref_img, ref_mask = unpack(packed.arrays[0], cfg)
    np.testing.assert_array_equal(image_hu, ref_img)
    np.testing.assert_array_equal(mask, ref_mask)
    assert len(spacing) == 3 and min(spacing) > 0
