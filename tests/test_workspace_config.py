import dataclasses

import pytest

from synthct.config import DataConfig, config_hash, from_dict, load_yaml, save_yaml, to_dict
from synthct.errors import ConfigError, WorkspaceError
from synthct.workspace import Workspace, atomic_dir, atomic_write_json, check_name, read_json


def test_confine_refuses_escape(tmp_path):
    ws = Workspace.resolve(tmp_path)
    assert ws.confine("runs/a") == tmp_path.resolve() / "runs" / "a"
    with pytest.raises(WorkspaceError, match="outside workspace"):
        ws.confine("../etc/passwd")
    with pytest.raises(WorkspaceError):
        ws.confine("/etc/passwd")


@pytest.mark.parametrize("bad", ["", "..", "a/b", "x y", "a;rm"])
def test_check_name_rejects(bad):
    with pytest.raises(WorkspaceError):
        check_name(bad)


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "set"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("whole")
    assert (final / "a.txt").read_text() == "whole"


def test_json_round_trip(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": [1, 2]})
    assert read_json(tmp_path / "x.json") == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(WorkspaceError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_config_yaml_round_trip(tmp_path):
    cfg = DataConfig(size=64, hu_window=(-1000.0, 500.0))
    save_yaml(to_dict(cfg), tmp_path / "c.yaml")
    back = from_dict(DataConfig, load_yaml(tmp_path / "c.yaml"))
    assert back == cfg and isinstance(back.hu_window, tuple)
    assert config_hash(back) == config_hash(cfg) != config_hash(dataclasses.replace(cfg, size=128))


def test_config_unknown_key_and_bad_value():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sise'\]"):
        from_dict(DataConfig, {"sise": 64})
    with pytest.raises(ConfigError, match="multiple of 8"):
        from_dict(DataConfig, {"size": 30})
    assert from_dict(DataConfig, {"spacing": "1.5e0"}).spacing == 1.5
