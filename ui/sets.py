"""The download of a synthetic set as a zip, on the Generate & jobs page.

The zip is written once per version of the set (synthct.set_archive, on disk, atomically) when
the researcher asks for it; the download button then reads that file only when it is clicked
(Streamlit's deferred download), and Streamlit holds the bytes in memory while it serves them.
So sets above MAX_DOWNLOAD_BYTES are not offered in the browser: the page names the command
that writes the same zip, and where it is.
"""

from __future__ import annotations

import streamlit as st

from synthct.set_archive import archive_path, archive_set, set_bytes
from synthct.workspace import Workspace

MAX_DOWNLOAD_BYTES = 2 * 1024**3


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def set_download(ws: Workspace, name: str) -> None:
    """Size of the set, then a "Prepare zip" button or the download of the prepared zip."""

    size = set_bytes(ws.synthetic_dir(name))
    path = archive_path(ws, name)
    command = f"synthct set zip {name}"
    if size > MAX_DOWNLOAD_BYTES:
        st.info(
            f"Set **{name}** holds {_mb(size)}: too large to download through the app. "
            f"`{command}` writes it as one zip into `{path.parent}`."
        )
        return
    c1, c2 = st.columns([1, 3], vertical_alignment="center")
    if not path.is_file():
        if not c1.button("Prepare zip", key=f"zip-{name}"):
            c2.caption(
                f"{_mb(size)} of NIfTI pairs, datacard.json and dataset.json (MONAI Decathlon "
                f"format), written once into `{path.parent}` (also `{command}`)."
            )
            return
        with st.spinner(f"Writing {name}.zip…"):
            path = archive_set(ws, name)
    c1.download_button(
        f"Download {name}.zip",
        data=path.read_bytes,  # read when clicked (deferred), not on every run
        file_name=f"{name}.zip",
        mime="application/zip",
        on_click="ignore",
        key=f"zip-dl-{name}",
        type="primary",
    )
    c2.caption(f"{_mb(path.stat().st_size)} zip, kept at `{path}`.")
