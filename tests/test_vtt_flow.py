"""Study sealing and the rater flow — on a SQLite file (WAL) and on PostgreSQL."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from db.session import make_engine, session_scope
from synthct.vtt import AlreadyAnsweredError, StudyError, TamperedStudyError
from synthct.vtt.design import create_study, study_dir, verify_study
from synthct.vtt.flow import (
    case_image,
    invite,
    is_complete,
    next_case,
    progress,
    rater_for_token,
    revoke,
    submit,
)
from synthct.vtt.render import RenderConfig

pytest_plugins = ["conftest_pg"]

PARAMS = RenderConfig(tiles=4, tile_px=24, gap_px=1)


def phantom(seed: int, shape=(16, 16, 8)):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 60, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    c = rng.integers(4, 11, 3)
    mask[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, 2:6] = 1
    return image, mask


def make_study(session, ws, name="s1", n_real=3, n_syn=3, duplicates=0, seed=0):
    real = {f"CHUM-{i:03d}": phantom(i) for i in range(n_real)}
    syn = {f"SYN-{i + 1:04d}": phantom(100 + i) for i in range(n_syn)}
    return create_study(
        session, ws, name, real, syn, synthetic_source="set-a", params=PARAMS,
        duplicates=duplicates, seed=seed,
    )  # fmt: skip


def answer_all(engine, token, k=None, score=4):
    """Answer up to k cases (one session per action, like the page); returns the ids seen."""
    seen = []
    while k is None or len(seen) < k:
        with session_scope(engine) as s:
            rater = rater_for_token(s, token)
            case = next_case(s, rater)
        if case is None:
            break
        seen.append(case.public_id)
        with session_scope(engine) as s:
            submit(s, rater_for_token(s, token), case.public_id, score, "")
    return seen


def test_create_study_seals_manifest(db_engine, workspace):
    with session_scope(db_engine) as s:
        info = make_study(s, workspace, duplicates=2)
    assert info.n_cases == 8
    d = study_dir(workspace, "s1")
    manifest = json.loads((d / "manifest.json").read_text())
    cases = manifest["cases"]
    assert sorted(c["truth"] for c in cases).count("synthetic") == 4  # 3 + 1 duplicate
    dups = [c for c in cases if c["duplicate_of"]]
    assert len(dups) == 2 and {c["truth"] for c in dups} == {"real", "synthetic"}
    for c in dups:
        orig = next(o for o in cases if o["public_id"] == c["duplicate_of"])
        assert c["case_id"] == orig["case_id"] and c["png_sha256"] == orig["png_sha256"]
    assert sorted(p.stem for p in (d / "cases").glob("*.png")) == sorted(
        c["public_id"] for c in cases
    )
    with session_scope(db_engine) as s:
        from db.studies import get_study

        verify_study(s, workspace, get_study(s, "s1"))
    with session_scope(db_engine) as s, pytest.raises(StudyError, match="already exists"):
        make_study(s, workspace)


def test_tampered_manifest_and_png_refused(db_engine, workspace):
    with session_scope(db_engine) as s:
        make_study(s, workspace)
        inv = invite(s, "s1", "Dr A")
    d = study_dir(workspace, "s1")
    path = d / "manifest.json"
    manifest = json.loads(path.read_text())
    flipped = manifest["cases"][0]
    flipped["truth"] = "synthetic" if flipped["truth"] == "real" else "real"
    original = path.read_bytes()
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with session_scope(db_engine) as s:
        rater = rater_for_token(s, inv.token)
        case = next_case(s, rater)
        with pytest.raises(TamperedStudyError, match="changed after"):
            case_image(s, workspace, rater, case.public_id)
    path.write_bytes(original)
    png = d / "cases" / f"{case.public_id}.png"
    png.write_bytes(png.read_bytes() + b"\0")
    with session_scope(db_engine) as s, pytest.raises(TamperedStudyError, match="case image"):
        case_image(s, workspace, rater_for_token(s, inv.token), case.public_id)


def test_resume_continues_same_order_after_restart(db_url, workspace):
    engine = make_engine(db_url)
    from db.session import init_db

    init_db(engine)
    with session_scope(engine) as s:
        make_study(s, workspace, duplicates=1)
        token = invite(s, "s1", "Dr A").token
    first = answer_all(engine, token, k=3)
    with session_scope(engine) as s:
        rater = rater_for_token(s, token)
        shown = next_case(s, rater)  # shown, not answered, then the "browser closes"
        assert progress(s, rater) == (3, 7)
    engine.dispose()

    engine = make_engine(db_url)  # restart: new engine, new sessions
    with session_scope(engine) as s:
        rater = rater_for_token(s, token)
        again = next_case(s, rater)
    assert again == shown and again.position == 4
    with session_scope(engine) as s:
        from db.ratings import assignment_for

        rater = rater_for_token(s, token)
        first_shown = assignment_for(s, rater.id, shown.public_id)[0].shown_at
        assert next_case(s, rater) == shown  # a reload keeps the first shown_at
        assert assignment_for(s, rater.id, shown.public_id)[0].shown_at == first_shown
    rest = answer_all(engine, token)
    assert rest[0] == shown.public_id and len(first + rest) == 7 == len(set(first + rest))
    with session_scope(engine) as s:
        from db.ratings import assignment_for

        rater = rater_for_token(s, token)
        assert is_complete(s, rater) and next_case(s, rater) is None
        order = [c for c in first + rest]
        positions = [assignment_for(s, rater.id, pid)[0].position for pid in order]
    assert positions == list(range(1, 8))
    engine.dispose()


def test_orders_differ_between_raters_and_are_reproducible(db_engine, workspace):
    from db.models import Assignment, StudyCase
    from db.raters import rater_by_name
    from db.studies import get_study, study_cases
    from synthct.vtt.flow import rater_order

    with session_scope(db_engine) as s:
        make_study(s, workspace, n_real=5, n_syn=5, duplicates=2, seed=7)
        for name in ("A", "B"):
            invite(s, "s1", name)
    with session_scope(db_engine) as s:
        study = get_study(s, "s1")
        orders = {}
        for name in ("A", "B"):
            r = rater_by_name(s, study.id, name)
            rows = s.query(Assignment).filter_by(rater_id=r.id).order_by(Assignment.position)
            orders[name] = [a.study_case_id for a in rows]
            cases = study_cases(s, study.id)
            by_pub = {c.public_id: c.id for c in cases}
            dup_of = {c.id: by_pub[c.duplicate_of] for c in cases if c.duplicate_of}
            assert orders[name] == rater_order(7, r.id, [c.id for c in cases], dup_of)
            for d, o in dup_of.items():  # a duplicate never directly follows its original
                i, j = orders[name].index(d), orders[name].index(o)
                assert abs(i - j) > 1
        assert orders["A"] != orders["B"]
        assert sorted(orders["A"]) == sorted(c.id for c in s.query(StudyCase))


def test_double_submit_refused_and_score_validated(db_engine, workspace):
    with session_scope(db_engine) as s:
        make_study(s, workspace)
        token = invite(s, "s1", "Dr A").token
    with session_scope(db_engine) as s:
        rater = rater_for_token(s, token)
        case = next_case(s, rater)
        for bad in (-1, 11, 4.5, "x", True, None):
            with pytest.raises(StudyError, match="integer from 0 to 10"):
                submit(s, rater, case.public_id, bad)
        submit(s, rater, case.public_id, 7, "looks smooth")
        with pytest.raises(AlreadyAnsweredError, match="already answered"):
            submit(s, rater, case.public_id, 3)
    with session_scope(db_engine) as s:
        from db.ratings import ratings_of_study
        from db.studies import get_study

        (row,) = ratings_of_study(s, get_study(s, "s1").id)
        assert row["score"] == 7 and row["comment"] == "looks smooth" and row["duration_s"] >= 0
        assert row["answered_at"] >= row["shown_at"]


def test_case_must_be_shown_and_belong_to_rater(db_engine, workspace):
    from db.models import Assignment, StudyCase
    from db.ratings import next_unanswered

    with session_scope(db_engine) as s:
        make_study(s, workspace, name="s1")
        make_study(s, workspace, name="s2")
        t1 = invite(s, "s1", "A").token
        t2 = invite(s, "s2", "B").token
    with session_scope(db_engine) as s:
        r1, r2 = rater_for_token(s, t1), rater_for_token(s, t2)
        other = next_case(s, r2).public_id
        with pytest.raises(StudyError, match="not part of this rater"):
            case_image(s, workspace, r1, other)
        with pytest.raises(StudyError, match="not part of this rater"):
            submit(s, r1, other, 5)
        first = next_case(s, r1)
        # the case at position 2 was never shown, so it cannot be answered yet
        later = s.query(Assignment).filter_by(rater_id=r1.id, position=2).one()
        with pytest.raises(StudyError, match="not been shown"):
            submit(s, r1, s.get(StudyCase, later.study_case_id).public_id, 5)
        assert next_unanswered(s, r1.id)[1].public_id == first.public_id


def test_revoked_and_unknown_tokens_refused(db_engine, workspace):
    with session_scope(db_engine) as s:
        make_study(s, workspace)
        inv = invite(s, "s1", "Dr A", base_url="https://vtt.example.org/")
    assert inv.link == f"https://vtt.example.org/?token={inv.token}" and len(inv.token) >= 43
    with session_scope(db_engine) as s:
        from db.models import Rater

        stored = s.query(Rater).one().token_hash
        assert inv.token not in stored and len(stored) == 64  # only the hash is stored
        rater = rater_for_token(s, inv.token)
        assert rater is not None
        other = "A" if inv.token[-1] != "A" else "B"  # a token differing in its last character
        assert rater_for_token(s, inv.token[:-1] + other) is None
        assert rater_for_token(s, "") is None and rater_for_token(s, None) is None
        case = next_case(s, rater)
        revoke(s, "s1", "Dr A")
    with session_scope(db_engine) as s:
        assert rater_for_token(s, inv.token) is None
        with pytest.raises(StudyError, match="no longer valid"):
            submit(s, rater, case.public_id, 5)


def test_blinding_nothing_reveals_the_source(db_engine, workspace, monkeypatch):
    import synthct.vtt.design as design
    from synthct.vtt.flow import PublicCase

    calls = []
    real_render = design.render_case_png

    def spy(image, mask, params):
        calls.append(params)
        return real_render(image, mask, params)

    monkeypatch.setattr(design, "render_case_png", spy)
    with session_scope(db_engine) as s:
        make_study(s, workspace, n_real=4, n_syn=4)
        token = invite(s, "s1", "A").token
    assert len(calls) == 8 and all(p == PARAMS for p in calls)  # one pipeline, same parameters
    manifest = json.loads((study_dir(workspace, "s1") / "manifest.json").read_text())
    truth = {c["public_id"]: c["truth"] for c in manifest["cases"]}
    sizes = {}
    with session_scope(db_engine) as s:
        rater = rater_for_token(s, token)
        case = next_case(s, rater)
        assert set(PublicCase.__dataclass_fields__) == {"public_id", "position", "total"}
        assert case.public_id in truth
        for pid in truth:  # every image this rater's browser can receive
            png = _png_chunks(case_image(s, workspace, rater, pid))
            sizes.setdefault(truth[pid], set()).add(png)
    for c in manifest["cases"]:  # nothing identifying inside the bytes either
        data = (study_dir(workspace, "s1") / "cases" / f"{c['public_id']}.png").read_bytes()
        for word in (c["case_id"], c["source"], "synthetic", "truth"):
            assert word.encode() not in data
    # identical PNG structure: same chunk types and the same IHDR (size, bit depth, colour type)
    assert sizes["real"] == sizes["synthetic"] and len(sizes["real"]) == 1
    for pid in truth:  # public ids are opaque 16-hex tokens, never a case id or a source
        assert len(pid) == 16 and all(ch in "0123456789abcdef" for ch in pid)
    assert len(manifest["render"]) > 0  # one params block for every case


def _png_chunks(data: bytes):
    import struct

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, ihdr = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IHDR":
            ihdr = data[pos + 8 : pos + 8 + length]
        if kind not in chunks:
            chunks.append(kind)
        pos += 12 + length
    return tuple(chunks), ihdr


N_RATERS, N_CASES = 20, 50


def test_concurrent_raters_lose_nothing(db_engine, workspace):
    """20 raters answer 50 cases each at the same time, one session per action."""
    with session_scope(db_engine) as s:
        make_study(s, workspace, n_real=25, n_syn=25)
        tokens = [invite(s, "s1", f"R{i:02d}").token for i in range(N_RATERS)]
    errors: list[BaseException] = []
    start = threading.Barrier(N_RATERS)

    def work(i, token):
        try:
            start.wait()
            answer_all(db_engine, token, score=i % 11)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]
    from sqlalchemy import text

    with db_engine.connect() as conn:
        n = conn.execute(text("SELECT COUNT(*) FROM ratings")).scalar()
        distinct = conn.execute(
            text("SELECT COUNT(*) FROM (SELECT DISTINCT rater_id, study_case_id FROM ratings) d")
        ).scalar()
    assert n == distinct == N_RATERS * N_CASES


def test_with_retry_retries_only_transient_lock_errors():
    from sqlalchemy.exc import OperationalError

    from synthct.vtt.flow import with_retry

    class FakeSession:
        rollbacks = 0

        def rollback(self):
            self.rollbacks += 1

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return "ok"

    session = FakeSession()
    assert with_retry(session, flaky) == "ok" and len(calls) == 3 and session.rollbacks == 2

    def broken():
        calls.append(1)
        raise OperationalError("INSERT", {}, Exception("no such table: ratings"))

    calls.clear()
    with pytest.raises(OperationalError, match="no such table"):
        with_retry(FakeSession(), broken)
    assert len(calls) == 1
