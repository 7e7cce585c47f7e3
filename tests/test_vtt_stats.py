"""VTT statistics against independent computations, textbook examples and the thesis tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from synthct.vtt.stats import (
    agreement,
    auc_delong,
    fleiss_kappa,
    intra_rater,
    krippendorff_alpha,
    mw_power,
    per_case,
    power_warning,
    rater_summary,
    ratings_frame,
    score_tables,
    study_stats,
)

# Thesis Tables 5.17 (real) and 5.18 (generated): image number -> (MD 1, Radiologist, MD 2).
THESIS_REAL = {3: (2, 4, 7), 4: (4, 5, 4), 6: (3, 5, 7), 7: (4, 3, 4), 8: (5, 4, 5)}
THESIS_FAKE = {1: (3, 5, 8), 2: (5, 6, 6), 5: (2, 3, 2), 9: (3, 6, 7), 10: (4, 4, 8)}
RATERS = ("MD 1", "Radiologist", "MD 2")


def thesis_rows():
    rows = []
    for truth, table in (("real", THESIS_REAL), ("synthetic", THESIS_FAKE)):
        for number, scores in table.items():
            for rater, score in zip(RATERS, scores, strict=True):
                rows.append(
                    {
                        "rater": rater,
                        "public_id": f"p{number:02d}",
                        "truth": truth,
                        "case_id": f"{number:02d}",
                        "duplicate_of": None,
                        "score": score,
                        "duration_s": 10.0 + number,
                    }
                )
    return rows


def test_thesis_tables_5_17_and_5_18_reproduced():
    tables = score_tables(ratings_frame(thesis_rows()))
    real, fake = tables["real"], tables["synthetic"]
    # reported means: real 3.6 / 4.2 / 5.4, generated 3.4 / 4.8 / 6.2
    for rater, want_real, want_fake in zip(RATERS, (3.6, 4.2, 5.4), (3.4, 4.8, 6.2), strict=True):
        assert real.loc["mean", rater] == pytest.approx(want_real)
        assert fake.loc["mean", rater] == pytest.approx(want_fake)
    assert list(real.index[:-1]) == ["03", "04", "06", "07", "08"]
    assert real.loc["03", "MD 2"] == 7 and fake.loc["10", "MD 2"] == 8


def test_rater_summary_matches_sklearn_and_scipy():
    df = ratings_frame(thesis_rows())
    for row in (r.to_dict() for r in rater_summary(df, threshold=5)):
        i = RATERS.index(row["rater"])
        syn = np.array([v[i] for v in THESIS_FAKE.values()], float)
        real = np.array([v[i] for v in THESIS_REAL.values()], float)
        y = np.r_[np.ones(5), np.zeros(5)]
        assert row["auc"] == pytest.approx(roc_auc_score(y, np.r_[syn, real]))
        mw = sps.mannwhitneyu(syn, real, alternative="two-sided")
        assert row["mann_whitney_p"] == pytest.approx(mw.pvalue)
        assert row["auc"] == pytest.approx(row["mann_whitney_u"] / 25)
        tp, tn = int((syn > 5).sum()), int((real <= 5).sum())
        assert row["sensitivity"] == tp / 5 and row["specificity"] == tn / 5
        assert row["accuracy"] == (tp + tn) / 10
        assert row["binomial_p"] == pytest.approx(sps.binom.sf(tp + tn - 1, 10, 0.5))
    md2 = next(r.to_dict() for r in rater_summary(df) if r.rater == "MD 2")
    # MD 2: synthetic 8,6,2,7,8 vs real 7,4,7,4,5 -> 16 wins + 2 ties of 25 pairs = 0.68
    assert md2["auc"] == pytest.approx(0.68)
    assert md2["mean_real"] == pytest.approx(5.4) and md2["mean_synthetic"] == pytest.approx(6.2)


def test_score_of_exactly_threshold_counts_as_real_call():
    rows = [
        {"rater": "r", "public_id": "a", "truth": "synthetic", "case_id": "A", "score": 5},
        {"rater": "r", "public_id": "b", "truth": "real", "case_id": "B", "score": 5},
    ]
    df = ratings_frame([{**r, "duplicate_of": None, "duration_s": 1.0} for r in rows])
    (row,) = [r.to_dict() for r in rater_summary(df, threshold=5)]
    assert row["sensitivity"] == 0.0 and row["specificity"] == 1.0
    assert per_case(df)[0].to_dict()["fooled"] == ["r"]


def _delong_bruteforce(pos, neg):
    """DeLong variance written out from the definition (independent of the vectorised version)."""
    m, n = len(pos), len(neg)

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    v10 = [sum(psi(x, y) for y in neg) / n for x in pos]
    v01 = [sum(psi(x, y) for x in pos) / m for y in neg]
    auc = sum(v10) / m
    s10 = sum((v - auc) ** 2 for v in v10) / (m - 1)
    s01 = sum((v - auc) ** 2 for v in v01) / (n - 1)
    return auc, math.sqrt(s10 / m + s01 / n)


def test_auc_delong_against_definition_and_sklearn():
    rng = np.random.default_rng(3)
    pos = rng.integers(0, 11, 23).astype(float)
    neg = rng.integers(0, 9, 17).astype(float)
    auc, lo, hi, se = auc_delong(pos, neg)
    want_auc, want_se = _delong_bruteforce(pos, neg)
    assert auc == pytest.approx(want_auc)
    assert auc == pytest.approx(roc_auc_score(np.r_[np.ones(23), np.zeros(17)], np.r_[pos, neg]))
    assert se == pytest.approx(want_se)
    assert lo == pytest.approx(auc - 1.959964 * se, abs=1e-6)
    assert hi == pytest.approx(min(1.0, auc + 1.959964 * se), abs=1e-6)


def test_fleiss_kappa_wikipedia_worked_example():
    # Fleiss (1971) as tabulated in Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    counts = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(np.array(counts)) == pytest.approx(0.2099, abs=1e-4)
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[1, 2], [2, 2]]))


def test_krippendorff_alpha_worked_example():
    # Krippendorff (2011) "Computing Krippendorff's alpha-reliability", 4 observers x 12 units
    n = np.nan
    data = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
        ]
    )
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=5e-4)
    # perfect agreement -> 1
    assert krippendorff_alpha(np.array([[1, 2, 3], [1, 2, 3]])) == pytest.approx(1.0)


def test_agreement_on_thesis_scores():
    ag = agreement(ratings_frame(thesis_rows()), threshold=5).to_dict()
    scores = np.array([THESIS_REAL.get(k, THESIS_FAKE.get(k)) for k in range(1, 11)], float)
    assert ag["krippendorff_alpha_interval"] == pytest.approx(krippendorff_alpha(scores.T))
    calls = scores > 5  # (cases, raters)
    counts = np.stack([(~calls).sum(1), calls.sum(1)], 1)
    assert ag["fleiss_kappa_calls"] == pytest.approx(fleiss_kappa(counts))
    assert ag["fleiss_raters"] == 3


def test_intra_rater_on_duplicates():
    base = {"truth": "real", "case_id": "A", "duration_s": 1.0}
    rows = [
        {**base, "rater": "r", "public_id": "a", "duplicate_of": None, "score": 3},
        {**base, "rater": "r", "public_id": "a2", "duplicate_of": "a", "score": 7},
        {**base, "rater": "r", "public_id": "b", "duplicate_of": None, "score": 6, "case_id": "B"},
        {**base, "rater": "r", "public_id": "b2", "duplicate_of": "b", "score": 6, "case_id": "B"},
    ]
    (res,) = [r.to_dict() for r in intra_rater(ratings_frame(rows), threshold=5)]
    assert res["pairs"] == 2
    assert res["mean_abs_difference"] == 2.0
    assert res["exact_agreement"] == 0.5 and res["same_call"] == 0.5
    # duplicates do not count twice elsewhere
    assert len(per_case(ratings_frame(rows))) == 2


def test_power_warning_for_the_thesis_design_only():
    assert mw_power(5, 5) < 0.3
    assert "5 real and 5 synthetic" in power_warning(5, 5)
    assert power_warning(40, 40) is None


def test_study_stats_is_json_ready():
    import json

    out = study_stats(thesis_rows()).to_dict()
    json.dumps(out)
    assert out["cases"] == {"real": 5, "synthetic": 5}
    assert out["tables"]["synthetic"]["mean"]["MD 2"] == pytest.approx(6.2)
    fooled = {c["case_id"]: c["fooled"] for c in out["per_case"] if c["truth"] == "synthetic"}
    assert fooled["05"] == sorted(RATERS)  # scored 2, 3, 2
    assert fooled["01"] == ["MD 1", "Radiologist"]  # 3, 5 (5 counts as real), 8
    assert out["warning"]
