"""Real browser, a whole study with duplicate cases: every picture the rater's browser receives —
the scrollable slab, which arrives inside a websocket message of the app, and any image loaded
by URL — has the same byte length, its own bytes (and URL), the same headers and the same
message length, so neither size, name nor headers tell real from synthetic; and each slab is the
sealed one once its padding is removed."""

from __future__ import annotations

import hashlib
import re
import time

import pytest
from sklearn.metrics import roc_auc_score

from synthct.vtt.blinding import PNG_SIGNATURE, _chunks, strip_padding
from tests.e2e.conftest import Server, pick_score, start, wait_idle

STUDY = "bytes-study"


@pytest.fixture(scope="module")
def study(demo):
    """A study with duplicates in the demo workspace, one invited rater; the sealed cases."""
    from db.session import database_url, make_engine, session_scope
    from db.studies import get_study, study_cases
    from synthct.demo import DEMO_SET
    from synthct.vtt.design import create_study_from_workspace
    from synthct.vtt.flow import invite

    ws, _ = demo
    engine = make_engine(database_url(ws.database))
    with session_scope(engine) as s:
        create_study_from_workspace(
            s, ws, STUDY, DEMO_SET, n_real=3, n_synthetic=3, duplicates=2, seed=1
        )
    with session_scope(engine) as s:
        link = invite(s, STUDY, "Byte counter").link
        rows = study_cases(s, get_study(s, STUDY).id)
        truth = {c.public_id: c.truth for c in rows}
    engine.dispose()
    import json

    from synthct.vtt.design import study_dir

    manifest = json.loads((study_dir(ws, STUDY) / "manifest.json").read_text())
    # duplicates share their original's slab hash and truth
    cases = {c["slab_sha256"]: truth[c["public_id"]] for c in manifest["cases"]}
    return ws, link, cases


def _pngs_in(message: bytes) -> list[bytes]:
    """The whole PNG files inside a websocket message (IHDR to IEND)."""
    out, pos = [], message.find(PNG_SIGNATURE)
    while pos >= 0:
        end = message.find(b"IEND", pos)
        if end < 0:
            break
        png = message[pos : end + 8]
        _chunks(png)  # a whole PNG, or this raises
        out.append(png)
        pos = message.find(PNG_SIGNATURE, end)
    return out


def _carrying(page, messages: list[bytes], timeout_s: float = 30.0) -> list[bytes]:
    """The messages that carry a PNG, once the case's slab message has arrived: on a busy
    machine it can land after the page already looks idle. Playwright delivers websocket frames
    while it waits, so the wait is Playwright's own."""
    deadline = time.monotonic() + timeout_s
    while not any(_pngs_in(m) for m in messages) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    page.wait_for_timeout(500)  # a second carrying message, were there one, would show now
    return [m for m in messages if _pngs_in(m)]


def test_every_image_a_rater_receives_has_one_size_and_its_own_url(study, page):
    ws, link, sealed = study
    server = Server(ws)
    seen_headers: dict[str, dict[str, str]] = {}
    messages: list[bytes] = []  # every websocket message that carries a PNG

    def on_response(response):
        if response.url.startswith(f"{server.url}/media/"):  # not /static/media/ (fonts)
            seen_headers[response.url] = dict(response.headers)

    def on_websocket(ws):
        def on_frame(payload):
            if isinstance(payload, bytes) and PNG_SIGNATURE in payload:
                messages.append(payload)

        ws.on("framereceived", on_frame)

    page.on("response", on_response)
    page.on("websocket", on_websocket)
    received: list[tuple[int, bytes, int]] = []  # (position, slab bytes, message length)
    try:
        page.goto(link.replace("http://localhost:8501", server.url))
        wait_idle(page)
        start(page)
        total = None
        while True:
            wait_idle(page)
            if page.get_by_text("All cases are rated").count():
                break
            text = page.get_by_text(re.compile(r"Case \d+ of \d+")).first.inner_text()
            position, total = (int(v) for v in re.search(r"Case (\d+) of (\d+)", text).groups())
            carrying = _carrying(page, messages)
            assert len(carrying) == 1, "one message per case carries its slab"
            (png,) = _pngs_in(carrying[0])
            received.append((position, png, len(carrying[0])))
            messages.clear()
            pick_score(page, position % 11)
            page.get_by_role("button", name="Send answer").click()
            page.wait_for_function(
                f"() => !document.body.innerText.includes('Case {position} of {total}')"
            )
    finally:
        server.stop()

    assert total == len(received) == 6 + 2  # 6 cases + 2 duplicates
    sizes = [len(b) for _, b, _ in received]
    # one byte length, one message length; every case slot its own bytes (duplicates included)
    assert len(set(sizes)) == 1, sizes
    assert len({n for _, _, n in received}) == 1
    assert len({b for _, b, _ in received}) == len(received)
    # no picture by URL for a study with slabs; any there were would share size and headers
    for headers in seen_headers.values():
        assert headers.get("content-length") == str(sizes[0])
    # each slab is a sealed one (manifest hash true); a size-only classifier is at chance
    truth = []
    for _, body, _ in received:
        digest = hashlib.sha256(strip_padding(body)).hexdigest()
        assert digest in sealed
        truth.append(sealed[digest] == "synthetic")
    assert 0 < sum(truth) < len(truth)
    assert roc_auc_score(truth, sizes) == 0.5
    sealed_sizes = [len(strip_padding(b)) for _, b, _ in received]
    assert len(set(sealed_sizes)) > 1  # without the padding the sizes would differ
