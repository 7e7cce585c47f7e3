"""Real browser, researcher (no password): Browse's PNG slices (the fallback to NiiVue) show a
slice with its mask overlay; slider latency (arrow key -> new image displayed) and the server-side render time shown in the caption
are measured; screenshots of every researcher page go to test-artifacts/."""

from __future__ import annotations

import io
import json
import re
import statistics

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import ARTIFACTS, Server, shot, wait_idle

N_MOVES = 15


@pytest.fixture(scope="module")
def server(demo):
    ws, _ = demo
    srv = Server(ws)
    yield srv
    srv.stop()


def _first_image(page) -> np.ndarray:
    src = page.eval_on_selector('[data-testid="stImage"] img', "e => e.src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))


def _red_pixels(rgb: np.ndarray) -> int:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return int(np.sum((r > g + 60) & (r > b + 60)))


def test_browse_shows_slice_with_mask_overlay_and_slider_latency(server, page):
    page.goto(server.url)
    wait_idle(page)
    page.get_by_role("heading", name="Browse").wait_for()
    page.get_by_text("Slices (PNG)", exact=True).click()
    wait_idle(page)
    page.wait_for_selector('[data-testid="stImage"] img')
    page.get_by_role("button", name="Go to slice with most tumour").first.click()
    wait_idle(page)
    rgb = _first_image(page)
    assert rgb.ndim == 3 and min(rgb.shape[:2]) >= 16
    assert _red_pixels(rgb) > 0, "no mask overlay on the slice with most tumour"
    # the mask toggle removes the overlay: the red comes from the mask, not the image
    page.get_by_text("Mask", exact=True).first.click()
    wait_idle(page)
    assert _red_pixels(_first_image(page)) == 0
    page.get_by_text("Mask", exact=True).first.click()
    wait_idle(page)
    shot(page, "browse")

    # latency: arrow key on the slice slider -> the new image has loaded in the page
    page.evaluate(
        """() => {
        window.__lat = []; window.__t0 = null;
        const first = () => document.querySelector('[data-testid="stImage"] img');
        let last = first() && first().src;
        document.addEventListener('keydown', () => { window.__t0 = performance.now(); }, true);
        new MutationObserver(() => {
            const img = first();
            if (!img || img.src === last || window.__t0 === null) return;
            last = img.src;
            const t0 = window.__t0; window.__t0 = null;
            const done = () => window.__lat.push(performance.now() - t0);
            if (img.complete && img.naturalWidth) done(); else img.addEventListener('load', done, {once: true});
        }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
    }"""
    )
    slider = page.get_by_role("slider", name="Slice").first
    server_ms = []
    for i in range(N_MOVES):
        slider.focus()
        page.keyboard.press("ArrowLeft" if i % 2 else "ArrowRight")
        page.wait_for_function(f"() => window.__lat.length >= {i + 1}", timeout=15_000)
        wait_idle(page)
        caption = page.get_by_text(re.compile(r"rendered in [\d.]+ ms")).first.inner_text()
        server_ms.append(float(re.search(r"rendered in ([\d.]+) ms", caption).group(1)))
    latencies = page.evaluate("() => window.__lat")
    result = {
        "moves": N_MOVES,
        "median_ms_key_to_image": statistics.median(latencies),
        "max_ms_key_to_image": max(latencies),
        "median_ms_server_render": statistics.median(server_ms),
        "max_ms_server_render": max(server_ms),
    }
    (ARTIFACTS / "slider_latency.json").write_text(json.dumps(result, indent=2))
    assert len(latencies) == N_MOVES


@pytest.mark.parametrize(
    "path,title",
    [("dashboard", "Dashboard"), ("generate", "Generate & jobs"), ("studies", "Studies")],
)
def test_researcher_pages_render_without_errors(server, page, path, title):
    page.goto(f"{server.url}/{path}")
    wait_idle(page)
    page.get_by_role("heading", name=title).wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    if path == "dashboard":
        page.wait_for_selector('[data-testid="stPlotlyChart"]')
    shot(page, path)
