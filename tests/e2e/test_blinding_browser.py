"""Real browser, a whole study with duplicate cases: every image the rater's browser loads has
the same byte length, its own URL and the same HTTP headers, so neither size, name nor headers
tell real from synthetic; and each image is the sealed case PNG once its padding is removed."""

from __future__ import annotations

import hashlib
import re

import pytest
from sklearn.metrics import roc_auc_score

from synthct.vtt.blinding import strip_padding
from tests.e2e.conftest import Server, wait_idle

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
        cases = {
            c.png_sha256: c.truth for c in study_cases(s, get_study(s, STUDY).id)
        }  # duplicates share their original's hash and truth
    engine.dispose()
    return ws, link, cases


def test_every_image_a_rater_receives_has_one_size_and_its_own_url(study, page):
    ws, link, sealed = study
    server = Server(ws)
    seen_headers: dict[str, dict[str, str]] = {}

    def on_response(response):
        if response.url.startswith(f"{server.url}/media/"):  # not /static/media/ (fonts)
            seen_headers[response.url] = dict(response.headers)

    page.on("response", on_response)
    received: list[tuple[str, bytes, dict[str, str]]] = []
    try:
        page.goto(link.replace("http://localhost:8501", server.url))
        wait_idle(page)
        total = None
        while True:
            wait_idle(page)
            if page.get_by_text("All cases are rated").count():
                break
            text = page.get_by_text(re.compile(r"Case \d+ of \d+")).first.inner_text()
            position, total = (int(v) for v in re.search(r"Case (\d+) of (\d+)", text).groups())
            page.wait_for_selector('[data-testid="stImage"] img')
            src = page.eval_on_selector('[data-testid="stImage"] img', "e => e.src")
            # the same URL fetched again, offering compression: the bytes must not change
            again = page.request.get(src, headers={"Accept-Encoding": "gzip, deflate, br"})
            assert again.ok
            received.append((src, again.body(), dict(again.headers)))
            thumb = page.get_by_role("slider").first
            thumb.focus()
            for _ in range(1 + position % 11):
                page.keyboard.press("ArrowRight")
            page.get_by_role("button", name="Send answer").click()
            page.wait_for_function(
                f"() => !document.body.innerText.includes('Case {position} of {total}')"
            )
    finally:
        server.stop()

    assert total == len(sealed) + 2 == len(received)  # 6 cases + 2 duplicates
    urls = [u for u, _, _ in received]
    sizes = [len(b) for _, b, _ in received]
    # one byte length; every case slot its own URL (duplicates included)
    assert len(set(sizes)) == 1, sizes
    assert len(set(urls)) == len(urls)
    assert all(re.search(r"/media/[0-9a-f]+\.png$", u) for u in urls)
    # what the browser itself received, headers included, says the same for every image
    assert set(urls) <= set(seen_headers)
    for headers in (*seen_headers.values(), *(h for _, _, h in received)):
        assert headers.get("content-length") == str(sizes[0])
        assert "content-encoding" not in headers and "content-disposition" not in headers
        assert headers.get("content-type") == "image/png"
    varying = {k for k in seen_headers[urls[0]] if k != "date"}
    for u in urls:
        assert {k: v for k, v in seen_headers[u].items() if k in varying} == {
            k: v for k, v in seen_headers[urls[0]].items() if k in varying
        }
    # each image is a sealed case PNG (manifest hash true); a size-only classifier is at chance
    truth = []
    for _, body, _ in received:
        digest = hashlib.sha256(strip_padding(body)).hexdigest()
        assert digest in sealed
        truth.append(sealed[digest] == "synthetic")
    assert 0 < sum(truth) < len(truth)
    assert roc_auc_score(truth, sizes) == 0.5
    sealed_sizes = [len(strip_padding(b)) for _, b, _ in received]
    assert len(set(sealed_sizes)) > 1  # without the padding the sizes would differ
