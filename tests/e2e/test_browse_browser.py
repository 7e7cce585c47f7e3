"""Real browser, Browse on NiiVue (WebGL through Chromium's software renderer): a real and a
synthetic case load side by side, the displayed slice number and HU value are read back and
checked against the workspace's own arrays, the wheel scrolls both linked views, a window preset
and a right-drag change the window, and nothing is fetched from anywhere but the app's server.
Screenshots at 1366 x 768 and 1440 x 900 go to test-artifacts/ (and docs/screenshots/ with
SYNTHCT_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from tests.e2e.conftest import ARTIFACTS, LAPTOPS, RequestLog, Server, doc_shot, wait_idle

FRAME = 'iframe[title="ui.viewer.niivue_viewer"]'


@pytest.fixture(scope="module")
def server(demo):
    ws, _ = demo
    srv = Server(ws)
    yield srv
    srv.stop()


def _first_real_case(ws):
    """The case Browse opens on the left (first real case, preprocessed grid), from disk."""
    from synthct.datasets import cases_in_split
    from synthct.preprocess import list_packed, load_packed_case

    cfg = list_packed(ws)[0][1]
    case_id = cases_in_split(ws, "train")[0].case_id
    image_hu, mask, _ = load_packed_case(ws, cfg, case_id)
    return case_id, image_hu, mask


def _open(page, server):
    log = RequestLog(page)
    page.goto(server.url)
    wait_idle(page)
    frame = page.frame_locator(FRAME)
    frame.locator('#root[data-ready="true"]').wait_for(timeout=60_000)
    return frame, log


def _readout(frame, i: int) -> dict[str, int]:
    el = frame.locator(f'[data-testid="nv-readout-{i}"]')
    return {k: int(el.get_attribute(f"data-{k}")) for k in ("axial", "coronal", "sagittal", "hu")}


@pytest.mark.parametrize("size", LAPTOPS, ids=lambda s: f"{s['width']}x{s['height']}")
def test_browse_loads_real_and_synthetic_in_niivue_from_the_app_alone(server, browser, size):
    context = browser.new_context(viewport=size)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        frame, log = _open(page, server)
        titles = frame.locator(".pane .title").all_inner_texts()
        assert len(titles) == 2
        assert titles[0].startswith("Real") and titles[1].startswith("Synthetic")
        assert frame.locator("canvas").count() == 2
        page.wait_for_timeout(500)  # the first frames drawn
        doc_shot(page, f"browse-{size['width']}x{size['height']}")
        assert log.foreign(server.url) == [], "something was fetched from outside the app"
        served = [u for u in log.urls if "/component/ui.viewer.niivue_viewer/" in u]
        assert any(u.endswith("/vendor/niivue.umd.js") for u in served)
    finally:
        context.close()


def test_scroll_window_and_readback(server, demo, page):
    ws, _ = demo
    case_id, image_hu, mask = _first_real_case(ws)
    frame, log = _open(page, server)
    assert frame.locator(".pane .title").first.inner_text().endswith(case_id)

    # Opens on the tumour: the slice with most mask in each plane, shown 1-based.
    from synthct.display import slice_with_most_mask

    start = _readout(frame, 0)
    assert start["axial"] == slice_with_most_mask(mask, "axial") + 1
    assert start["coronal"] == slice_with_most_mask(mask, "coronal") + 1
    assert start["sagittal"] == slice_with_most_mask(mask, "sagittal") + 1
    # The HU readout is the voxel's value in the workspace array (rounded to int16 for viewing).
    x, y, z = start["sagittal"] - 1, start["coronal"] - 1, start["axial"] - 1
    assert start["hu"] == int(np.rint(image_hu[x, y, z]))

    # One axial view each; the wheel over the left view scrolls it, and the linked right view.
    frame.get_by_role("button", name="Axial", exact=True).click()
    box = frame.locator("canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(3):
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(150)
    after = _readout(frame, 0)
    assert abs(after["axial"] - start["axial"]) == 3
    assert (after["coronal"], after["sagittal"]) == (start["coronal"], start["sagittal"])

    # Linked: the right view follows, as the same fraction of its own volume in every plane.
    def fractions(r, shape):
        return [
            (r[k] - 0.5) / n for k, n in zip(("sagittal", "coronal", "axial"), shape, strict=True)
        ]

    right = _readout(frame, 1)
    right_shape = [
        int(part.split("/")[1])
        for part in frame.locator('[data-testid="nv-readout-1"]').inner_text().split(" · ")[:3]
    ][::-1]  # the readout lists axial, coronal, sagittal
    np.testing.assert_allclose(
        fractions(right, right_shape), fractions(after, image_hu.shape), atol=1 / min(right_shape)
    )
    x, y, z = after["sagittal"] - 1, after["coronal"] - 1, after["axial"] - 1
    assert after["hu"] == int(np.rint(image_hu[x, y, z]))
    # Unlinked, the right view stays where it is; linked again, it follows the next scroll.
    frame.get_by_label("Link views").uncheck()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -120)
    page.wait_for_timeout(150)
    assert _readout(frame, 0)["axial"] == after["axial"] + (
        1 if start["axial"] > after["axial"] else -1
    )
    assert _readout(frame, 1) == right
    frame.get_by_label("Link views").check()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -120)
    page.wait_for_timeout(150)
    assert _readout(frame, 1)["axial"] != right["axial"]
    np.testing.assert_allclose(
        fractions(_readout(frame, 1), right_shape)[2],
        fractions(_readout(frame, 0), image_hu.shape)[2],
        atol=1 / right_shape[2],
    )

    # Scroll latency in the browser: wheel event -> new slice drawn and its number shown.
    latencies = frame.locator("canvas").first.evaluate(
        """(canvas) => {
        const readout = document.querySelector('[data-testid="nv-readout-0"]');
        const r = canvas.getBoundingClientRect();
        const out = [];
        for (let i = 0; i < 20; i++) {
            const before = readout.dataset.axial;
            const t0 = performance.now();
            canvas.dispatchEvent(new WheelEvent('wheel', {deltaY: i % 2 ? -100 : 100,
                clientX: r.left + r.width / 2, clientY: r.top + r.height / 2, bubbles: true,
                cancelable: true}));
            if (readout.dataset.axial !== before) out.push(performance.now() - t0);
        }
        return out;
    }"""
    )
    assert len(latencies) == 20  # every wheel step moved one slice, synchronously
    (ARTIFACTS / "niivue_scroll_latency.json").write_text(
        json.dumps({"steps": 20, "median_ms_wheel_to_slice": statistics.median(latencies)})
    )

    # Window: the preset shows its numbers and changes the picture; a right-drag changes both.
    window = frame.locator('[data-testid="nv-window"]')
    assert window.inner_text() == "W 400 · L 40"
    canvas = frame.locator("canvas").first
    before = canvas.screenshot()
    frame.get_by_role("button", name="Bone", exact=True).click()
    assert window.inner_text() == "W 1800 · L 400"
    page.wait_for_timeout(300)
    assert canvas.screenshot() != before
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down(button="right")
    for step in range(1, 6):
        page.mouse.move(cx + 10 * step, cy + 6 * step)
    page.mouse.up(button="right")
    assert window.inner_text() != "W 1800 · L 400"
    assert log.foreign(page.url.split("/", 3)[0] + "//" + page.url.split("/", 3)[2]) == []
