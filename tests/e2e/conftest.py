"""Real-browser test setup: a tiny demo workspace (synthct.demo, tiny settings), `streamlit run`
servers on free ports, and Debian chromium driven by Playwright (no browser download).

Screenshots go to test-artifacts/ (gitignored); with SYNTHCT_UPDATE_SCREENSHOTS=1, `doc_shot`
also refreshes the ones docs/screenshots/ shows.

WebGL (NiiVue in Browse) runs on Chromium's software renderer: SwiftShader through ANGLE
(--use-angle=swiftshader --enable-unsafe-swiftshader), so no GPU is needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
DOC_SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
]
LAPTOPS = ({"width": 1366, "height": 768}, {"width": 1440, "height": 900})

if not Path(CHROMIUM).exists():  # pragma: no cover - CI installs it (.ci/run)
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """(Workspace, {rater name: invite link}) of a tiny demo workspace."""
    import torch

    from synthct.demo import DemoConfig, build_demo
    from synthct.workspace import Workspace

    torch.set_num_threads(1)
    ws = Workspace.resolve(tmp_path_factory.mktemp("e2e") / "ws")
    result = build_demo(ws, DemoConfig.tiny())
    return ws, dict(result.invite_links)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(ws, port: int, password_hash: str | None, address: str | None, env_extra=None):
    """`streamlit run streamlit_app.py` as a newcomer types it, plus a port (and an address);
    returns (process, log path, open log file). STREAMLIT_* variables come only from
    `env_extra`."""
    env = dict(os.environ, SYNTHCT_WORKSPACE=str(ws.root), OMP_NUM_THREADS="1")
    for var in ("SYNTHCT_DATABASE_URL", "SYNTHCT_RESEARCHER_PASSWORD_HASH"):
        env.pop(var, None)
    env = {k: v for k, v in env.items() if not k.startswith("STREAMLIT_")}
    if password_hash:
        env["SYNTHCT_RESEARCHER_PASSWORD_HASH"] = password_hash
    env.update(env_extra or {})
    log = ARTIFACTS / f"server-{port}.log"
    ARTIFACTS.mkdir(exist_ok=True)
    log_file = open(log, "wb")  # noqa: SIM115 - closed by the caller
    args = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", f"--server.port={port}"]
    if address is not None:
        args.append(f"--server.address={address}")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    return proc, log, log_file


class Server:
    """`streamlit run streamlit_app.py` on a free port; `url` is its root."""

    def __init__(
        self, ws, password_hash: str | None = None, address: str | None = "127.0.0.1"
    ) -> None:
        """address: passed as --server.address; None leaves it to .streamlit/config.toml."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc, self.log, self._log = start_streamlit(ws, self.port, password_hash, address)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited; see {self.log}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit did not answer on {self.url} within 60 s; see {self.log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def wait_idle(page, timeout: float = 60.0) -> None:
    """Wait until the app has rendered and no script run is in progress (the status widget,
    which shows "Running…"/"Stop" during a run, stays absent for 0.5 s)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 0.5:
            return
        time.sleep(0.1)
    raise TimeoutError("the app was still running after {timeout} s")


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # Streamlit scrolls inside its own container: grow the viewport to the content's height
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('section, div')].map(e => e.scrollHeight))"
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(max(height, 800), 6000)})
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def doc_shot(page, name: str) -> Path:
    """A screenshot of exactly what the viewport shows: test-artifacts/NAME.png, and
    docs/screenshots/NAME.png too when SYNTHCT_UPDATE_SCREENSHOTS=1 (so that a test run leaves
    the checkout clean)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("SYNTHCT_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        (DOC_SHOTS / f"{name}.png").write_bytes(path.read_bytes())
    return path


def visible_without_scrolling(page, locator) -> bool:
    """True when the element lies wholly inside the viewport with the page scrolled to the top."""
    box = locator.bounding_box()
    size = page.viewport_size
    return (
        box is not None
        and box["y"] >= 0
        and box["x"] >= 0
        and box["y"] + box["height"] <= size["height"]
        and box["x"] + box["width"] <= size["width"]
    )


def page_scroll_room(page) -> int:
    """How many pixels the page (Streamlit scrolls inside its main section) can scroll."""
    return page.evaluate(
        """() => Math.max(0, ...[document.scrollingElement, ...document.querySelectorAll(
            '[data-testid="stMain"], [data-testid="stAppViewContainer"], section')]
            .filter(Boolean).map(e => e.scrollHeight - e.clientHeight))"""
    )


class RequestLog:
    """Every request the page and its frames make, to prove nothing leaves the app's server."""

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("websocket", lambda ws: self.urls.append(ws.url))

    def foreign(self, origin: str) -> list[str]:
        """URLs that go anywhere but `origin` (data: and blob: URLs stay in the browser)."""
        ws_origin = origin.replace("http://", "ws://", 1)
        return [
            u
            for u in self.urls
            if not (u.startswith((origin + "/", ws_origin + "/", "data:", "blob:")) or u == origin)
        ]


# -- the rating page ------------------------------------------------------------------------------
SLAB = 'iframe[title="ui.rating.slab_viewer"]'
CHOSEN = '[data-testid="stButtonGroup"] [role="radio"][aria-checked="true"]'


def pick_score(page, score: int) -> None:
    """Click a score on the 0–10 scale (a row of 11 buttons, none chosen at first)."""
    page.locator('[data-testid="stButtonGroup"] button').nth(score).click()
    page.locator(CHOSEN).filter(has_text=str(score)).wait_for()


def start(page) -> None:
    """From the welcome page to the first case."""
    page.get_by_role("button", name="Start").click()
    page.get_by_text(re.compile(r"Case \d+ of \d+")).first.wait_for()
    page.frame_locator(SLAB).locator('[data-testid="slab-index"]').wait_for()
    wait_idle(page)


def slab_index(page) -> tuple[int, int, str]:
    """(slice, slices, window label) the rater's viewer shows: "Slice 6 / 12 · Bone (W1800 L400)"."""
    text = page.frame_locator(SLAB).locator('[data-testid="slab-index"]').inner_text()
    m = re.fullmatch(r"Slice (\d+) / (\d+) · (.+)", text)
    assert m, text
    return int(m.group(1)), int(m.group(2)), m.group(3)
