import numpy as np
import pytest
from scipy import ndimage

from synthct.io import load_volume
from synthct.phantom import (
    CENTRES,
    LABEL_GTVN,
    LABEL_GTVP,
    CaseSpec,
    case_file_names,
    make_case,
    plan_cases,
    write_phantom_set,
)


def test_same_seed_gives_identical_arrays_and_other_seed_differs():
    a = make_case("CHUS-001", seed=3, scale=0.1)
    b = make_case("CHUS-001", seed=3, scale=0.1)
    c = make_case("CHUS-001", seed=4, scale=0.1)
    assert a.image.array.tobytes() == b.image.array.tobytes()
    assert a.label.array.tobytes() == b.label.array.tobytes()
    np.testing.assert_array_equal(a.image.affine, b.image.affine)
    assert a.image.array.shape != c.image.array.shape or not np.array_equal(
        a.image.array, c.image.array
    )


def test_unpacks_as_image_and_label_with_shared_geometry():
    image, label = make_case("MDA-007", scale=0.12)
    assert image.array.dtype == np.float32 and label.array.dtype == np.uint8
    np.testing.assert_array_equal(image.affine, label.affine)
    assert set(np.unique(label.array)) <= {0, 1, 2}
    assert np.all(image.array == np.rint(image.array))  # integer HU, safe to store as int16


@pytest.mark.parametrize("case_id", ["CHUM-004", "HGJ-002", "CHUV-010", "HMR-003"])
def test_tumour_beside_airway_with_realistic_hu(case_id):
    case = make_case(case_id, seed=1, scale=0.25)
    img = case.image.array
    lab = case.label.array[:, : img.shape[1], :]  # HGJ/CHUM labels may be one voxel larger
    gtvp = lab == LABEL_GTVP
    assert gtvp.sum() > 5
    assert lab[case.tumour_voxel] == LABEL_GTVP
    # The airway is air in the image (partial volume at 4 mm voxels lifts its edge voxels) and
    # the tumour touches it (within 2 voxels).
    assert case.airway.sum() > 10
    assert np.median(img[case.airway]) < -600
    near = ndimage.binary_dilation(gtvp, iterations=2)
    assert (near & case.airway).any()
    # Enhancing primary ~ +60..+100 HU (noise and partial volume widen it a little).
    assert 30 < np.median(img[gtvp]) < 130
    if (lab == LABEL_GTVN).any():
        assert 0 < np.median(img[lab == LABEL_GTVN]) < 90


def test_tissue_hu_padding_and_bone():
    case = make_case("CHUV-002", seed=0, scale=0.25)
    img = case.image.array
    pad = case.info["padding"]
    assert pad == -3024.0  # CHUV pads with -3024 outside the scan circle
    n = img.shape[0]
    assert img[0, 0, 0] == pad and img[n // 2, n // 2, :].min() > pad  # corner vs centre
    inside = img[img > pad]
    assert inside.min() >= -1024 and inside.max() <= CENTRES["CHUV"].hu_max
    body = inside[inside > -300]
    # Soft tissue dominates the body; bone (spine, mandible, skull) is present.
    assert -120 < np.median(body) < 80
    assert (img > 700).sum() > 100
    # Fat (-100) and muscle (+45) are both represented.
    assert ((body > -150) & (body < -50)).mean() > 0.02
    assert ((body > 10) & (body < 90)).mean() > 0.2


def test_metal_exceeds_scanner_ceiling_and_oversize_label_adds_one_voxel():
    spec = CaseSpec("HGJ-009", "HGJ", 0, oversize_label=True, metal=True)
    case = make_case(spec.case_id, seed=0, scale=0.2, spec=spec)
    assert case.image.array.max() > 20000
    x, y, z = case.image.shape
    assert case.label.shape == (x, y + 1, z)
    assert not case.label.array[:, -1, :].any()


def test_no_nodes_when_forced():
    spec = CaseSpec("MDA-011", "MDA", 0, n_nodes=0)
    case = make_case(spec.case_id, seed=0, scale=0.12, spec=spec)
    assert not (case.label.array == LABEL_GTVN).any()


def test_plan_spreads_centres_and_guarantees_quirks():
    specs = plan_cases(40, seed=0)
    ids = [s.case_id for s in specs]
    assert len(set(ids)) == 40
    centres = [s.centre for s in specs]
    assert set(centres) == set(CENTRES)
    assert centres.count("MDA") == max(centres.count(c) for c in CENTRES)  # largest in HECKTOR
    assert any(s.oversize_label for s in specs) and any(s.metal for s in specs)
    assert any(s.n_nodes == 0 for s in specs)
    assert plan_cases(40, seed=0) == specs


def test_full_size_geometry_matches_centre_profile():
    case = make_case("CHUS-005", seed=2, scale=1.0)
    sx, sy, sz = case.image.spacing
    assert case.image.shape[:2] == (512, 512)
    lo, hi = CENTRES["CHUS"].spacing_xy
    assert lo - 1e-6 <= sx <= hi + 1e-6 and sx == pytest.approx(sy)
    assert min(abs(sz - t) for t in CENTRES["CHUS"].slice_mm) < 1e-4
    assert CENTRES["CHUS"].n_slices[0] <= case.image.shape[2] <= CENTRES["CHUS"].n_slices[1]


def test_write_set_layout_and_round_trip(tmp_path):
    out = tmp_path / "demo"
    paths = write_phantom_set(out, n=8, seed=0, scale=0.1)
    assert len(paths) == 8 and all(p.is_file() for p in paths)
    specs = plan_cases(8, seed=0)
    hmr = [s for s in specs if s.centre == "HMR"]
    assert hmr and case_file_names(hmr[0])[1].startswith("HMR_")
    oversize = [s for s in specs if s.oversize_label]
    assert oversize
    for spec in (oversize[0], specs[0]):
        img_name, lab_name = case_file_names(spec)
        img = load_volume(out / "imagesTr" / img_name)
        lab = load_volume(out / "labelsTr" / lab_name, dtype=np.uint8)
        mem = make_case(spec.case_id, spec.centre, spec.seed, 0.1, spec=spec)
        np.testing.assert_array_equal(img.array, mem.image.array)
        np.testing.assert_array_equal(lab.array, mem.label.array)
        np.testing.assert_allclose(img.affine, mem.image.affine, atol=1e-4)
    assert load_volume(out / "labelsTr" / case_file_names(oversize[0])[1]).shape[1] == (
        load_volume(out / "imagesTr" / case_file_names(oversize[0])[0]).shape[1] + 1
    )
    assert not list(tmp_path.glob(".demo*"))  # no temporary folder left behind


def test_unknown_centre_is_refused():
    with pytest.raises(ValueError, match="unknown centre"):
        make_case("XYZ-001", scale=0.1)
