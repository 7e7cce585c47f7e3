"""Helpers for the app tests: a small sealed study built from in-memory volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")


def blob_pair(seed: int, shape=(32, 32, 16)):
    """A (image_hu, mask) pair: soft-tissue body, a bright blob with its mask."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = ((x - 16) ** 2 + (y - 16) ** 2) < 13**2
    image = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, shape)
    c = rng.integers(10, 22, size=2)
    blob = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - 8) ** 2) < 9
    image[blob] = 90.0
    return image.astype(np.float32), blob.astype(np.uint8)


def make_study(ws, engine, name="demo-study", n=3, raters=("Dr A",)):
    """Create a sealed study with n real + n synthetic cases and invite raters; return tokens."""
    from db.session import init_db, session_scope
    from synthct.vtt.design import create_study
    from synthct.vtt.flow import invite

    init_db(engine)
    real = {f"CHUM-{i:03d}": blob_pair(i) for i in range(n)}
    syn = {f"SYN-{i:04d}": blob_pair(100 + i) for i in range(n)}
    with session_scope(engine) as s:
        create_study(s, ws, name, real, syn, synthetic_source="set-a", seed=0)
    tokens = {}
    with session_scope(engine) as s:
        for r in raters:
            tokens[r] = invite(s, name, r).token
    return tokens
