"""A workspace written by synthct 0.1.0 still reads, samples, resumes and reports.

tests/data/workspace-0.1.0.tar.gz was made with the 0.1.0 CLI (12 phantoms at scale 0.25,
`preprocess --size 32`, a 4-step HA-GAN at width 1/16 and latent 16, a 4-case set, a
random-extractor evaluation, a 2+2-case study with one rater's four scores, a 2-fold, 2-epoch
segmentation experiment whose fold weights were removed to keep the file small). Whatever the
code's internal layout becomes, these artefacts must keep working.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ARCHIVE = Path(__file__).parent / "data" / "workspace-0.1.0.tar.gz"
RUN, SET, STUDY, EXPERIMENT = "legacy-hagan", "legacy-set", "legacy-study", "legacy-seg"
EVAL = "legacy-set-pair-random-7b939647"


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    from synthct.workspace import Workspace

    ws = Workspace.resolve(tmp_path / "ws")
    monkeypatch.setenv("SYNTHCT_WORKSPACE", str(ws.root))
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    return ws


def _cli(*args: str) -> str:
    from synthct.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_artefacts_are_listed(legacy):

    assert legacy.list_runs() == [RUN]
    assert legacy.list_sets() == [SET]
    assert legacy.list_evals() == [EVAL]
    assert legacy.list_experiments() == [EXPERIMENT]


def test_checkpoint_regenerates_its_set(legacy):
    """Every case of the 0.1.0 set comes back from its recorded seed (to float rounding)."""
    from synthct.checkpoint import load_generator
    from synthct.generate import generate_case
    from synthct.sets import load_datacard, load_synthetic_pair

    system, run_cfg, meta = load_generator(legacy.run_dir(RUN), "latest")
    card = load_datacard(legacy.synthetic_dir(SET))
    assert meta["step"] == 4 and card["checkpoint"]["step"] == 4
    for case in card["cases"]:
        image, mask = generate_case(system, case["seed"])
        disk_image, disk_mask = load_synthetic_pair(legacy.synthetic_dir(SET), case["case_id"])
        assert image.shape == disk_image.array.shape == tuple(card["shape"])
        assert np.abs(image.astype(np.float64) - disk_image.array).max() <= 1.0
        assert int(mask.sum()) == case["mask_voxels"] == int(disk_mask.array.sum())


def test_run_resumes(legacy, tmp_path):
    cfg = tmp_path / "more.yaml"
    cfg.write_text((legacy.root / "legacy-config.yaml").read_text().replace("steps: 4", "steps: 6"))
    _cli("train", "--config", str(cfg), "--run", RUN, "--resume")
    from synthct.checkpoint import list_checkpoints

    assert [s for s, _ in list_checkpoints(legacy.run_dir(RUN))][-1] == 6
    losses = (legacy.run_dir(RUN) / "losses.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in losses[1:]] == ["2", "4", "6"]


def test_evaluation_reads(legacy):
    from synthct.workspace import read_json
    from ui.results import load_eval, metric_table

    stored = read_json(legacy.evals / EVAL / "metrics.json")["metrics"]
    table = metric_table(load_eval(legacy, EVAL).result)
    fid = table[table["metric"] == "FID"]
    assert len(fid) == 1
    assert float(fid.iloc[0]["value"]) == pytest.approx(stored["fid"]["value"])
    assert float(fid.iloc[0]["ci_low"]) <= stored["fid"]["value"] <= float(fid.iloc[0]["ci_high"])


def test_study_statistics(legacy):
    out = _cli("study", "stats", STUDY)
    assert "Dr Legacy: mean real 6.50, synthetic 4.50" in out


def test_segmentation_results(legacy):
    from synthct.segment.scores import load_results

    res = load_results(legacy, EXPERIMENT)
    assert res["test"]["n_cases"] == 4
    assert 0.0 <= res["test"]["dsc_agg_union"] <= 1.0
