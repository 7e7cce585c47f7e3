"""AppTest: Browse lists real splits and synthetic sets; the NiiVue view receives each case as
NIfTI bytes with its geometry, window presets and the tumour slice to open on; the PNG slices
render with overlays and count slices from 1, in the slider as in the caption."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP
from tests.app.tiny_workspace import SET


def _nifti(data: bytes):
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def test_browse_sends_both_cases_to_niivue_as_nifti(tiny_ws):
    from synthct.display import slice_with_most_mask
    from synthct.sets import load_datacard, load_synthetic_pair

    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    labels = at.selectbox(key="src0").options
    assert "Real · train · original" in labels and f"Synthetic · {SET}" in labels
    assert any(lb.startswith("Real · train · preprocessed S=") for lb in labels)
    assert at.selectbox(key="src1").value.label == f"Synthetic · {SET}"
    viewer = at.get("component_instance")
    assert len(viewer) == 1 and len(at.image) == 0
    proto = viewer[0].proto
    assert proto.component_name == "ui.viewer.niivue_viewer"
    args = json.loads(proto.json_args)
    blobs = {a.key: a.bytes for a in proto.special_args}
    assert set(blobs) == {"image0", "mask0", "image1", "mask1"}

    # The synthetic case (right) arrives as its own voxels (int16 HU) on its own grid.
    card = load_datacard(tiny_ws.synthetic_dir(SET))
    first = card["cases"][0]["case_id"]
    image, mask = load_synthetic_pair(tiny_ws.synthetic_dir(SET), first)
    got = _nifti(blobs["image1"])
    assert got.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.rint(image.array).astype(np.int16))
    np.testing.assert_allclose(np.diag(got.affine)[:3], image.spacing, rtol=1e-5)
    got_mask = np.asarray(_nifti(blobs["mask1"]).dataobj)
    np.testing.assert_array_equal(got_mask, (mask.array > 0).astype(np.uint8))
    assert args["views"][1]["title"].endswith(first)
    assert args["views"][1]["start"] == [
        slice_with_most_mask(mask.array, p) for p in ("sagittal", "coronal", "axial")
    ]
    # CT presets (soft tissue first) and the data's own HU window from its preprocessing
    presets = {p["label"]: (p["width"], p["level"]) for p in args["presets"]}
    assert list(presets)[0] == "Soft tissue" and presets["Soft tissue"] == (400, 40)
    assert presets["Bone"] == (1800, 400) and presets["Lung"] == (1500, -600)
    assert presets["Data (-1024…600)"] == (1624, -212)


def test_browse_png_slices_side_by_side_with_overlay(tiny_ws, monkeypatch):
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
    at.button_group(key="viewer-mode").set_value("Slices (PNG)").run()
    assert not at.exception, at.exception
    assert len(at.image) == 2 and len(at.get("component_instance")) == 0

    # The synthetic viewer shows exactly what synthct.display renders for the chosen slice.
    card = load_datacard(tiny_ws.synthetic_dir(SET))
    first = card["cases"][0]["case_id"]
    image, mask = load_synthetic_pair(tiny_ws.synthetic_dir(SET), first)
    key = f"v1-synthetic-{SET}-{first}"
    at.button(key=f"{key}-most").click().run()
    slider = at.slider(key=f"{key}-axial-slice")
    n = image.shape[2]
    assert (slider.min, slider.max) == (1, n)  # slices counted from 1, like the caption
    number = slider.value
    expected = render_slice(
        image.array, mask.array, "axial", number - 1, WINDOWS["soft-tissue"], 0.4, True,
        image.spacing,
    )  # fmt: skip
    shown = shown_rgb[-1]  # the fragment rerun re-renders only the second viewer
    assert shown.shape == expected.shape
    np.testing.assert_array_equal(shown, expected)
    assert any(c.value.startswith(f"axial slice {number} of {n} ") for c in at.caption)
    # The last slice is n of n.
    slider.set_value(n).run()
    assert any(c.value.startswith(f"axial slice {n} of {n} ") for c in at.caption)

    # Mask off: no overlay colour left.
    at.toggle(key=f"{key}-mask").set_value(False).run()
    plain = shown_rgb[-1]
    assert (plain == plain[..., :1]).all()
