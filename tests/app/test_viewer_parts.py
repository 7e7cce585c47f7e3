"""Browse's viewer parts: NIfTI bytes with the case's geometry, the opening voxel, the presets,
and the vendored NiiVue build (its recorded SHA-256, loaded from the app's own folder)."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ui.viewer import FRONTEND, case_nifti, presets, start_voxel


def test_case_nifti_keeps_voxels_and_spacing():
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 400, (6, 5, 4)).astype(np.float32)
    hu[0, 0, 0] = 40000.0  # beyond int16: clipped, not wrapped
    mask = (rng.random((6, 5, 4)) > 0.7).astype(np.uint8) * 2
    image, m = case_nifti(hu, mask, (0.9, 1.1, 3.0))
    img = nib.Nifti1Image.from_bytes(gzip.decompress(image))
    assert img.get_data_dtype() == np.int16
    want = np.rint(hu).astype(np.int64)
    want[0, 0, 0] = 32767
    np.testing.assert_array_equal(np.asarray(img.dataobj), want)
    np.testing.assert_allclose(img.affine, np.diag([0.9, 1.1, 3.0, 1.0]))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")  # the arrays' own RAS+ axes
    got = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(m)).dataobj)
    np.testing.assert_array_equal(got, (mask > 0).astype(np.uint8))
    assert case_nifti(hu, None, (1, 1, 1))[1] is None


def test_start_voxel_is_the_tumour_or_the_middle():
    mask = np.zeros((10, 8, 6), np.uint8)
    mask[7, 2:4, 4] = 1
    assert start_voxel(mask.shape, mask) == (7, 2, 4)
    assert start_voxel((10, 8, 6), np.zeros((10, 8, 6))) == (5, 4, 3)
    assert start_voxel((10, 8, 6), None) == (5, 4, 3)


def test_presets_add_each_data_window_once():
    got = presets([(-1024.0, 600.0), None, (-1024.0, 600.0)])
    labels = [p["label"] for p in got]
    assert labels[:4] == ["Soft tissue", "Bone", "Lung", "Brain"]
    assert labels[4:] == ["Data (-1024…600)"]
    assert (got[4]["width"], got[4]["level"]) == (1624.0, -212.0)


def test_vendored_niivue_is_the_recorded_npm_build():
    vendor = FRONTEND / "vendor"
    recorded = re.search(r"SHA-256: `([0-9a-f]{64})`", (vendor / "README.md").read_text())
    digest = hashlib.sha256((vendor / "niivue.umd.js").read_bytes()).hexdigest()
    assert recorded and digest == recorded.group(1)
    script = Path("scripts/vendor_niivue.sh")
    root = FRONTEND.parents[1]
    assert f"SHA256={digest}" in (root / script).read_text()


@pytest.mark.parametrize("name", ["index.html", "component.js", "slab.js", "niivue-view.js"])
def test_frontend_loads_nothing_from_elsewhere(name):
    """Our own frontend files name no outside address (the browser tests watch the requests)."""
    text = (FRONTEND / name).read_text()
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), name
