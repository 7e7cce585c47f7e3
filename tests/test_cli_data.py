import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from synthct.cli import app
from synthct.datasets import load_cases, load_splits
from synthct.errors import WorkspaceError


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))


def _folder(root, good=3, bad=1):
    for i in range(good):
        _save(root / "images" / f"CHUS-{i:03d}.nii.gz", np.zeros((8, 8, 6), np.int16))
        m = np.zeros((8, 8, 6), np.uint8)
        m[2:4, 2:4, 2:4] = 1
        _save(root / "masks" / f"CHUS-{i:03d}.nii.gz", m)
    for i in range(bad):
        _save(root / "images" / f"MDA-{i:03d}.nii.gz", np.zeros((8, 8, 6), np.int16))
        _save(root / "masks" / f"MDA-{i:03d}.nii.gz", np.full((8, 8, 6), 7, np.uint8))
    return root


def test_ingest_json_report_and_exit_zero(tmp_path, workspace):
    src = _folder(tmp_path / "src")
    result = CliRunner().invoke(app, ["ingest", str(src), "--json", "--seed", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["case_id"] for r in report] == ["CHUS-000", "CHUS-001", "CHUS-002", "MDA-000"]
    assert [r["status"] for r in report] == ["accepted"] * 3 + ["rejected"]
    assert "MDA-000.nii.gz" in report[3]["problems"][0] and "[7]" in report[3]["problems"][0]
    assert set(report[0]) == {"case_id", "status", "problems"}
    assert len(load_cases(workspace)) == 3
    assert list(load_splits(workspace).values()).count("test") == 1  # round(0.2 * 3) = 1


def test_ingest_table_names_status(tmp_path, workspace):
    src = _folder(tmp_path / "src")
    result = CliRunner().invoke(app, ["ingest", str(src), "-w", str(workspace.root)])
    assert result.exit_code == 0
    assert "3 accepted, 0 fixed, 1 rejected" in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("MDA-000"))
    assert "rejected" in line and "outside {0, 1, 2}" in line


def test_ingest_exit_nonzero_when_nothing_usable(tmp_path, workspace):
    src = _folder(tmp_path / "src", good=0, bad=2)
    result = CliRunner().invoke(app, ["ingest", str(src), "--json"])
    assert result.exit_code == 1
    assert [r["status"] for r in json.loads(result.stdout)] == ["rejected", "rejected"]
    assert not workspace.case_index.exists()


def test_ingest_missing_folder_is_a_user_error(tmp_path, workspace):
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "nope")])
    assert isinstance(result.exception, WorkspaceError)


def test_phantom_then_ingest(tmp_path, workspace):
    out = tmp_path / "demo"
    runner = CliRunner()
    r = runner.invoke(app, ["phantom", "--out", str(out), "--n", "3", "--scale", "0.06"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "imagesTr").glob("*__CT.nii.gz"))) == 3
    r = runner.invoke(app, ["phantom", "--out", str(out), "--n", "3", "--scale", "0.06"])
    assert isinstance(r.exception, WorkspaceError)  # refuses to overwrite
    r = runner.invoke(app, ["ingest", str(out), "--json"])
    assert r.exit_code == 0
    assert {x["status"] for x in json.loads(r.stdout)} <= {"accepted", "fixed"}


@pytest.mark.parametrize("bad", [["--scale", "2"], ["--n", "0"]])
def test_phantom_rejects_bad_options(tmp_path, bad):
    r = CliRunner().invoke(app, ["phantom", "--out", str(tmp_path / "x"), *bad])
    assert r.exit_code == 2
