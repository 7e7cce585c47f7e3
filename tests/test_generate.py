"""Generation: shapes, HU range, binary masks, spacing, datacard, reproducibility, atomicity,
empty-mask policies and connected-component filtering (tiny analytic generators, S = 32)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from synthct import generate as gen
from synthct import sets
from synthct.config import DataConfig
from synthct.errors import ConfigError, WorkspaceError
from synthct.models.base import GenerativeModel
from synthct.views import VolumeView

S = 32
LATENT = 6


def _grid(size: int) -> torch.Tensor:
    r = torch.linspace(-1, 1, size)
    return torch.stack(torch.meshgrid(r, r, torch.linspace(-1, 1, size // 2), indexing="ij"))


class Analytic(GenerativeModel):
    """Deterministic pair generator whose mask content is known from the latent.

    z[0] > 0: a ball tumour at the centre (else the mask is empty); z[1] > 0: plus a small
    2x2x2 island in a corner (a second component). The image half is a smooth HU-like field.
    """

    kind = "analytic"

    def __init__(self, size: int = S, latent_dim: int = LATENT) -> None:
        super().__init__()
        self.size, self.latent_dim = size, latent_dim
        self.view = VolumeView(DataConfig(size=size))
        self.w = torch.nn.Parameter(torch.zeros(1))  # so .eval()/.to() behave like a model
        self.calls = 0

    @torch.no_grad()
    def generate(self, z, centre=None):
        self.calls += 1
        b, s = z.shape[0], self.size
        x, y, zz = _grid(s)
        out = torch.empty(b, 1, s, s, s)
        for i in range(b):
            img = torch.tanh(z[i, 2] * x + z[i, 3] * y + z[i, 4] * zz + 0.3 * z[i, 5])
            ball = (x**2 + y**2 + zz**2) < (0.3 + 0.1 * z[i, 1].abs()) ** 2
            mask = ball & (z[i, 0] > 0)
            if z[i, 1] > 0:
                mask[:2, :2, :2] = True
            out[i, 0, :, :, : s // 2] = img
            out[i, 0, :, :, s // 2 :] = mask.float() * 2 - 1
        return out


class Failing(Analytic):
    def generate(self, z, centre=None):
        if self.calls >= 2:
            raise RuntimeError("simulated crash in the middle of sampling")
        return super().generate(z, centre)


class OutOfMemoryAbove(Analytic):
    """Raises CUDA's out-of-memory error for batches larger than `limit` (0: always)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.sizes = limit, []

    def generate(self, z, centre=None):
        self.sizes.append(z.shape[0])
        if z.shape[0] > self.limit or self.limit == 0:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().generate(z, centre)


def _latent(seed: int) -> torch.Tensor:
    return torch.randn(1, LATENT, generator=torch.Generator().manual_seed(seed))[0]


def _opts(**kw) -> gen.GenerateConfig:
    kw.setdefault("n", 6)
    kw.setdefault("seed", 7)
    kw.setdefault("batch_size", 4)
    kw.setdefault("write_workers", 2)
    return gen.GenerateConfig(**kw)


@pytest.fixture(autouse=True)
def _unpack_contract(monkeypatch):
    """Where synthct.preprocess cannot be imported, a stand-in for its `unpack` (z packing)."""
    try:
        import synthct.preprocess  # noqa: F401
    except ImportError:
        import sys
        import types

        def unpack(packed, cfg):
            lo, hi = cfg.hu_window
            half = packed.shape[-1] // 2
            if cfg.packing == "z":
                img, msk = packed[..., :half], packed[..., half:]
            else:
                img, msk = packed[..., 0::2], packed[..., 1::2]
            image = ((img * 0.5 + 0.5) * (hi - lo) + lo).astype(np.float32)
            if cfg.mask == "binary":
                return image, (msk > 0).astype(np.uint8)
            return image, np.clip(np.rint(msk + 1), 0, 2).astype(np.uint8)

        mod = types.ModuleType("synthct.preprocess")
        mod.unpack = unpack
        monkeypatch.setitem(sys.modules, "synthct.preprocess", mod)


SPACING = (1.7, 1.9, 2.3)


def _write(ws, name="set", system=None, **kw):
    """Write a set; returns (folder, its datacard as read back from disk)."""
    out = ws.synthetic_dir(name)
    summary = gen.write_set(
        out,
        system or Analytic(),
        SPACING,
        _opts(**kw),
        provenance={"run": "r1", "training_cases": {"split": "train", "case_ids": ["A"]}},
    ).to_json(lists=False)
    card = sets.load_datacard(out)
    # write_set returns the card without its per-case lists (they stay on disk only)
    assert json.loads(json.dumps(summary)) == {
        k: v for k, v in card.items() if k not in ("cases", "seeds")
    }
    return out, card


def test_pairs_have_shapes_hu_range_binary_masks_and_spacing(workspace):
    out, card = _write(workspace, n=5)
    ids = [f"SYN-{i:04d}" for i in range(1, 6)]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{c}__CT.nii.gz" for c in ids]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in ids]
    for cid in ids:
        img = nib.load(out / "imagesTr" / f"{cid}__CT.nii.gz")
        lab = nib.load(out / "labelsTr" / f"{cid}.nii.gz")
        assert img.shape == lab.shape == (S, S, S // 2)
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.header.get_zooms(), SPACING, rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(lab.affine[:3, :3], axis=0), SPACING, rtol=1e-6)
        a = np.asarray(img.dataobj)
        assert a.min() >= -1024 and a.max() <= 600
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1}
    image, mask = sets.load_synthetic_pair(out, "SYN-0002")
    assert image.shape == (S, S, S // 2) and image.spacing == pytest.approx(SPACING)
    assert mask.array.dtype == np.uint8


def test_hu_values_follow_the_window_mapping(workspace):
    """An independent check of the postprocessing formula: HU = (out*0.5+0.5)*(hi-lo)+lo."""
    out, card = _write(workspace, n=1)
    z = _latent(card["seeds"][0])
    x, y, zz = _grid(S)
    raw = torch.tanh(z[2] * x + z[3] * y + z[4] * zz + 0.3 * z[5]).numpy()
    expected = np.rint((raw * 0.5 + 0.5) * (600 + 1024) - 1024)
    image, _ = sets.load_synthetic_pair(out, "SYN-0001")
    assert np.abs(image.array - expected).max() <= 1


def test_datacard_fields(workspace):
    out, card = _write(workspace, n=3)
    on_disk = json.loads((out / "datacard.json").read_text())
    assert on_disk == card
    # streamed, yet written exactly as json.dumps(indent=2) would write the whole card
    assert (out / "datacard.json").read_text() == json.dumps(card, indent=2) + "\n"
    for key in ("name", "created", "synthct_version", "model", "run", "seeds", "counts"):
        assert key in on_disk
    assert on_disk["name"] == "set" and on_disk["run"] == "r1"
    assert on_disk["model"]["kind"] == "analytic" and on_disk["model"]["size"] == S
    assert on_disk["seeds"] == [gen.case_seed(7, i) for i in range(3)]
    assert on_disk["spacing"] == list(SPACING)
    assert on_disk["counts"]["written"] == 3 and on_disk["metrics"] == {}
    assert on_disk["postprocess"]["empty_masks"] == "keep"
    assert on_disk["training_cases"]["case_ids"] == ["A"]
    assert workspace.list_sets() == ["set"]
    sets.update_datacard(out, "metrics", {"fid": 1.5})
    assert sets.load_datacard(out)["metrics"] == {"fid": 1.5}
    assert sets.load_datacard(out)["seeds"] == on_disk["seeds"]


def _arrays(out):
    return {
        p.relative_to(out).as_posix(): np.asarray(nib.load(p).dataobj).tobytes()
        for p in sorted(out.glob("*Tr/*.nii.gz"))
    }


def test_same_seed_gives_identical_set_independent_of_batch_size(workspace):
    a, _ = _write(workspace, "a", n=5, batch_size=2)
    b, _ = _write(workspace, "b", n=5, batch_size=2)
    c, _ = _write(workspace, "c", n=5, batch_size=5)
    d, _ = _write(workspace, "d", n=5, seed=8)
    assert _arrays(a) == _arrays(b) == _arrays(c)
    assert _arrays(a) != _arrays(d)
    assert len(_arrays(a)) == 10


def test_a_case_is_reproducible_alone(workspace):
    out, card = _write(workspace, n=4, batch_size=3)
    case = card["cases"][2]
    image, mask = gen.generate_case(Analytic(), case["seed"])
    img_v, mask_v = sets.load_synthetic_pair(out, case["case_id"])
    np.testing.assert_array_equal(image, img_v.array.astype(np.int16))
    np.testing.assert_array_equal(mask, mask_v.array)


def test_interrupted_generation_leaves_no_partial_set(workspace):
    with pytest.raises(RuntimeError, match="simulated crash"):
        _write(workspace, "broken", system=Failing(), n=9, batch_size=2)
    assert list(workspace.synthetic.iterdir()) == []
    assert workspace.list_sets() == []


def test_existing_set_is_refused_unless_overwrite(workspace):
    out, _ = _write(workspace, n=1)
    with pytest.raises(WorkspaceError, match="already exists"):
        _write(workspace, n=1)
    card = gen.write_set(out, Analytic(), SPACING, _opts(n=2), overwrite=True).to_json()
    assert card["counts"]["written"] == 2 and len(list((out / "labelsTr").iterdir())) == 2


def _empty_flags(seed: int, n: int, attempts: int = 1) -> list[list[bool]]:
    """Which (case, attempt) latents give an empty mask: no ball and no island (independent)."""
    zs = [[_latent(gen.case_seed(seed, i, a)) for a in range(attempts)] for i in range(n)]
    return [[bool(z[0] <= 0 and z[1] <= 0) for z in row] for row in zs]


def test_empty_mask_policies(workspace):
    n, seed = 12, 3
    flags = _empty_flags(seed, n, attempts=12)
    first_empty = [f[0] for f in flags]
    n_empty = sum(first_empty)
    assert 0 < n_empty < n  # the chosen seed exercises both branches

    _, keep = _write(workspace, "keep", n=n, seed=seed)
    assert keep["counts"]["written"] == n and keep["counts"]["empty_masks_kept"] == n_empty
    assert [c["mask_voxels"] == 0 for c in keep["cases"]] == first_empty

    out_drop, drop = _write(workspace, "drop2", n=n, seed=seed, empty_masks="drop")
    assert drop["counts"]["written"] == n - n_empty and drop["counts"]["dropped"] == n_empty
    assert [c["case_id"] for c in drop["cases"]] == [
        f"SYN-{k:04d}" for k in range(1, n - n_empty + 1)
    ]
    assert [c["index"] for c in drop["cases"]] == [i for i in range(n) if not first_empty[i]]
    assert len(list((out_drop / "labelsTr").iterdir())) == n - n_empty
    for c in drop["cases"]:
        assert sets.load_synthetic_pair(out_drop, c["case_id"])[1].array.any()

    _, res = _write(workspace, "res", n=n, seed=seed, empty_masks="resample", max_redraws=10)
    # expected redraws per case: attempts until the first non-empty latent
    expected = [f.index(False) for f in flags]
    assert [c["redraws"] for c in res["cases"]] == expected
    assert res["counts"]["redraws"] == sum(expected)
    assert res["counts"]["written"] == n and res["counts"]["empty_masks_kept"] == 0
    assert res["seeds"] == [gen.case_seed(seed, i, expected[i]) for i in range(n)]
    assert all(c["mask_voxels"] > 0 for c in res["cases"])

    _, capped = _write(workspace, "cap", n=n, seed=seed, empty_masks="resample", max_redraws=0)
    assert capped["counts"]["resample_exhausted"] == n_empty
    assert capped["counts"]["empty_masks_kept"] == n_empty


def test_connected_component_filtering_against_independent_count():
    from scipy import ndimage

    mask = np.zeros((12, 12, 8), np.uint8)
    mask[2:6, 2:6, 2:6] = 1  # 64 voxels
    mask[9:11, 9:11, 1:3] = 1  # 8 voxels
    mask[0, 11, 7] = 1  # 1 voxel
    assert gen.postprocess_mask(mask, "binary")[0] is mask
    largest, removed = gen.postprocess_mask(mask, "largest")
    assert removed == 2 and largest.sum() == 64 and largest[2:6, 2:6, 2:6].all()
    kept, removed = gen.postprocess_mask(mask, "min-size:8")
    assert removed == 1 and kept.sum() == 72
    assert ndimage.label(kept)[1] == 2
    assert gen.postprocess_mask(np.zeros_like(mask), "largest")[0].sum() == 0
    multi = mask * 2
    assert set(np.unique(gen.postprocess_mask(multi, "largest")[0])) == {0, 2}


def test_generated_sets_apply_the_component_filter(workspace):
    seed, n = 5, 8
    has_island = [bool(_latent(gen.case_seed(seed, i))[1] > 0) for i in range(n)]
    has_ball = [bool(_latent(gen.case_seed(seed, i))[0] > 0) for i in range(n)]
    _, card = _write(workspace, "cc", n=n, seed=seed, mask_postprocess="min-size:9")
    assert 0 < sum(has_island) < n
    assert card["counts"]["components_removed"] == sum(has_island)  # the 8-voxel islands
    assert [c["mask_voxels"] > 0 for c in card["cases"]] == has_ball


@pytest.mark.parametrize(
    "bad",
    [{"n": 0}, {"batch_size": 0}, {"empty_masks": "ignore"}, {"mask_postprocess": "min-size:x"}],
)
def test_invalid_options_raise_config_errors(bad):
    with pytest.raises(ConfigError):
        _opts(**bad)


def test_case_seeds_are_distinct_and_stable():
    seeds = {gen.case_seed(0, i, a) for i in range(200) for a in range(3)}
    assert len(seeds) == 600
    assert gen.case_seed(0, 1) == gen.case_seed(0, 1) and gen.case_seed(0, 1) < 2**63


def test_training_case_hash_is_checked(tmp_path):
    ids = ["CHUS-002", "CHUM-001"]
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    (tmp_path / "train_cases.json").write_text(
        json.dumps({"split": "train", "case_ids": ids, "sha256": digest})
    )
    got = gen.load_training_cases(tmp_path)
    assert got["sha256"] == digest and got["case_ids"] == sorted(ids)
    (tmp_path / "train_cases.json").write_text(
        json.dumps({"split": "train", "case_ids": ids, "sha256": "0" * 64})
    )
    with pytest.raises(WorkspaceError, match="does not match"):
        gen.load_training_cases(tmp_path)


# -- with the real pieces: a tiny HA-GAN saved in synthct's checkpoint format ---------------------
RUN_SPACING = [1.6, 1.6, 3.2]


@pytest.fixture
def hagan_run(workspace):
    """WS/runs/tiny: a random-weight HA-GAN at S = 32 (2 centres) with an EMA that differs."""
    import copy

    from synthct.checkpoint import checkpoint_state, save_checkpoint
    from synthct.config import RunConfig, TrainConfig, save_yaml, to_dict
    from synthct.models import build_model, model_config

    torch.manual_seed(0)
    cfg = RunConfig(
        data=DataConfig(size=S),
        model=model_config(kind="hagan", latent_dim=16, width=1 / 16, n_centres=2),
        train=TrainConfig(steps=5),
    )
    system = build_model(cfg.model, DataConfig(size=S))
    ema = {"G": copy.deepcopy(system.G)}
    with torch.no_grad():
        for p in ema["G"].parameters():
            p.add_(0.05 * torch.randn_like(p))
    run_dir = workspace.run_dir("tiny")
    info = {"spacing": RUN_SPACING, "centres": ["CHUM", "CHUS"]}
    path = save_checkpoint(checkpoint_state(cfg, 5, system, {}, ema, [], 1.0, {}, info), run_dir)
    save_yaml(to_dict(cfg), run_dir / "config.yaml")
    ids = ["CHUS-003", "CHUM-001", "CHUM-002"]
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    (run_dir / "train_cases.json").write_text(
        json.dumps({"split": "train", "case_ids": ids, "sha256": digest})
    )
    return {"cfg": cfg, "path": path, "ids": sorted(ids), "digest": digest}


def _cli(*args):
    from typer.testing import CliRunner

    from synthct.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_generate_from_a_checkpoint(workspace, hagan_run):
    from synthct.config import to_dict

    res = _cli(
        "generate", "--run", "tiny", "--n", 3, "--out", "s1", "--batch", 2, "--device", "cpu"
    )
    assert res.exit_code == 0, res.output
    out = workspace.synthetic_dir("s1")
    card = sets.load_datacard(out)
    raw = hagan_run["path"].read_bytes()
    assert card["checkpoint"]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert card["checkpoint"]["step"] == 5 and card["checkpoint"]["ema"] is True
    assert card["run"] == "tiny" and card["model"]["kind"] == "hagan" and card["model"]["size"] == S
    assert card["run_config"] == json.loads(json.dumps(to_dict(hagan_run["cfg"])))
    assert card["training_cases"] == {
        "split": "train",
        "sha256": hagan_run["digest"],
        "case_ids": hagan_run["ids"],
    }
    assert card["spacing"] == RUN_SPACING and len(card["seeds"]) == 3
    assert {c["centre"] for c in card["cases"]} <= {0, 1}
    for c in card["cases"]:
        image, mask = sets.load_synthetic_pair(out, c["case_id"])
        assert image.shape == mask.shape == (S, S, S // 2)
        assert image.spacing == pytest.approx(RUN_SPACING)
        assert image.array.min() >= -1024 and image.array.max() <= 600
        assert set(np.unique(mask.array)) <= {0, 1}

    # a case regenerated alone from its seed matches (up to float rounding of batched convs)
    from synthct.checkpoint import load_generator

    system, cfg, _ = load_generator(workspace.run_dir("tiny"), "latest", ema=True)
    c = card["cases"][1]
    image, mask = gen.generate_case(system, c["seed"], centre=c["centre"])
    img_v, mask_v = sets.load_synthetic_pair(out, c["case_id"])
    assert np.abs(image.astype(np.float32) - img_v.array).max() <= 1
    assert np.mean(mask != mask_v.array) < 1e-3

    # the existing name is refused; --no-ema samples the raw generator (different weights)
    res = _cli("generate", "--run", "tiny", "--n", 3, "--out", "s1", "--device", "cpu")
    assert isinstance(res.exception, WorkspaceError) and "already exists" in str(res.exception)
    res = _cli(
        "generate", "--run", "tiny", "--n", 3, "--out", "s2", "--batch", 2, "--no-ema",
        "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sets.load_datacard(workspace.synthetic_dir("s2"))["checkpoint"]["ema"] is False
    assert _arrays(out) != _arrays(workspace.synthetic_dir("s2"))


def test_cli_generate_centre_conditioning(workspace, hagan_run):
    res = _cli(
        "generate", "--run", "tiny", "--n", 2, "--out", "c", "--centre", "CHUS", "--device", "cpu"
    )
    assert res.exit_code == 0, res.output
    card = sets.load_datacard(workspace.synthetic_dir("c"))
    assert card["centre"] == "CHUS" and [c["centre"] for c in card["cases"]] == [1, 1]
    res = _cli(
        "generate", "--run", "tiny", "--n", 2, "--out", "d", "--centre", "MDA", "--device", "cpu"
    )
    assert isinstance(res.exception, ConfigError) and "MDA" in str(res.exception)
    assert not workspace.synthetic_dir("d").exists()


def test_generate_as_background_job_records_progress_and_result(workspace, hagan_run, monkeypatch):
    if not (Path(gen.__file__).parent / "preprocess.py").is_file():
        pytest.skip("synthct.preprocess not present: the job's own process has no stand-in")
    from synthct import jobs

    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    args = ["generate", "--run", "tiny", "--n", "2", "--out", "bg", "--device", "cpu"]
    job_id = jobs.submit(workspace, "generate", args, device="cpu")
    deadline = time.monotonic() + 60
    while jobs.get_job(workspace, job_id).status in ("queued", "running"):
        assert time.monotonic() < deadline, jobs.tail_log(jobs.get_job(workspace, job_id))
        time.sleep(0.1)
    job = jobs.get_job(workspace, job_id)
    assert job.status == "done", jobs.tail_log(job)
    assert job.progress == 1.0 and job.result == str(workspace.synthetic_dir("bg"))
    assert sets.load_datacard(job.result)["counts"]["written"] == 2
    jobs._children[job_id].wait(timeout=30)  # the wrapper exits just after recording "done"
    jobs.pump(workspace)  # reaps the finished child process
    assert job_id not in jobs._children


def test_out_of_memory_halves_the_batch_then_fails_clearly(workspace):
    system = OutOfMemoryAbove(limit=2)
    with pytest.warns(UserWarning, match="out of memory") as caught:
        out, card = _write(workspace, "oom", system=system, n=9, batch_size=8)
    assert [str(w.message)[-12:] for w in caught] == ["batch size 4", "batch size 2"]
    assert system.sizes[:3] == [8, 4, 2] and max(system.sizes[3:]) <= 2
    assert card["batch_size_used"] == 2 and card["counts"]["written"] == 9
    ref, _ = _write(workspace, "ref", n=9, batch_size=2)
    assert _arrays(out) == _arrays(ref)
    with pytest.raises(gen.GenerationError, match="out of GPU memory"), pytest.warns(UserWarning):
        _write(workspace, "never", system=OutOfMemoryAbove(limit=0), n=2, batch_size=2)
    assert workspace.list_sets() == ["oom", "ref"]
    assert not [p for p in workspace.synthetic.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_memory_does_not_grow_with_the_number_of_cases(tmp_path):
    """Python's peak traced memory while writing 800 pairs stays within noise of 50 pairs
    (the whole work queue and every case record used to be held: +1.4 MB at 800 pairs).
    Redraws are on, so the bounded redraw queue and reorder buffer are exercised too. The
    process-level figure (RSS at 10^3 vs 10^6 pairs) is `synthct bench generate-memory`."""
    import tracemalloc

    def peak(n: int, name: str) -> int:
        opts = _opts(n=n, batch_size=8, write_workers=1, empty_masks="resample")
        tracemalloc.start()
        try:
            card = gen.write_set(tmp_path / name, Analytic(size=8), SPACING, opts).to_json()
            traced = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert card["counts"]["written"] == n and card["counts"]["redraws"] > 0
        return traced

    peak(50, "warm-up")  # first-use caches (imports, nibabel, scipy) are not the work
    small, large = peak(50, "small"), peak(800, "large")
    assert large - small < 400_000, (small, large)
    assert len(sets.load_datacard(tmp_path / "large")["cases"]) == 800
