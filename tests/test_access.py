import pytest

from synthct.access import configured_password_hash, hash_password, verify_password


def test_password_round_trip_and_salt():
    h1, h2 = hash_password("s3cret"), hash_password("s3cret")
    assert h1 != h2 and h1.startswith("scrypt$")  # random salt
    assert verify_password("s3cret", h1) and verify_password("s3cret", h2)
    assert not verify_password("S3cret", h1)
    assert not verify_password("s3cret", "scrypt$garbage")
    assert not verify_password("s3cret", "plain-text-password")


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

    res = CliRunner().invoke(app, ["password-hash"], input="pw-123\npw-123\n")
    assert res.exit_code == 0, res.output
    hashed = res.output.strip().splitlines()[-1]
    assert verify_password("pw-123", hashed) and "pw-123" not in hashed
