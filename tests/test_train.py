"""The training loop: data order, split guard, NaN guard, logs, kill-and-resume, learning.

Helpers at the top (a tiny but real 3D GAN implementing `GenerativeModel`, phantom packed pairs, a
stand-in for `load_packed`) are shared with test_checkpoint/test_ddp/test_hpo.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthct.config import DataConfig, ModelConfig, RunConfig, TrainConfig, save_yaml, to_dict
from synthct.models.base import GenerativeModel, StepContext
from synthct.views import VolumeView

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


# -- helpers shared with the other training tests ---------------------------------------------
class TinyGAN(GenerativeModel):
    """A small conv 3D GAN (BCE) on (B, 1, S, S, S) pairs; `nan_at` makes D's loss NaN at a step."""

    kind = "tiny"

    def __init__(self, size: int = 16, latent_dim: int = 8, lr: float = 2e-3, nan_at=None):
        super().__init__()
        self.size, self.latent_dim, self.lr, self.nan_at = size, latent_dim, lr, nan_at
        self.view = VolumeView(DataConfig(size=size))
        q = size // 4
        self.G = nn.Sequential(
            nn.Linear(latent_dim, 8 * q**3),
            nn.Unflatten(1, (8, q, q, q)),
            nn.Upsample(scale_factor=2),
            nn.Conv3d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv3d(8, 1, 3, padding=1),
            nn.Tanh(),
        )
        self.D = nn.Sequential(
            nn.Conv3d(1, 8, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(8, 16, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(16 * q**3, 1),
        )

    def configure_optimizers(self, fused: bool = False):
        return {
            "G": torch.optim.Adam(self.G.parameters(), self.lr, betas=(0.5, 0.99)),
            "D": torch.optim.Adam(self.D.parameters(), self.lr, betas=(0.5, 0.99)),
        }

    def train_step(self, real: torch.Tensor, ctx: StepContext, centre=None) -> dict[str, float]:
        b = real.shape[0]
        z = torch.randn(b, self.latent_dim, generator=ctx.generator)
        real = real + 0.01 * torch.randn_like(real)  # instance noise from the global RNG
        with ctx.autocast():
            fake = self.G(z)
            d_real, d_fake = self.D(real), self.D(fake.detach())
            d_loss = F.binary_cross_entropy_with_logits(
                d_real, torch.ones_like(d_real)
            ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        if self.nan_at is not None and ctx.step + 1 >= self.nan_at:
            d_loss = d_loss * float("nan")
        ctx.update("D", d_loss)
        with ctx.autocast():
            g_out = self.D(fake)
            g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
        ctx.update("G", g_loss)
        return {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())}

    @torch.no_grad()
    def generate(self, z: torch.Tensor, centre=None) -> torch.Tensor:
        return self.G(z)


def phantom_arrays(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, S, S, S) packed pairs: a bright ellipsoid "body" (random radii/centre) in the image
    half (z < S/2) and a small blob inside it in the mask half ({-1, 1})."""
    rng = np.random.default_rng(seed)
    h = size // 2
    x, y, z = np.meshgrid(
        np.arange(size), np.arange(size), np.arange(h), indexing="ij", sparse=True
    )
    out = np.empty((n, size, size, size), np.float32)
    for i in range(n):
        c = size / 2 + rng.uniform(-2, 2, 3) * size / 32
        r = rng.uniform(0.25, 0.4, 3) * size
        body = (
            ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2] / 2) / (r[2] / 2)) ** 2
        )
        img = np.where(body <= 1, 0.2 + 0.05 * rng.standard_normal(body.shape), -1.0)
        bc = c + rng.uniform(-0.3, 0.3, 3) * r
        blob = ((x - bc[0]) ** 2 + (y - bc[1]) ** 2 + ((z - bc[2] / 2) * 2) ** 2) <= (
            size / 10
        ) ** 2
        out[i, ..., :h] = img
        out[i, ..., h:] = np.where(blob, 1.0, -1.0)
    return out


def packed_set(n: int, size: int, seed: int = 0, prefix: str = "CHUS"):
    ids = [f"{prefix}-{i:03d}" for i in range(n)]
    return SimpleNamespace(
        arrays=phantom_arrays(n, size, seed),
        case_ids=ids,
        centres=[prefix] * n,
        spacing=(1.5, 1.5, 1.5),
        manifest={},
    )


def install_packed(monkeypatch, size: int, n: int = 6, calls: list | None = None):
    """Make `synthct.preprocess.load_packed` return phantom sets (train/val/test differ)."""
    import synthct.preprocess

    sets = {
        "train": packed_set(n, size, 0, "TRN"),
        "val": packed_set(2, size, 1, "VAL"),
        "test": packed_set(2, size, 2, "TST"),
    }

    def fake(ws, cfg, split="train"):
        if calls is not None:
            calls.append(split)
        return sets[split]

    monkeypatch.setattr(synthct.preprocess, "load_packed", fake, raising=False)
    return sets


def tiny_cfg(size: int = 16, **train) -> RunConfig:
    base = dict(
        steps=6,
        batch_size=2,
        seed=3,
        log_every=1,
        snapshot_every=3,
        checkpoint_every=3,
        collapse_every=3,
        keep_checkpoints=10,
        ema_decay=0.9,
    )
    base.update(train)
    return RunConfig(
        data=DataConfig(size=size), model=ModelConfig(latent_dim=8), train=TrainConfig(**base)
    )


def tiny_factory(nan_at=None):
    def make(run_cfg: RunConfig) -> TinyGAN:
        torch.manual_seed(run_cfg.train.seed)
        return TinyGAN(run_cfg.data.size, run_cfg.model.latent_dim, nan_at=nan_at)

    return make


def read_losses(run_dir: Path) -> list[dict]:
    with open(run_dir / "losses.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


# -- pure helpers -----------------------------------------------------------------------------
def test_batch_order_is_shuffled_per_epoch_and_deterministic():
    from synthct.views.volumes import batch_indices

    n, b = 10, 5
    epoch = lambda seed, e: sum((batch_indices(seed, t, b, n) for t in (2 * e, 2 * e + 1)), [])  # noqa: E731
    e0, e1 = epoch(0, 0), epoch(0, 1)
    assert sorted(e0) == list(range(n)) and sorted(e1) == list(range(n))  # each case once
    assert e0 != e1 and e0 != list(range(n))  # shuffled, and differently per epoch
    assert epoch(0, 1) == e1  # pure function of (seed, step)
    assert epoch(1, 0) != e0
    # a batch that straddles an epoch boundary continues with the next epoch's permutation
    assert batch_indices(0, 1, 6, n)[:4] == e0[6:] and batch_indices(0, 1, 6, n)[4:] == e1[:2]


def test_ddp_shards_cover_each_epoch_once():
    from synthct.views.volumes import batch_indices

    n, b, world = 8, 2, 2
    seen = [i for t in range(2) for r in range(world) for i in batch_indices(5, t, b, n, r, world)]
    assert sorted(seen) == list(range(n))
    assert batch_indices(5, 0, b, n, 0, world) != batch_indices(5, 0, b, n, 1, world)


def test_ema_update_and_warmup():
    from synthct.train import ema_decay_at, ema_update

    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = 0.25 * a.weight.detach() + 0.75 * b.weight.detach()
    ema_update(a, b, 0.25)
    torch.testing.assert_close(a.weight.detach(), expected)
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(10**6, 0.999) == 0.999


def test_mean_pairwise_distance_known_values():
    from synthct.views import mean_pairwise_distance

    v = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    # RMS distances: |a-b| / sqrt(4) = 1, 1 and sqrt(8)/2
    assert mean_pairwise_distance(v) == pytest.approx((1 + 1 + 8**0.5 / 2) / 3)
    assert mean_pairwise_distance(torch.ones(4, 5)) == 0.0
    assert mean_pairwise_distance(torch.ones(4, 5) + torch.arange(5.0)) == 0.0  # offset-blind


# -- the loop ---------------------------------------------------------------------------------
def test_train_writes_run_and_reads_only_train_split(workspace, monkeypatch):
    from synthct.checkpoint import list_checkpoints
    from synthct.train import train

    calls: list[str] = []
    sets = install_packed(monkeypatch, 16, calls=calls)
    seen: list[float] = []
    run_dir = train(tiny_cfg(), workspace, "r1", progress=lambda f, m: seen.append(f),
                    model_factory=tiny_factory())  # fmt: skip
    assert calls == ["train"]
    assert seen == pytest.approx([k / 6 for k in range(1, 7)])
    cases = json.loads((run_dir / "train_cases.json").read_text())
    assert cases["split"] == "train" and cases["case_ids"] == sorted(sets["train"].case_ids)
    import hashlib

    assert cases["sha256"] == hashlib.sha256("\n".join(cases["case_ids"]).encode()).hexdigest()
    rows = read_losses(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert all(np.isfinite(float(r["d_loss"])) for r in rows)
    assert [s for s, _ in list_checkpoints(run_dir)] == [3, 6]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "step-00000000.png",
        "step-00000003.png",
        "step-00000006.png",
    ]
    from PIL import Image

    png = np.asarray(Image.open(run_dir / "samples" / "step-00000006.png"))
    assert png.shape == (2 * 16, 4 * 16)  # image row over mask row, 4 samples side by side
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == 6
    with open(run_dir / "collapse.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [3, 6]
    from synthct.config import load_run_config

    assert load_run_config(run_dir / "config.yaml") == tiny_cfg()
    with pytest.raises(Exception, match="already exists"):  # never overwrite a run
        train(tiny_cfg(), workspace, "r1", model_factory=tiny_factory())


def test_other_split_refused_unless_allowed_and_recorded(workspace, monkeypatch):
    from synthct.errors import LeakageError
    from synthct.train import train

    install_packed(monkeypatch, 16)
    cfg = tiny_cfg(split="test", steps=1)
    with pytest.raises(LeakageError, match="allow-split"):
        train(cfg, workspace, "bad", model_factory=tiny_factory())
    run_dir = train(cfg, workspace, "ok", allow_split=True, model_factory=tiny_factory())
    cases = json.loads((run_dir / "train_cases.json").read_text())
    assert cases["allow_split"] is True and cases["split"] == "test"
    assert all(c.startswith("TST") for c in cases["case_ids"])


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(workspace, monkeypatch):
    from synthct.checkpoint import list_checkpoints, load_checkpoint
    from synthct.train import TrainingDivergedError, train

    install_packed(monkeypatch, 16)
    with pytest.raises(TrainingDivergedError, match=r"step 5: loss 'D' = nan is not finite"):
        train(tiny_cfg(checkpoint_every=2), workspace, "nan", model_factory=tiny_factory(5))
    run_dir = workspace.run_dir("nan")
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 4]
    state = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "not finite" in status["message"]


def test_resume_in_process_matches_uninterrupted(workspace, monkeypatch):
    """Stop after 3 steps (steps=3), resume to 6: identical losses to a straight 6-step run."""
    from synthct.train import train

    install_packed(monkeypatch, 16)
    full = train(tiny_cfg(), workspace, "full", model_factory=tiny_factory())
    train(tiny_cfg(steps=3), workspace, "part", model_factory=tiny_factory())
    with pytest.raises(Exception, match="config differs"):  # only RESUMABLE_KEYS may change
        train(tiny_cfg(seed=4), workspace, "part", resume=True, model_factory=tiny_factory())
    part = train(tiny_cfg(), workspace, "part", resume=True, model_factory=tiny_factory())
    assert read_losses(part) == read_losses(full)


@pytest.fixture(scope="module")
def packed_ws(tmp_path_factory):
    """A real workspace: 6 phantom cases ingested and preprocessed at S=32 (~10 s)."""
    from synthct.datasets import ingest
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import preprocess_workspace
    from synthct.workspace import Workspace

    root = tmp_path_factory.mktemp("packed")
    src = write_phantom_set(root / "cases", n=6, seed=4, scale=0.125)[0].parent.parent
    ws = Workspace.resolve(root / "ws").ensure()
    ingest(src, ws, test_fraction=0.3, seed=0, workers=1)
    preprocess_workspace(ws, DataConfig(size=32), workers=1, progress=False)
    return ws


TINY_STEPS = 40


def _tiny_config(path: Path, **train) -> Path:
    """configs/hagan-tiny.yaml for TINY_STEPS logged steps (train overrides on top), at `path`."""
    from synthct.config import load_run_config

    cfg = to_dict(load_run_config(REPO / "configs" / "hagan-tiny.yaml"))
    cfg["train"].update(steps=TINY_STEPS, checkpoint_every=5, log_every=1, snapshot_every=20,
                        collapse_every=20)  # fmt: skip
    cfg["train"].update(train)
    save_yaml(cfg, path)
    return path


def _train_cmd(ws, config: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "synthct", "train", "--workspace", str(ws.root)]
    return cmd + (["--config", str(config)] if config else [])


TRAIN_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def straight_losses(packed_ws, tmp_path_factory):
    """losses.csv of an uninterrupted `python -m synthct train` of the tiny HA-GAN."""
    config = _tiny_config(tmp_path_factory.mktemp("cfg") / "tiny.yaml")
    res = subprocess.run([*_train_cmd(packed_ws, config), "--run", "straight"], env=TRAIN_ENV,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return read_losses(packed_ws.run_dir("straight"))


def test_kill_and_resume_reproduces_losses(packed_ws, straight_losses, tmp_path):
    """SIGKILL `python -m synthct train` (tiny HA-GAN) after a mid-run checkpoint, then resume:
    the whole losses.csv equals an uninterrupted run with the same seed."""
    cmd = _train_cmd(packed_ws, _tiny_config(tmp_path / "tiny.yaml"))

    def run(name: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, "--run", name, *extra], env=TRAIN_ENV, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    proc = subprocess.Popen([*cmd, "--run", "killed"], env=TRAIN_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ckdir = packed_ws.run_dir("killed") / "checkpoints"
    deadline = time.monotonic() + 240
    while not (ckdir / "step-00000010.pt").exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = json.loads((ckdir.parent / "status.json").read_text())
    assert status["state"] == "running" and status["step"] < 40, "process was not killed mid-run"
    resumed = run("killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = straight_losses, read_losses(packed_ws.run_dir("killed"))
    assert len(a) == 40 and a == b
    assert set(a[0]) >= {"d_loss", "g_loss", "e_loss", "sub_e_loss"}


def _rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def test_cancelled_training_job_resumes_from_its_cancel_checkpoint(
    packed_ws, straight_losses, tmp_path, monkeypatch
):
    """Cancel a background training job mid-run (no periodic checkpoint before its end): it
    stops at a step boundary, writes a checkpoint there and records `cancelled` — job row and
    run — not `failed`; resumed, its losses.csv equals the uninterrupted run's."""
    from synthct import jobs
    from synthct.checkpoint import list_checkpoints

    monkeypatch.setenv("SYNTHCT_WORKSPACE", str(packed_ws.root))
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    monkeypatch.delenv("SYNTHCT_JOB_ID", raising=False)
    config = _tiny_config(tmp_path / "tiny.yaml", checkpoint_every=1000)
    job_id = jobs.submit(packed_ws, "train", ["train", "--config", str(config), "--run", "cnc"],
                         device="cpu")  # fmt: skip
    run_dir = packed_ws.run_dir("cnc")
    deadline = time.monotonic() + 240
    while _rows(run_dir / "losses.csv") < 5:
        job = jobs.get_job(packed_ws, job_id)
        assert job.status == "running", jobs.tail_log(job)
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    job = jobs.cancel(packed_ws, job_id, grace_s=120)
    assert job.status == "cancelled", (job.message, jobs.tail_log(job))
    status = json.loads((run_dir / "status.json").read_text())
    step = status["step"]
    assert status["state"] == "cancelled" and 5 <= step < TINY_STEPS, status
    assert [s for s, _ in list_checkpoints(run_dir)] == [step]  # the cancel checkpoint only
    assert f"step-{step:08d}.pt" in job.message and "--resume" in job.message
    assert _rows(run_dir / "losses.csv") == step
    assert "Traceback" not in jobs.tail_log(job, 200)

    resumed = subprocess.run([*_train_cmd(packed_ws), "--run", "cnc", "--resume"], env=TRAIN_ENV,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_losses(run_dir) == straight_losses
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"


def test_first_interrupt_stops_at_a_step_boundary_second_stops_at_once(
    workspace, monkeypatch, request
):
    """In process: a SIGINT during step 3 lets the step finish, writes checkpoint 3 and raises
    Cancelled (resume matches an uninterrupted run); two SIGINTs stop at once
    (KeyboardInterrupt), recorded as cancelled, keeping the last periodic checkpoint."""
    from synthct.checkpoint import list_checkpoints
    from synthct.errors import Cancelled
    from synthct.train import train

    install_packed(monkeypatch, 16)
    full = train(tiny_cfg(checkpoint_every=100), workspace, "full", model_factory=tiny_factory())
    # A shell starts background jobs with SIGINT ignored; this test needs Python's own handler.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, outer))

    def interrupt_at(step_wanted: int, times: int):
        def progress(fraction, message):
            if message == f"step {step_wanted}/6":
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)

        return progress

    cfg = tiny_cfg(checkpoint_every=100)
    with pytest.raises(Cancelled, match=r"stopped at step 3/6 .*step-00000003\.pt"):
        try:
            train(cfg, workspace, "cnc", progress=interrupt_at(3, 1), model_factory=tiny_factory())
        except KeyboardInterrupt:
            pytest.fail("the first interrupt stopped training at once, without a checkpoint")
    run_dir = workspace.run_dir("cnc")
    assert [s for s, _ in list_checkpoints(run_dir)] == [3]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "cancelled"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    train(cfg, workspace, "cnc", resume=True, model_factory=tiny_factory())
    assert read_losses(run_dir) == read_losses(full)

    cfg = tiny_cfg(checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, workspace, "twice", progress=interrupt_at(3, 2), model_factory=tiny_factory())
    run_dir = workspace.run_dir("twice")
    assert [s for s, _ in list_checkpoints(run_dir)] == [2]  # no cancel checkpoint: stopped now
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "cancelled" and "at once" in status["message"]


def test_augmented_batches_are_seeded_and_keep_the_mask_binary(monkeypatch):
    from synthct.views.volumes import batch_indices

    view = VolumeView(DataConfig(size=32))
    data = view.training_data(packed_set(4, 32), "train")
    cfg = tiny_cfg(32, augment="affine", batch_size=2)
    batch = lambda seed: view.batch(  # noqa: E731
        data, cfg, 0, 0, 1, torch.Generator().manual_seed(seed), torch.device("cpu")
    )[0]
    a, b, c = batch(0), batch(0), batch(1)
    assert a.shape == (2, 1, 32, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = data.items[[int(i) for i in batch_indices(3, 0, 2, 4)]]
    assert not torch.equal(a[:, 0], plain)
    assert set(torch.unique(a[..., 16:]).tolist()) <= {-1.0, 1.0}


class _FixedSystem(GenerativeModel):
    """generate() returns rows of a fixed bank chosen by z (a stand-in G for the alarm)."""

    def __init__(self, bank: torch.Tensor, collapsed: bool):
        super().__init__()
        self.view = VolumeView(DataConfig(size=bank.shape[-1]))
        self.G = nn.Identity()
        self.bank, self.collapsed, self.latent_dim = bank, collapsed, 1

    def generate(self, z, centre=None):
        idx = torch.zeros(len(z), dtype=torch.long) if self.collapsed else torch.arange(len(z))
        return self.bank[idx % len(self.bank)]


def test_collapse_alarm_flags_identical_samples_not_real_like_ones():
    from synthct.collapse import N_COLLAPSE, check_collapse, probe_samples

    cfg, cpu = tiny_cfg(), torch.device("cpu")
    view = VolumeView(cfg.data)
    probe = view.probe(view.training_data(packed_set(8, 16, seed=0), "train"), cfg)
    other = torch.from_numpy(phantom_arrays(8, 16, seed=9)).unsqueeze(1)
    for collapsed, expect in ((True, [False, True, True]), (False, [False, False, False])):
        system, alarm = _FixedSystem(other, collapsed), {"strikes": 0, "flagged": False}
        results = [
            check_collapse(probe, probe_samples(system, {}, N_COLLAPSE, cfg.train.seed, cpu), alarm)
            for _ in range(3)
        ]
        assert [r[2] for r in results] == expect  # flagged from the second consecutive strike
        if collapsed:
            assert results[0][0] == pytest.approx(0.0)
        else:
            assert 0.5 < results[0][0] / probe.real_diversity < 2.0  # real-like diversity


@pytest.mark.slow
def test_tiny_hagan_learns_the_phantom_distribution(workspace, monkeypatch):
    """300 steps of the tiny HA-GAN (S=32) on ellipsoid phantoms: the Wasserstein-1 distance
    between the HU histograms of 8 EMA samples and the real image halves drops by > 50 %."""
    import dataclasses

    from synthct.checkpoint import load_generator
    from synthct.config import load_run_config
    from synthct.hpo import wasserstein_hu
    from synthct.models import build_model
    from synthct.train import train
    from synthct.views.volumes import image_half

    sets = install_packed(monkeypatch, 32, n=8)
    cfg = load_run_config(REPO / "configs" / "hagan-tiny.yaml")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, steps=300, snapshot_every=0, collapse_every=0, checkpoint_every=300))  # fmt: skip
    real = image_half(torch.from_numpy(sets["train"].arrays), "z").numpy()

    def w1(system) -> float:
        g = torch.Generator().manual_seed(0)
        fake = system.eval().generate(system.sample_latent(8, generator=g))
        return wasserstein_hu(image_half(fake[:, 0], "z").numpy(), real, cfg.data.hu_window)

    torch.manual_seed(cfg.train.seed)  # the loop seeds the same way before building
    before = w1(build_model(cfg.model, DataConfig(size=32)))
    run_dir = train(cfg, workspace, "learn")
    after = w1(load_generator(run_dir, ema=True)[0])
    assert after < 0.5 * before, f"HU W1 {before:.1f} -> {after:.1f}"


def test_shipped_run_configs_load_and_small_ones_build():
    from synthct.config import load_run_config
    from synthct.models import build_model

    paths = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("hpo"))
    assert {p.stem for p in paths} >= {"hagan-128", "hagan-256", "vanilla", "wgan", "hagan-tiny",
                                       "hagan-demo-64"}  # fmt: skip
    for p in paths:
        cfg = load_run_config(p)
        assert cfg.train.split == "train"
        if cfg.data.size <= 64:
            build_model(cfg.model, DataConfig(size=cfg.data.size))
    best = load_run_config(REPO / "configs" / "hagan-128.yaml")
    assert (best.model.lr_g, best.model.lr_d, best.model.section.lr_e) == (
        2e-4,
        4e-4,
        2e-4,
    )  # HPO17
    assert (best.model.latent_dim, best.train.batch_size, best.train.steps) == (1024, 4, 80_000)
    assert best.model.betas == (0.0, 0.999)  # what the thesis runs used (its text says 0.99)
