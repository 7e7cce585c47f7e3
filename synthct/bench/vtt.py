"""`synthct bench vtt`: rating-write latency with concurrent raters on SQLite (WAL).

A Visual Turing Test study is many raters submitting at once against one database file. This
creates a tiny study in a fresh SQLite file, starts one thread per rater and lets all of them
answer every case as the rating page does (`next_case`, then a timed `submit`, each in its own
session). It reports the submit latency and checks that no rating is lost (rows = raters x
cases, no errors).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from db.session import init_db, make_engine, session_scope
from synthct.vtt.design import create_study
from synthct.vtt.flow import invite, next_case, rater_for_token, submit
from synthct.vtt.render import RenderConfig
from synthct.workspace import Workspace


def run_vtt_bench(folder: Path, raters: int = 20, cases: int = 50) -> dict:
    """Create a tiny study in a fresh SQLite file under `folder`, start `raters` threads that each
    answer `cases` cases (next_case, then a timed submit, each in its own session) all at once.

    Returns n, rows, errors, first_error, wall_s and the submit latency median/p95/max in ms.
    """
    ws = Workspace.resolve(folder / "ws").ensure()
    engine = make_engine(f"sqlite:///{ws.database}")
    init_db(engine)
    rng = np.random.default_rng(0)

    def pair():
        image = rng.normal(0, 100, (16, 16, 8)).astype(np.float32)
        return image, (image > 150).astype(np.uint8)

    n_real = cases // 2
    params = RenderConfig(tiles=1, tile_px=16, gap_px=0)
    with session_scope(engine) as s:
        create_study(
            s,
            ws,
            "bench",
            {f"R{i:03d}": pair() for i in range(n_real)},
            {f"S{i:03d}": pair() for i in range(cases - n_real)},
            synthetic_source="bench",
            params=params,
        )
        tokens = [invite(s, "bench", f"rater {i:02d}").token for i in range(raters)]
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(raters)

    def work(token: str) -> None:
        try:
            barrier.wait()
            for _ in range(cases):
                with session_scope(engine) as s:
                    rater = rater_for_token(s, token)
                    case = next_case(s, rater)
                t0 = time.perf_counter()
                with session_scope(engine) as s:
                    submit(s, rater_for_token(s, token), case.public_id, 5)
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
        except BaseException as e:  # reported, not raised from a thread
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    with engine.connect() as conn:
        rows = int(conn.execute(text("SELECT COUNT(*) FROM ratings")).scalar() or 0)
    engine.dispose()
    ms = np.asarray(latencies) * 1000.0
    return {
        "n": raters * cases,
        "rows": rows,
        "errors": len(errors),
        "first_error": repr(errors[0]) if errors else None,
        "wall_s": wall,
        "median_ms": float(np.median(ms)) if ms.size else float("nan"),
        "p95_ms": float(np.percentile(ms, 95)) if ms.size else float("nan"),
        "max_ms": float(ms.max()) if ms.size else float("nan"),
    }
