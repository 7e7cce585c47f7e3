import subprocess
import sys

import pytest

from synthct.access import configured_password_hash, hash_password, verify_password


def test_password_round_trip_and_salt():
    h1, h2 = hash_password("s3cret phrase"), hash_password("s3cret phrase")
    assert h1 != h2 and h1.startswith("scrypt$")  # random salt
    assert verify_password("s3cret phrase", h1) and verify_password("s3cret phrase", h2)
    assert not verify_password("S3cret phrase", h1)
    assert not verify_password("s3cret phrase", "scrypt$garbage")
    assert not verify_password("s3cret phrase", "plain-text-password")


def test_empty_password_refused():
    with pytest.raises(ValueError):
        hash_password("")


def test_configured_hash_env_wins(monkeypatch):
    monkeypatch.delenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", raising=False)
    assert configured_password_hash({}) is None
    assert configured_password_hash({"researcher_password_hash": "scrypt$x"}) == "scrypt$x"
    monkeypatch.setenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", "scrypt$env")
    assert configured_password_hash({"researcher_password_hash": "scrypt$x"}) == "scrypt$env"


def test_password_hash_command_prints_a_verifiable_hash():
    from typer.testing import CliRunner

    from synthct.cli import app

    res = CliRunner().invoke(app, ["password-hash"], input="pw-123456789\npw-123456789\n")
    assert res.exit_code == 0, res.output
    hashed = res.output.strip().splitlines()[-1]
    assert verify_password("pw-123456789", hashed) and "pw-123456789" not in hashed


# -- minimum length -------------------------------------------------------------------------------
@pytest.mark.parametrize("pw", ["a", "pw-123", "x" * 11])
def test_short_passwords_are_refused(pw):
    with pytest.raises(ValueError, match="at least 12"):
        hash_password(pw)
    assert verify_password("y" * 12, hash_password("y" * 12))


def test_password_hash_command_refuses_a_short_password():
    """Through the console entry point, in a real process: one line, exit 2, no hash."""
    proc = subprocess.run(
        [sys.executable, "-m", "synthct", "password-hash"],
        input="a\na\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "at least 12" in proc.stderr and "scrypt$" not in proc.stdout
    assert "Traceback" not in proc.stderr


# -- where the app may listen ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("unix:///tmp/synthct.sock", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        (None, False),
        ("192.0.2.10", False),
        ("10.1.2.3", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback_address(address, loopback):
    from synthct.access import is_loopback_address

    assert is_loopback_address(address) is loopback


def test_exposure_refusal_needs_a_password_off_loopback():
    from synthct.access import exposure_refusal

    assert exposure_refusal("127.0.0.1", password_configured=False) is None
    assert exposure_refusal("0.0.0.0", password_configured=True) is None
    for address in ("0.0.0.0", None, "192.0.2.10"):
        reason = exposure_refusal(address, password_configured=False)
        assert reason is not None and "\n" not in reason
        assert "without a researcher password" in reason and "password-hash" in reason
    assert "0.0.0.0" in exposure_refusal("0.0.0.0", password_configured=False)


def test_password_configured_outside_app_reads_env_and_secrets_file(tmp_path, monkeypatch):
    from synthct.access import password_configured_outside_app

    monkeypatch.delenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", raising=False)
    assert not password_configured_outside_app(tmp_path)
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('researcher_password_hash = "scrypt$x"\n')
    assert password_configured_outside_app(tmp_path)
    (tmp_path / ".streamlit" / "secrets.toml").write_text("not = [valid toml")
    assert not password_configured_outside_app(tmp_path)
    monkeypatch.setenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", "scrypt$env")
    assert password_configured_outside_app(tmp_path)
