import gzip
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from synthct.datasets import (
    ACCEPTED,
    FIXED,
    REJECTED,
    cases_in_split,
    discover_cases,
    ingest,
    ingest_report,
    load_case_reports,
    load_cases,
    load_splits,
    make_splits,
)
from synthct.errors import WorkspaceError
from synthct.io import load_volume
from synthct.runtime import case_ids_hash

SHAPE = (12, 10, 8)
AFF = np.diag([1.0, 1.0, 3.0, 1.0])


def _save(path, arr, aff=AFF, dtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr if dtype is None else np.asarray(arr).astype(dtype))
    nib.save(nib.Nifti1Image(arr, aff), str(path))
    return path


def _ct(seed=0, shape=SHAPE):
    return np.random.default_rng(seed).integers(-1024, 2000, shape).astype(np.int16)


def _mask(shape=SHAPE, value=1):
    m = np.zeros(shape, np.uint8)
    m[3:6, 3:6, 2:5] = value
    m[8, 7, 6] = 2
    return m


def _pair(root, cid, label_name=None, ct=None, mask=None, mask_aff=AFF):
    _save(root / "imagesTr" / f"{cid}__CT.nii.gz", _ct() if ct is None else ct)
    _save(
        root / "labelsTr" / f"{label_name or cid}.nii.gz",
        _mask() if mask is None else mask,
        mask_aff,
    )


@pytest.fixture
def mixed(tmp_path):
    """A HECKTOR-style folder with good, fixable and every kind of bad case."""
    root = tmp_path / "src"
    for cid in ("CHUM-001", "CHUM-002", "CHUM-003"):
        _pair(root, cid)
    _save(root / "imagesTr" / "CHUM-001__PT.nii.gz", _ct())  # PET: ignored
    _pair(root, "HMR-004", label_name="HMR_004")  # underscore label spelling
    big = np.zeros((12, 11, 8), np.uint8)
    big[:, :10, :] = _mask()
    _pair(root, "HGJ-005", mask=big)  # label one voxel larger -> fixed
    _pair(root, "CHUP-006")
    p = root / "imagesTr" / "CHUP-006__CT.nii.gz"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # truncated gzip
    _pair(root, "CHUP-007")
    (root / "labelsTr" / "CHUP-007.nii.gz").write_text("this is not an image\n")
    _save(root / "imagesTr" / "CHUS-008__CT.nii.gz", _ct()[:, :, 0])  # 2D
    _save(root / "labelsTr" / "CHUS-008.nii.gz", _mask()[:, :, 0])
    nan = _ct().astype(np.float32)
    nan[1, 2, 3] = np.nan
    _pair(root, "CHUS-009", ct=nan)
    _save(root / "imagesTr" / "CHUV-010__CT.nii.gz", _ct())  # no label
    _save(root / "labelsTr" / "CHUV-011.nii.gz", _mask())  # no image
    _pair(root, "MDA-012", mask=_mask(value=3))
    _pair(root, "MDA-013", mask=np.zeros((12, 20, 8), np.uint8))  # 10 voxels larger
    _pair(root, "MDA-014", mask_aff=np.diag([2.0, 2.0, 3.0, 1.0]))  # spacing differs
    shifted = AFF.copy()
    shifted[0, 3] = 5.0
    _pair(root, "MDA-015", mask_aff=shifted)  # origin 5 mm away
    _pair(root, "MDA-016", mask=_mask().astype(np.float32) * 0.5)  # non-integer labels
    return root


EXPECTED = {
    "CHUM-001": (ACCEPTED, None),
    "CHUM-002": (ACCEPTED, None),
    "CHUM-003": (ACCEPTED, None),
    "HMR-004": (ACCEPTED, None),
    "HGJ-005": (FIXED, "labelsTr/HGJ-005.nii.gz"),
    "CHUP-006": (REJECTED, "CHUP-006__CT.nii.gz"),
    "CHUP-007": (REJECTED, "CHUP-007.nii.gz"),
    "CHUS-008": (REJECTED, "CHUS-008__CT.nii.gz"),
    "CHUS-009": (REJECTED, "CHUS-009__CT.nii.gz"),
    "CHUV-010": (REJECTED, "CHUV-010__CT.nii.gz"),
    "CHUV-011": (REJECTED, "CHUV-011.nii.gz"),
    "MDA-012": (REJECTED, "MDA-012.nii.gz"),
    "MDA-013": (REJECTED, "MDA-013.nii.gz"),
    "MDA-014": (REJECTED, "MDA-014.nii.gz"),
    "MDA-015": (REJECTED, "MDA-015.nii.gz"),
    "MDA-016": (REJECTED, "MDA-016.nii.gz"),
}
WHY = {
    "CHUP-006": "truncated",
    "CHUP-007": "unreadable",
    "CHUS-008": "3D",
    "CHUS-009": "NaN",
    "CHUV-010": "no mask",
    "CHUV-011": "no image",
    "MDA-012": "[3] outside",
    "MDA-013": "10 voxels",
    "MDA-014": "spacing",
    "MDA-015": "origin",
    "MDA-016": "non-integer",
}


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_discovery_pairs_by_id_and_ignores_pet(mixed):
    found = {f.case_id: f for f in discover_cases(mixed)}
    assert set(found) == set(EXPECTED)
    assert found["HMR-004"].mask.name == "HMR_004.nii.gz"
    assert found["CHUV-010"].mask is None and found["CHUV-011"].image is None
    assert all("__PT" not in str(f.image) for f in found.values())


def test_ingest_statuses_and_messages(mixed, workspace):
    before = _tree_digest(mixed)
    result = ingest(mixed, workspace)
    assert _tree_digest(mixed) == before  # the source is never modified
    got = {r.case_id: r for r in result.reports}
    assert set(got) == set(EXPECTED)
    for cid, (status, name) in EXPECTED.items():
        r = got[cid]
        assert r.status == status, (cid, r.problems)
        if name:
            assert any(name in p for p in r.problems), (cid, r.problems)
        if cid in WHY:
            assert any(WHY[cid] in p for p in r.problems), (cid, r.problems)
        if status == ACCEPTED:
            assert r.problems == []


def test_fixed_mask_is_on_the_image_grid(mixed, workspace):
    ingest(mixed, workspace)
    rec = {c.case_id: c for c in load_cases(workspace)}["HGJ-005"]
    assert rec.status == FIXED and rec.mask == str(workspace.data / "fixed" / "HGJ-005.nii.gz")
    img, mask = load_volume(rec.image), load_volume(rec.mask)
    assert mask.shape == img.shape == rec.shape
    np.testing.assert_allclose(mask.affine, img.affine)
    np.testing.assert_array_equal(mask.array, _mask())


def test_flipped_axis_oversize_label_is_aligned(tmp_path, workspace):
    """LPS-stored pair whose label has one extra y row at the end of the stored axis: after the
    canonical flip the extra row comes first, and the fix must still align voxel for voxel."""
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    ct = _ct(3)
    lab = np.zeros((12, 11, 8), np.uint8)
    lab[2, 3, 4] = 1
    lab[5, 9, 1] = 2
    _save(tmp_path / "src" / "images" / "A-01.nii", ct, lps)
    _save(tmp_path / "src" / "masks" / "A-01.nii", lab, lps)
    result = ingest(tmp_path / "src", workspace)
    assert [r.status for r in result.reports] == [FIXED]
    rec = load_cases(workspace)[0]
    img, mask = load_volume(rec.image), load_volume(rec.mask, dtype=np.uint8)
    expected = lab[:, :10, :][::-1, ::-1, :]  # same stored voxels, canonical orientation
    np.testing.assert_array_equal(mask.array, expected)
    np.testing.assert_array_equal(img.array, ct[::-1, ::-1, :])


def test_index_round_trip_and_split_api(mixed, workspace):
    result = ingest(mixed, workspace, test_fraction=0.34, seed=5)
    cases = load_cases(workspace)
    assert [c.case_id for c in cases] == ["CHUM-001", "CHUM-002", "CHUM-003", "HGJ-005", "HMR-004"]
    assert all(c.centre == c.case_id.split("-")[0] for c in cases)
    assert cases[0].spacing == pytest.approx((1.0, 1.0, 3.0)) and cases[0].shape == SHAPE
    assert len(load_case_reports(workspace)) == len(EXPECTED)
    splits = load_splits(workspace)
    assert splits == result.splits and set(splits) == {c.case_id for c in cases}
    assert [c.case_id for c in cases_in_split(workspace, "all")] == [c.case_id for c in cases]
    parts = [cases_in_split(workspace, s) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(cases)
    assert [c.centre for c in parts[2]] == ["CHUM"]  # round(0.34 * 3) = 1; singletons stay train


def test_reingest_replaces_the_index(mixed, workspace, tmp_path):
    ingest(mixed, workspace)
    other = tmp_path / "other"
    _pair(other, "CHUV-100")
    ingest(other, workspace)
    assert [c.case_id for c in load_cases(workspace)] == ["CHUV-100"]
    assert not (workspace.data / "fixed" / "HGJ-005.nii.gz").exists()
    assert not list(workspace.data.glob(".*"))  # no temporary files left behind


def test_nothing_usable_keeps_previous_index(mixed, workspace, tmp_path):
    ingest(mixed, workspace)
    before = workspace.case_index.read_bytes()
    bad = tmp_path / "bad"
    _save(bad / "imagesTr" / "X-1__CT.nii.gz", _ct())
    result = ingest_report(bad, workspace)
    assert not result.index_written and result.reports[0].status == REJECTED
    assert workspace.case_index.read_bytes() == before


def test_missing_index_and_empty_folder(workspace, tmp_path):
    with pytest.raises(WorkspaceError, match="synthct ingest"):
        load_cases(workspace)
    with pytest.raises(WorkspaceError, match="synthct ingest"):
        load_splits(workspace)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkspaceError, match="imagesTr"):
        discover_cases(tmp_path / "empty")


def test_splits_stratified_and_seeded():
    cases = [(f"A-{i:03d}", "A") for i in range(10)]
    cases += [(f"B-{i:03d}", "B") for i in range(5)]
    cases += [(f"C-{i:03d}", "C") for i in range(3)]
    cases += [(f"D-{i:03d}", "D") for i in range(2)]
    s1 = make_splits(cases, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert s1 == make_splits(list(reversed(cases)), 0.2, 0.1, seed=0)  # order-independent
    test = [c for c, s in s1.items() if s == "test"]
    val = [c for c, s in s1.items() if s == "val"]
    per_centre = {k: sum(c.startswith(k) for c in test) for k in "ABCD"}
    # round(0.2 n): 10 -> 2, 5 -> 1, 3 -> 1 (0.6), 2 -> 0 (0.4).
    assert per_centre == {"A": 2, "B": 1, "C": 1, "D": 0}
    assert sorted(c[0] for c in val) == ["A", "B"]  # round(0.1 n): 1, 1 (0.5), 0, 0
    others = [make_splits(cases, 0.2, 0.1, seed=s) for s in range(1, 6)]
    assert any(o != s1 for o in others)
    for o in others:  # every seed keeps the same per-centre counts
        assert sorted(c[0] for c, s in o.items() if s == "test") == sorted(c[0] for c in test)
    with pytest.raises(ValueError):
        make_splits(cases, 0.7, 0.4)


def test_case_ids_hash_matches_sha256_of_sorted_ids():
    ids = ["MDA-002", "CHUM-001", "HGJ-010"]
    expected = hashlib.sha256(b"CHUM-001\nHGJ-010\nMDA-002").hexdigest()
    assert case_ids_hash(ids) == expected == case_ids_hash(reversed(ids))
    assert case_ids_hash(ids[:2]) != expected


def test_phantom_set_ingests_with_the_oversize_label_fixed(tmp_path, workspace):
    from synthct.phantom import plan_cases, write_phantom_set

    write_phantom_set(tmp_path / "demo", n=7, seed=1, scale=0.06)
    result = ingest(tmp_path / "demo", workspace)
    fixed = {r.case_id for r in result.reports if r.status == FIXED}
    assert fixed == {s.case_id for s in plan_cases(7, seed=1) if s.oversize_label}
    assert all(r.status in (ACCEPTED, FIXED) for r in result.reports)


def test_gzip_of_garbage_is_rejected(tmp_path, workspace):
    root = tmp_path / "src"
    _pair(root, "Z-1")
    (root / "imagesTr" / "Z-1__CT.nii.gz").write_bytes(gzip.compress(b"\x00" * 400))
    r = ingest_report(root, workspace).reports[0]
    assert r.status == REJECTED and "Z-1__CT.nii.gz" in r.problems[0]


def test_gan_only_split_is_reserved_per_centre_and_leaves_other_splits_alone():
    cases = [(f"A-{i:03d}", "A") for i in range(10)] + [(f"B-{i:03d}", "B") for i in range(6)]
    plain = make_splits(cases, 0.2, 0.1, seed=3)
    assert make_splits(cases, 0.2, 0.1, seed=3, gan_fraction=0.0) == plain
    with_gan = make_splits(cases, 0.2, 0.1, seed=3, gan_fraction=0.3)
    gan = sorted(c for c, s in with_gan.items() if s == "gan")
    assert [c[0] for c in gan] == ["A"] * 3 + ["B"] * 2  # round(0.3 n): 3, 2 (1.8)
    # test and val are the same cases as without the option; gan comes out of train only
    for split in ("test", "val"):
        assert {c for c, s in with_gan.items() if s == split} == {
            c for c, s in plain.items() if s == split
        }
    assert set(gan) <= {c for c, s in plain.items() if s == "train"}
    # every centre keeps a training case however large the fractions
    tight = make_splits([("C-1", "C"), ("C-2", "C")], 0.0, 0.0, seed=0, gan_fraction=0.9)
    assert sorted(tight.values()) == ["gan", "train"]
    with pytest.raises(ValueError, match="gan fraction"):
        make_splits(cases, 0.3, 0.3, seed=0, gan_fraction=0.4)


def test_ingest_records_the_gan_split(mixed, workspace):
    ingest(mixed, workspace, test_fraction=0.0, gan_fraction=0.34, seed=1)
    registry = json.loads(workspace.splits.read_text())
    assert registry["gan_fraction"] == 0.34 and registry["counts"]["gan"] == 1
    gan = cases_in_split(workspace, "gan")
    assert [c.centre for c in gan] == ["CHUM"]  # round(0.34 * 3) = 1; singletons stay train
    fold_cases = cases_in_split(workspace, "train") + cases_in_split(workspace, "val")
    assert not {c.case_id for c in gan} & {c.case_id for c in fold_cases}
