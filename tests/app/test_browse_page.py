"""AppTest: Browse lists real splits and synthetic sets and renders slices with overlays."""

from __future__ import annotations

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP
from tests.app.tiny_workspace import SET


def test_browse_side_by_side_real_and_synthetic_with_overlay(tiny_ws, monkeypatch):
    import ui.viewer
    from synthct.display import WINDOWS, render_slice
    from synthct.sets import load_datacard, load_synthetic_pair

    shown_rgb: list[np.ndarray] = []  # every RGB slice the viewer encodes, in order
    real_encode = ui.viewer.encode_png

    def spy(rgb):
        shown_rgb.append(rgb.copy())
        return real_encode(rgb)

    monkeypatch.setattr(ui.viewer, "encode_png", spy)
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    labels = at.selectbox(key="src0").options
    assert "Real · train · original" in labels and f"Synthetic · {SET}" in labels
    assert any(lb.startswith("Real · train · preprocessed S=") for lb in labels)
    assert at.selectbox(key="src1").value.label == f"Synthetic · {SET}"
    assert len(at.image) == 2

    # The synthetic viewer shows exactly what synthct.display renders for the chosen slice.
    card = load_datacard(tiny_ws.synthetic_dir(SET))
    first = card["cases"][0]["case_id"]
    image, mask = load_synthetic_pair(tiny_ws.synthetic_dir(SET), first)
    key = f"v1-synthetic-{SET}-{first}"
    at.button(key=f"{key}-most").click().run()
    idx = at.slider(key=f"{key}-axial-idx").value
    expected = render_slice(
        image.array, mask.array, "axial", idx, WINDOWS["soft-tissue"], 0.4, True, image.spacing
    )
    shown = shown_rgb[-1]  # the fragment rerun re-renders only the second viewer
    assert shown.shape == expected.shape
    np.testing.assert_array_equal(shown, expected)

    # Mask off: no overlay colour left.
    at.toggle(key=f"{key}-mask").set_value(False).run()
    plain = shown_rgb[-1]
    assert (plain == plain[..., :1]).all()
