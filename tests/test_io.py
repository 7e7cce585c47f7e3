import gzip

import nibabel as nib
import numpy as np
import pytest

from synthct.errors import ImageReadError
from synthct.io import Volume, encode_png, load_volume, save_volume, spacing_affine


def _ct(shape=(12, 10, 8), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3071, size=shape).astype(np.int16)


def test_round_trip_keeps_hu_and_geometry(tmp_path):
    aff = spacing_affine((0.98, 0.98, 3.0), origin=(-250.0, -240.0, -100.0))
    vol = Volume(_ct().astype(np.float32), aff)
    path = save_volume(vol, tmp_path / "ct.nii.gz", dtype=np.int16)
    back = load_volume(path)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    assert back.spacing == pytest.approx((0.98, 0.98, 3.0), abs=1e-5)


def test_load_reorients_to_ras(tmp_path):
    arr = _ct()
    # LPS-like affine: x and y flipped. Canonical reading must flip the array back.
    aff = np.diag([-1.0, -1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(arr, aff), tmp_path / "lps.nii")
    vol = load_volume(tmp_path / "lps.nii")
    np.testing.assert_array_equal(vol.array, arr[::-1, ::-1, :].astype(np.float32))
    assert np.all(np.diag(vol.affine)[:3] > 0)


def test_uncompressed_nii_round_trip(tmp_path):
    vol = Volume(np.arange(60, dtype=np.float32).reshape(5, 4, 3), spacing_affine((1, 2, 3)))
    back = load_volume(save_volume(vol, tmp_path / "a.nii"))
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("trunc.nii.gz", None, "unreadable or truncated"),
        ("text.nii.gz", b"hello, not an image", "unreadable or truncated"),
        ("notnifti.png", b"\x89PNG", "not a NIfTI file"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content is None:
        good = save_volume(Volume(_ct().astype(np.float32), np.eye(4)), tmp_path / "g.nii.gz")
        content = good.read_bytes()[: len(good.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=match) as exc:
        load_volume(path)
    assert name in str(exc.value)


def test_non_3d_and_nan_rejected(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), tmp_path / "2d.nii")
    with pytest.raises(ImageReadError, match="expected a 3D volume"):
        load_volume(tmp_path / "2d.nii")
    arr = np.zeros((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(ImageReadError, match="1 NaN/inf voxels"):
        load_volume(tmp_path / "nan.nii")


def test_singleton_fourth_axis_is_squeezed(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.float32), np.eye(4)), tmp_path / "4d.nii")
    assert load_volume(tmp_path / "4d.nii").shape == (3, 4, 5)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    import synthct.io as sio

    target = tmp_path / "out.nii.gz"
    vol = Volume(np.zeros((3, 3, 3), np.float32), np.eye(4))

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sio, "volume_to_nifti_bytes", boom)
    with pytest.raises(RuntimeError):
        save_volume(vol, target)
    assert list(tmp_path.iterdir()) == []


def test_gzip_output_is_real_gzip(tmp_path):
    p = save_volume(Volume(np.zeros((3, 3, 3), np.float32), np.eye(4)), tmp_path / "z.nii.gz")
    assert gzip.decompress(p.read_bytes())[:4] == (348).to_bytes(4, "little")


def test_png_has_no_text_metadata():
    data = encode_png(np.zeros((8, 8, 3), np.uint8))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf"):
        assert chunk not in data
