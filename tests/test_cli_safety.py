"""The `synthct` entry point as a user meets it (real subprocesses): usage errors are Typer's
short usage message with exit status 2 and no traceback; a command group alone prints its help;
a missing workspace is refused by every command that does not create one; names follow one
rule; a full disk is one line; a killed `generate` leaves nothing behind after the next start."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthct.errors import WorkspaceError
from synthct.workspace import (
    Workspace,
    atomic_dir,
    check_name,
    is_valid_name,
    remove_stale_partials,
)

REPO = Path(__file__).resolve().parents[1]
SYNTHCT = shutil.which("synthct", path=str(Path(sys.executable).parent)) or shutil.which("synthct")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("SYNTHCT_DATABASE_URL", None)


def synthct(*args: str, env: dict | None = None, timeout: float = 120):
    assert SYNTHCT, "the synthct entry point is not installed (pip install -e .)"
    return subprocess.run([SYNTHCT, *map(str, args)], env=env or ENV, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)  # fmt: skip


# -- usage errors and help ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["generate", "--n", "abc", "--run", "r", "--out", "o"],
        ["generate", "--run", "r", "--out", "o"],  # a missing option
        ["study", "invite"],  # a missing argument
        ["study", "stats", "x", "--nope"],
        ["jobs", "show", "not-a-number"],
        ["jobs", "cancel", "1", "--wait", "-3"],
        ["phantom", "--out", "x", "--scale", "2"],
        ["no-such-command"],
        ["bench", "generate", "--n"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2_with_the_short_usage_message(args):
    res = synthct(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    assert "Error:" in res.stderr and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) <= 6, res.stderr
    if args != ["bench", "generate", "--n"]:  # click raises that one without its context
        assert res.stderr.startswith("Usage: synthct")


@pytest.mark.parametrize("group", [[], ["study"], ["jobs"], ["eval"], ["bench"]], ids=str)
def test_a_command_group_alone_prints_its_help(group):
    res = synthct(*group)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr + res.stdout
    assert "Usage: synthct" in res.stdout and "Commands" in res.stdout


def test_user_errors_are_one_line(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    res = synthct("generate", "--run", "nope", "--n", "2", "--out", "o", "-w", ws)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [f"error: run 'nope' not found in {ws / 'runs'}"]


# -- a mistyped -w never creates a workspace ------------------------------------------------------
NON_CREATING = [
    ["jobs", "list"],
    ["jobs", "show", "1"],
    ["jobs", "run-queue"],
    ["jobs", "submit", "-w", "{ws}", "--", "jobs", "sleep", "1"],
    ["study", "list"],
    ["study", "export", "s", "--out", "s.csv"],
    ["preprocess", "--size", "32"],
    ["train", "--config", str(REPO / "configs" / "hagan-tiny.yaml"), "--run", "r"],
    ["hpo", str(REPO / "configs" / "hpo-thesis.yaml")],
    ["generate", "--run", "r", "--n", "1", "--out", "o"],
    ["evaluate", "--synthetic", "s"],
    ["segment", "--experiment", "real"],
    ["eval", "train-encoder"],
]


@pytest.mark.parametrize("args", NON_CREATING, ids=lambda a: " ".join(a[:2]))
def test_a_missing_workspace_is_refused_not_created(tmp_path, args):
    missing = tmp_path / "wrokspace"  # a typo
    argv = [str(missing) if a == "{ws}" else a for a in args]
    res = synthct(*argv, *(["-w", missing] if "{ws}" not in args else []))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith(f"error: workspace {missing} does not exist")
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not missing.exists()


def test_the_environment_workspace_is_checked_too(tmp_path):
    missing = tmp_path / "nowhere"
    res = synthct("jobs", "list", env={**ENV, "SYNTHCT_WORKSPACE": str(missing)})
    assert res.returncode == 2 and "$SYNTHCT_WORKSPACE" in res.stderr
    assert not missing.exists()


def test_ingest_and_phantom_create_what_they_write(tmp_path):
    src, ws = tmp_path / "src", tmp_path / "new-ws"
    res = synthct("phantom", "--out", src, "--n", "2", "--scale", "0.06")
    assert res.returncode == 0, res.stderr
    res = synthct("ingest", src, "--test-fraction", "0", "-w", ws)
    assert res.returncode == 0, res.stderr
    assert (ws / "data" / "cases.json").is_file()
    res = synthct("jobs", "list", "-w", ws)  # now it exists: other commands accept it
    assert res.returncode == 0, res.stderr


# -- one naming rule ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad", ["", ".hidden", "..", "-flag", "_x", "a/b", "x y", "a;rm", "é", "a" * 65, "a" * 300]
)
def test_names_follow_one_rule(bad):
    with pytest.raises(WorkspaceError, match="not valid"):
        check_name(bad, "set name")
    assert not is_valid_name(bad)


@pytest.mark.parametrize("good", ["a", "hagan128", "syn-524", "vtt_1.b", "A" * 64, "0run"])
def test_valid_names_pass(good):
    assert check_name(good) == good and is_valid_name(good)


@pytest.mark.parametrize("name", ["a" * 300, ".hidden"])
def test_bad_names_are_one_line_in_the_cli(tmp_path, name):
    ws = Workspace.resolve(tmp_path / "ws").ensure()
    res = synthct("generate", "--run", "r", "--n", "1", "--out", name, "-w", ws.root)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "set name" in res.stderr
    res = synthct("study", "create", "--name", name, "--synthetic", "s", "-w", ws.root)
    assert res.returncode == 2 and "study name" in res.stderr and "Traceback" not in res.stderr


# -- a full disk ----------------------------------------------------------------------------------
def _small_filesystem_cmd(mount: Path, size_kb: int, inner: list[str]) -> list[str] | None:
    """A command running `inner` with a `size_kb` tmpfs mounted at `mount` (a private mount
    namespace: no root needed), or None where the system does not allow that."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        return None
    script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
    return [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
            f"{size_kb}k", str(mount), *inner]  # fmt: skip


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    cmd = _small_filesystem_cmd(
        mount, 96, [SYNTHCT, "phantom", "--out", str(mount / "ph"), "--n", "4", "--scale", "0.25"]
    )
    if cmd is None:
        pytest.skip("no unprivileged mount namespaces here (unshare)")
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, (res.stdout, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no space left on device"), lines
    assert "free some space" in lines[-1] and "Traceback" not in res.stderr
    assert list(mount.iterdir()) == []  # the tmpfs was private: nothing escaped it either


# -- partial folders of killed writers ------------------------------------------------------------
@pytest.fixture
def bench_ws(tmp_path):
    """A workspace with a random-weight tiny HA-GAN run `r` to sample from (CPU)."""
    from synthct.bench.generate import make_bench_run

    ws = Workspace.resolve(tmp_path / "ws").ensure()
    make_bench_run(ws, "r", size=32, width=0.0625, latent=16)
    return ws


def _partials(ws: Workspace) -> list[Path]:
    return sorted(p for p in ws.synthetic.iterdir() if p.name.endswith(".partial"))


def _start_generate(ws: Workspace, out: str, n: int = 1_000_000) -> subprocess.Popen:
    cmd = [SYNTHCT, "generate", "--run", "r", "--n", str(n), "--out", out, "--device", "cpu",
           "-w", str(ws.root)]  # fmt: skip
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_pairs(ws: Workspace, proc: subprocess.Popen, k: int = 2) -> Path:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, "generate ended early"
        assert time.monotonic() < deadline, "generate wrote nothing"
        found = [p for p in _partials(ws) if len(list((p / "labelsTr").glob("*"))) >= k]
        if found:
            return found[0]
        time.sleep(0.05)


def test_a_killed_generate_leaves_nothing_after_the_next_start(bench_ws):
    ws = bench_ws
    proc = _start_generate(ws, "big")
    partial = _wait_for_pairs(ws, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.is_dir() and partial.name.startswith(".big.")  # SIGKILL: no clean-up ran
    res = synthct("generate", "--run", "r", "--n", "2", "--out", "small", "--device", "cpu",
                  "-w", ws.root)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in ws.synthetic.iterdir()) == ["small"]


def test_a_live_writer_keeps_its_partial_folder(bench_ws):
    """A second generate (and the job scheduler's sweep) leave a running one's work alone."""
    from synthct import jobs

    ws = bench_ws
    proc = _start_generate(ws, "big")
    try:
        partial = _wait_for_pairs(ws, proc)
        res = synthct("generate", "--run", "r", "--n", "1", "--out", "other", "--device", "cpu",
                      "-w", ws.root)  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        jobs.pump(ws)  # the scheduler sweeps stale partial folders on every refresh
        assert partial.is_dir() and proc.poll() is None
        proc.send_signal(signal.SIGTERM)  # a terminated CLI run removes its own partial folder
        assert proc.wait(timeout=60) == 143
        assert _partials(ws) == [] and sorted(p.name for p in ws.synthetic.iterdir()) == ["other"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stale_partials_are_told_apart_by_writer_and_host(tmp_path):
    """A partial named after a dead pid is stale; this process's own live one and one written
    on another host (a shared workspace) are kept."""
    with atomic_dir(tmp_path / "mine") as live:
        dead = tmp_path / live.name.replace(f"-{os.getpid()}.", f"-{_dead_pid()}.")
        dead.mkdir()
        other_host = tmp_path / ".set.00000000-1.abcd.partial"
        other_host.mkdir()
        assert remove_stale_partials(tmp_path) == [dead]
        assert not dead.exists() and live.is_dir() and other_host.is_dir()
    assert (tmp_path / "mine").is_dir() and not live.exists()


def test_a_reused_pid_is_not_the_writer(tmp_path):
    """The writer of a folder must have started before the folder last changed: a process that
    got the dead writer's pid later is not it."""
    from synthct.workspace import _writer_alive

    before = tmp_path / "before"
    before.mkdir()
    time.sleep(0.6)  # start times are known to ~0.02 s; the check allows 0.25 s
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        after = tmp_path / "after"
        time.sleep(0.2)
        after.mkdir()
        assert _writer_alive(proc.pid, after)  # started first: it may be the writer
        assert not _writer_alive(proc.pid, before)  # started after the folder: a reused pid
    finally:
        proc.kill()
        proc.wait()
    assert not _writer_alive(proc.pid, after)  # gone


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
