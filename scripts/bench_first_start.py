"""First-start benchmark: a fresh clone, the README's run command, a real browser.

    .venv/bin/python scripts/bench_first_start.py [--repo .] [--python .venv/bin/python]

Clones `--repo` (its committed HEAD, or `--rev`) into a temporary folder, starts the README's command there
(`streamlit run streamlit_app.py`, run with `--python`'s interpreter, whose environment must
already hold requirements.txt: installing is not timed) on a free port, with no workspace yet, and
drives headless Debian Chromium (Playwright, /usr/bin/chromium) to the app until Browse shows a
real and a synthetic case in NiiVue (both panes titled, the viewer ready). It prints the seconds
from the command's start to the server answering, to the first page (the first-start progress
bar) and to that Browse view, with the machine and the load average, as JSON. Afterwards it
cancels the background jobs the first start submitted, stops the server and removes the clone
(unless `--keep`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
]
FRAME = 'iframe[title="ui.viewer.niivue_viewer"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in time")


def browse_ready(page, deadline: float) -> tuple[float | None, list[str]]:
    """Wait for Browse with a real and a synthetic pane; returns (time the first page showed,
    pane titles)."""
    first_page = None
    frame = page.frame_locator(FRAME)
    while time.monotonic() < deadline:
        if first_page is None and page.locator('[data-testid="stApp"] *').count() > 5:
            first_page = time.monotonic()
        titles = []
        with contextlib.suppress(Exception):
            if frame.locator('#root[data-ready="true"]').count():
                titles = frame.locator(".pane .title").all_inner_texts()
        if len(titles) == 2 and titles[0].startswith("Real") and titles[1].startswith("Synthetic"):
            return first_page, titles
        time.sleep(0.25)
    raise TimeoutError("Browse did not show a real and a synthetic case in time")


def cancel_jobs(clone: Path, python: str) -> str:
    """Cancel every job the first start queued (they run in their own process groups)."""
    code = (
        "from synthct import jobs\n"
        "from synthct.workspace import Workspace\n"
        "ws = Workspace.resolve('workspace')\n"
        "rows = jobs.list_jobs(ws) if ws.database.exists() else []\n"
        "for j in rows:\n"
        "    if j.status in ('queued', 'running'):\n"
        "        jobs.cancel(ws, j.id, grace_s=2)\n"
        "print(', '.join(f'{j.id} {j.kind} {\" \".join(j.args)}: {j.status}' for j in rows))\n"
    )
    out = subprocess.run(
        [python, "-c", code], cwd=clone, capture_output=True, text=True, timeout=120
    )
    return out.stdout.strip() or out.stderr.strip()[-300:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--rev", default="HEAD", help="revision of --repo to clone (default HEAD)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with requirements")
    ap.add_argument("--timeout", type=float, default=1800.0, help="give up after this many s")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    sys.path.insert(0, args.repo)
    from synthct.bench.machine import bench_header

    tmp = Path(tempfile.mkdtemp(prefix="synthct-first-start-"))
    clone = tmp / "synthct"
    subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", args.rev], cwd=clone, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHCT_", "STREAMLIT_"))}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115 - closed below
    load_before = os.getloadavg()
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    proc = subprocess.Popen(
        [args.python, "-m", "streamlit", "run", "streamlit_app.py", f"--server.port={port}",
         "--server.headless=true"],
        cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    result: dict = {}
    try:
        wait_health(url, proc, deadline)
        t_server = time.monotonic()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            first_page, titles = browse_ready(page, deadline)
            t_browse = time.monotonic()
            page.screenshot(path=str(tmp / "first-start.png"))
            browser.close()
        result = {
            "benchmark": bench_header("first start (fresh clone, README command, Chromium)"),
            "commit": commit,
            "server_answers_s": round(t_server - t0, 1),
            "first_page_s": round((first_page or t_browse) - t0, 1),
            "browse_real_and_synthetic_s": round(t_browse - t0, 1),
            "panes": titles,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        jobs = cancel_jobs(clone, args.python) if (clone / "workspace").exists() else ""
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        result["background_jobs_at_the_end"] = jobs
        if args.keep:
            result["clone"] = str(clone)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
