"""`synthct study …` end to end on a tiny workspace: create, invite, rate, list, stats, export,
revoke. The packed test split is provided through `synthct.preprocess`'s interface
(`load_packed`, `unpack`) by a stand-in module, so this test does not depend on the
preprocessing pipeline."""

from __future__ import annotations

import csv
import json
import sys
import types
from urllib.parse import parse_qs, urlparse

import numpy as np
from typer.testing import CliRunner

from synthct.cli import app
from synthct.config import DataConfig, to_dict
from synthct.io import Volume, save_volume, spacing_affine
from synthct.workspace import atomic_write_json

S = 16
SPACING = (1.5, 1.5, 3.0)


def _fake_preprocess(ws_root, cfg_seen):
    rng = np.random.default_rng(0)
    ids = [f"{c}-{i:03d}" for c in ("CHUM", "HGJ", "MDA") for i in range(2)]
    arrays = rng.uniform(-1, 1, (len(ids), S, S, S)).astype(np.float32)
    arrays[..., S // 2 :] = -1.0
    arrays[:, 5:9, 5:9, S // 2 + 2 : S // 2 + 6] = 1.0

    def load_packed(ws, cfg, split="train"):
        cfg_seen.append((cfg, split))
        return types.SimpleNamespace(
            arrays=arrays,
            case_ids=ids,
            centres=[i.split("-")[0] for i in ids],
            spacing=SPACING,
            manifest={},
        )

    def unpack(packed, cfg):
        lo, hi = cfg.hu_window
        img, msk = packed[..., : S // 2], packed[..., S // 2 :]
        return ((img + 1) / 2 * (hi - lo) + lo).astype(np.float32), (msk > 0).astype(np.uint8)

    return types.SimpleNamespace(load_packed=load_packed, unpack=unpack)


def _synthetic_set(ws, name="syn-a", n=4):
    d = ws.synthetic / name
    rng = np.random.default_rng(1)
    aff = spacing_affine(SPACING)
    for i in range(n):
        img = rng.normal(0, 80, (S, S, S // 2)).astype(np.int16)
        mask = np.zeros((S, S, S // 2), np.uint8)
        mask[6:10, 6:10, 2:6] = 1
        save_volume(Volume(img, aff), d / "imagesTr" / f"SYN-{i + 1:04d}__CT.nii.gz", np.int16)
        save_volume(Volume(mask, aff), d / "labelsTr" / f"SYN-{i + 1:04d}.nii.gz", np.uint8)
    card = {
        "name": name,
        "model": {"kind": "hagan", "size": S},
        "run_config": {"data": to_dict(DataConfig(size=S))},
        "cases": [{"case_id": f"SYN-{i + 1:04d}"} for i in range(n)],
        "spacing": list(SPACING),
    }
    atomic_write_json(d / "datacard.json", card)


def test_study_commands_end_to_end(workspace, monkeypatch):
    seen: list = []
    monkeypatch.setitem(sys.modules, "synthct.preprocess", _fake_preprocess(workspace.root, seen))
    _synthetic_set(workspace)
    runner = CliRunner()
    w = ["--workspace", str(workspace.root)]

    def run(*args):
        res = runner.invoke(app, [*args, *w])
        assert res.exit_code == 0, (res.output, res.exception)
        return res.output

    out = run("study", "create", "--name", "pilot", "--synthetic", "syn-a", "--n-real", "3",
              "--n-synthetic", "3", "--duplicates", "2", "--tile-px", "32", "--tiles", "4")  # fmt: skip
    assert "8 cases sealed" in out
    assert seen[0][1] == "test" and seen[0][0].size == S  # real cases from the test split at S
    manifest = json.loads((workspace.studies / "pilot" / "manifest.json").read_text())
    real = [c for c in manifest["cases"] if c["truth"] == "real" and not c["duplicate_of"]]
    assert len({c["case_id"].split("-")[0] for c in real}) == 3  # one per centre
    assert manifest["render"]["spacing"] == list(SPACING)

    tokens = {}
    for name in ("Dr A", "Dr B"):
        out = run("study", "invite", "pilot", "--name", name, "--base-url", "https://x.org")
        link = out.splitlines()[0].strip()  # the link alone on stdout's first line
        assert link.startswith("https://x.org/?token=")
        assert "works in any browser until you revoke it" in out
        tokens[name] = parse_qs(urlparse(link).query)["token"][0]

    from db.session import database_url, make_engine, session_scope
    from synthct.vtt.flow import next_case, rater_for_token, submit

    truth = {c["public_id"]: c["truth"] for c in manifest["cases"]}
    engine = make_engine(database_url(workspace.database))
    given = {"Dr A": {}, "Dr B": {}}
    for name, token in tokens.items():
        while True:
            with session_scope(engine) as s:
                case = next_case(s, rater_for_token(s, token))
                if case is None:
                    break
                score = (8 if truth[case.public_id] == "synthetic" else 3) + (name == "Dr B")
                submit(s, rater_for_token(s, token), case.public_id, score)
                given[name][case.public_id] = score
    engine.dispose()

    listing = json.loads(run("study", "list", "--json"))
    assert listing[0]["ratings"] == 16 and listing[0]["active_raters"] == 2

    stats = json.loads(run("study", "stats", "pilot", "--json"))
    by_rater = {r["rater"]: r for r in stats["raters"]}
    assert by_rater["Dr A"]["mean_real"] == 3 and by_rater["Dr B"]["mean_synthetic"] == 9
    assert by_rater["Dr A"]["auc"] == 1.0 and by_rater["Dr A"]["accuracy"] == 1.0
    assert stats["cases"] == {"real": 3, "synthetic": 3}  # duplicates not counted twice
    assert stats["intra_rater"][0]["exact_agreement"] == 1.0
    text = run("study", "stats", "pilot")
    assert "Krippendorff" in text and "warning: Small study" in text

    run("study", "export", "pilot", "--out", "exports/pilot.csv")
    with open(workspace.root / "exports" / "pilot.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16
    for r in rows:
        assert r["truth"] == truth[r["public_id"]]
        assert int(r["score"]) == given[r["rater"]][r["public_id"]]

    run("study", "revoke", "pilot", "--name", "Dr A")
    with session_scope(make_engine(database_url(workspace.database))) as s:
        assert rater_for_token(s, tokens["Dr A"]) is None
        assert rater_for_token(s, tokens["Dr B"]) is not None


def test_study_errors_are_user_errors(workspace):
    from synthct.vtt import StudyError

    res = CliRunner().invoke(app, ["study", "stats", "nope", "--workspace", str(workspace.root)])
    assert isinstance(res.exception, StudyError) and "does not exist" in str(res.exception)
    res = CliRunner().invoke(
        app, ["study", "create", "--name", "x", "--synthetic", "missing", "-w", str(workspace.root)]
    )
    assert isinstance(res.exception, StudyError) and "not found" in str(res.exception)
    res = CliRunner().invoke(
        app, ["study", "export", "x", "--out", "../../escape.csv", "-w", str(workspace.root)]
    )
    assert "outside workspace" in str(res.exception)


def test_invite_describes_the_link_and_warns_while_no_password_is_set(
    workspace, tmp_path, monkeypatch
):
    from db.session import database_url, make_engine
    from synthct.access import hash_password
    from tests.app.helpers import make_study

    engine = make_engine(database_url(workspace.database))
    make_study(workspace, engine, name="pw", n=1, raters=())
    engine.dispose()
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    monkeypatch.delenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", raising=False)
    res = CliRunner().invoke(app, ["study", "invite", "pw", "--name", "Dr A"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("http://localhost:8501/?token=")
    assert "personal link for 'Dr A'" in res.output and "one-time" not in res.output
    assert any(ln.startswith("warning: no researcher password is set") for ln in lines)
    monkeypatch.setenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", hash_password("a long passphrase"))
    res = CliRunner().invoke(app, ["study", "invite", "pw", "--name", "Dr B"])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output
