"""Blinding through bytes: over a whole study, every image a rater can receive has one byte
length and its own bytes (so its own Streamlit URL), duplicates included; the sealed hashes stay
checkable from what a rater received."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from db.session import init_db, make_engine, session_scope
from synthct.vtt import blinding
from synthct.vtt.render import RenderConfig

PARAMS = RenderConfig(tiles=4, tile_px=64)


def _pair(seed: int, noisy: bool, shape=(32, 32, 16)):
    """Real cases noisy (PNG compresses badly), synthetic ones smooth (compresses well): the
    case PNG sizes alone separate them, as in the demo study."""
    rng = np.random.default_rng(seed)
    x, y, _ = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = ((x - 16) ** 2 + (y - 16) ** 2) < 13**2
    image = np.where(body, 40.0, -1000.0)
    image = image + rng.normal(0, 80 if noisy else 0.0, shape) * body
    mask = (((x - 16) ** 2 + (y - 14) ** 2) < 9).astype(np.uint8)
    return image.astype(np.float32), mask


@pytest.fixture
def study(workspace):
    from synthct.vtt.design import create_study
    from synthct.vtt.flow import invite

    engine = make_engine(f"sqlite:///{workspace.database}")
    init_db(engine)
    real = {f"CHUM-{i:03d}": _pair(i, noisy=True) for i in range(4)}
    syn = {f"SYN-{i:04d}": _pair(100 + i, noisy=False) for i in range(4)}
    with session_scope(engine) as s:
        create_study(
            s, workspace, "blind", real, syn, synthetic_source="set-a", params=PARAMS,
            duplicates=4, seed=3,
        )  # fmt: skip
    tokens = {}
    with session_scope(engine) as s:
        for name in ("Dr A", "Dr B"):
            tokens[name] = invite(s, "blind", name).token
    yield engine, tokens
    engine.dispose()


def _received(engine, ws, tokens):
    """Every (rater, case slot) -> the bytes that rater's browser receives for it."""
    from db.raters import raters_of_study
    from db.ratings import assignment_for
    from db.studies import get_study, study_cases
    from synthct.vtt.flow import case_image, rater_for_token

    out = {}
    with session_scope(engine) as s:
        study = get_study(s, "blind")
        cases = study_cases(s, study.id)
        assert len(raters_of_study(s, study.id)) == len(tokens)
        for name, token in tokens.items():
            rater = rater_for_token(s, token)
            for c in cases:
                assert assignment_for(s, rater.id, c.public_id) is not None
                out[(name, c.public_id)] = case_image(s, ws, rater, c.public_id)
        truth = {c.public_id: (c.truth, c.png_sha256, c.duplicate_of) for c in cases}
    return out, truth


def test_every_image_has_one_length_and_its_own_url(study, workspace):
    from streamlit.runtime.memory_media_file_storage import _calculate_file_id

    engine, tokens = study
    received, truth = _received(engine, workspace, tokens)
    assert len(received) == 2 * 12  # 2 raters x (8 cases + 4 duplicates)
    assert sum(1 for t in truth.values() if t[2]) == 4

    # one byte length for every image of the study
    assert len({len(b) for b in received.values()}) == 1
    # each (rater, slot) its own bytes, hence its own Streamlit media URL (a hash of the bytes)
    assert len(set(received.values())) == len(received)
    urls = {_calculate_file_id(b, "image/png") for b in received.values()}
    assert len(urls) == len(received)

    # a size-only classifier is at chance (AUC 0.5), although the sealed PNGs' sizes alone
    # would separate real from synthetic perfectly
    y = [truth[pid][0] == "synthetic" for (_, pid) in received]
    sizes = [len(b) for b in received.values()]
    sealed_sizes = [len(blinding.strip_padding(b)) for b in received.values()]
    assert roc_auc_score(y, sealed_sizes) in (0.0, 1.0)
    assert roc_auc_score(y, sizes) == 0.5

    for (_, pid), data in received.items():
        # the sealed manifest's hash holds for what the rater received, once unpadded
        assert hashlib.sha256(blinding.strip_padding(data)).hexdigest() == truth[pid][1]
        # and the picture is the sealed one, pixel for pixel
        got = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        sealed = np.asarray(Image.open(io.BytesIO(blinding.strip_padding(data))).convert("RGB"))
        assert np.array_equal(got, sealed)


def test_a_reload_receives_the_same_bytes(study, workspace):
    """The nonce is stable per (rater, slot): a rerun or reload does not change the URL."""
    engine, tokens = study
    first, _ = _received(engine, workspace, tokens)
    again, _ = _received(engine, workspace, tokens)
    assert first == again


def test_padding_chunk_is_content_free(study, workspace):
    engine, tokens = study
    received, _ = _received(engine, workspace, tokens)
    data = next(iter(received.values()))
    chunks = blinding._chunks(data)
    assert [c[1] for c in chunks][:2] == [b"IHDR", blinding.PAD_TYPE]
    start, _, end = chunks[1]
    payload = data[start + 8 : end - 4]
    assert payload[blinding.NONCE_BYTES :] == bytes(len(payload) - blinding.NONCE_BYTES)
    # no text or metadata chunks anywhere
    assert {c[1] for c in chunks} <= {b"IHDR", blinding.PAD_TYPE, b"IDAT", b"IEND"}


def test_pad_and_strip_round_trip_and_refusals():
    from synthct.io import encode_png

    png = encode_png(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    length = blinding.study_length([len(png), 100])
    assert length % blinding.BLOCK == 0 and length >= len(png) + 28
    padded = blinding.pad_png(png, length, b"\x01" * 16)
    assert len(padded) == length and blinding.strip_padding(padded) == png
    assert blinding.png_size(padded) == (4, 4)
    with pytest.raises(ValueError, match="already padded"):
        blinding.pad_png(padded, length + blinding.BLOCK, b"\x01" * 16)
    with pytest.raises(ValueError, match="cannot be padded"):
        blinding.pad_png(png, len(png) + 20, b"\x01" * 16)
    with pytest.raises(ValueError, match="signature"):
        blinding.strip_padding(b"GIF89a")
    with pytest.raises(ValueError, match="truncated"):
        blinding.strip_padding(png[:-6])


# -- the scrollable slab -------------------------------------------------------------------------
def _received_slabs(engine, ws, tokens):
    """Every (rater, case slot) -> the SlabView that rater's page sends for it."""
    from db.studies import get_study, study_cases
    from synthct.vtt.flow import case_slab, rater_for_token

    out = {}
    with session_scope(engine) as s:
        study = get_study(s, "blind")
        cases = study_cases(s, study.id)
        for name, token in tokens.items():
            rater = rater_for_token(s, token)
            for c in cases:
                out[(name, c.public_id)] = case_slab(s, ws, rater, c.public_id)
        truth = {c.public_id: (c.truth, c.duplicate_of) for c in cases}
    return out, truth


def test_every_slab_has_one_length_its_own_bytes_and_no_geometry(study, workspace):
    import json

    from synthct.vtt.design import study_dir
    from ui.rating import slab_token

    engine, tokens = study
    received, truth = _received_slabs(engine, workspace, tokens)
    assert len(received) == 2 * 12 and all(v is not None for v in received.values())
    data = {k: v.png for k, v in received.items()}

    # one byte length, each (rater, slot) its own bytes, duplicates included
    assert len({len(b) for b in data.values()}) == 1
    assert len(set(data.values())) == len(data)
    # the arguments besides the bytes: one layout for the whole study, a fixed-length token
    assert len({json.dumps(v.layout, sort_keys=True) for v in received.values()}) == 1
    assert len({len(slab_token(b)) for b in data.values()}) == 1
    assert len({slab_token(b) for b in data.values()}) == len(data)

    # a size-only classifier is at chance, although the sealed slabs' sizes alone separate them
    y = [truth[pid][0] == "synthetic" for (_, pid) in data]
    sizes = [len(b) for b in data.values()]
    assert roc_auc_score(y, [len(blinding.strip_padding(b)) for b in data.values()]) in (0.0, 1.0)
    assert roc_auc_score(y, sizes) == 0.5

    # the sealed manifest's hashes hold for what the rater received, once unpadded; identical
    # pixel dimensions, no chunk besides the pixels, and the layout matches the pixels
    manifest = json.loads((study_dir(workspace, "blind") / "manifest.json").read_text())
    sealed = {c["public_id"]: c["slab_sha256"] for c in manifest["cases"]}
    layout = manifest["slab"]
    for (_, pid), png in data.items():
        assert hashlib.sha256(blinding.strip_padding(png)).hexdigest() == sealed[pid]
        assert {c[1] for c in blinding._chunks(png)} <= {
            b"IHDR",
            blinding.PAD_TYPE,
            b"IDAT",
            b"IEND",
        }
        assert blinding.png_size(png) == (
            layout["cols"] * layout["tile_w"],
            layout["rows"] * layout["tile_h"],
        )
    # the slabs of a duplicate and its original are the same sealed picture
    for (name, pid), png in data.items():
        if truth[pid][1]:
            original = data[(name, truth[pid][1])]
            assert blinding.strip_padding(png) == blinding.strip_padding(original)
            assert png != original


def test_slab_refused_when_tampered(study, workspace):
    from db.studies import get_study, study_cases
    from synthct.vtt import TamperedStudyError
    from synthct.vtt.design import SLABS_DIR, study_dir
    from synthct.vtt.flow import case_slab, rater_for_token

    engine, tokens = study
    with session_scope(engine) as s:
        pid = study_cases(s, get_study(s, "blind").id)[0].public_id
    path = study_dir(workspace, "blind") / SLABS_DIR / f"{pid}.png"
    path.write_bytes(path.read_bytes()[:-20] + bytes(20))
    with session_scope(engine) as s, pytest.raises(TamperedStudyError, match="changed"):
        case_slab(s, workspace, rater_for_token(s, tokens["Dr A"]), pid)
