"""AppTest: a synthetic set is downloaded as a zip written once on disk (Generate & jobs)."""

from __future__ import annotations

import zipfile

from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP
from tests.app.tiny_workspace import SET


def test_prepare_and_download_a_set_as_zip(tiny_ws):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/generate.py").run()
    at.selectbox(key="gen-card").set_value(SET).run()
    assert not at.exception, at.exception
    assert len(at.get("download_button")) == 0  # nothing is written before it is asked for
    assert not tiny_ws.archive_dir(SET).exists()
    at.button(key=f"zip-{SET}").click().run()
    assert not at.exception, at.exception
    button = at.get("download_button")[0].proto
    assert button.label == f"Download {SET}.zip"
    (path,) = tiny_ws.archive_dir(SET).glob("*.zip")
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
    set_dir = tiny_ws.synthetic_dir(SET)
    on_disk = {
        f"{SET}/{p.relative_to(set_dir).as_posix()}"
        for p in set_dir.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert names == on_disk and f"{SET}/dataset.json" in names
    # the next run offers the same file without writing it again
    mtime = path.stat().st_mtime_ns
    at.run()
    assert at.get("download_button")[0].proto.label == f"Download {SET}.zip"
    assert path.stat().st_mtime_ns == mtime


def test_a_set_too_large_for_the_browser_names_the_command(tiny_ws, monkeypatch):
    import ui.sets

    monkeypatch.setattr(ui.sets, "MAX_DOWNLOAD_BYTES", 1000)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/generate.py").run()
    at.selectbox(key="gen-card").set_value(SET).run()
    assert any(f"synthct set zip {SET}" in i.value for i in at.info)
    assert len(at.get("download_button")) == 0
