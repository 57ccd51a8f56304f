"""custom.atomic: outputs appear complete or not at all, and no temporary is left behind."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from custom.atomic import atomic_path, atomic_write, save_torch_atomic, staged_dir, write_json_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_replaces_or_keeps(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    atomic_write(target, lambda f: f.write("a,b\r\n"))
    assert target.read_bytes() == b"a,b\r\n"  # newline="" keeps what the writer wrote

    def fail(f):
        f.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_bytes() == b"a,b\r\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]


def test_files_get_plain_open_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with open(tmp_path / "plain", "w"):
            pass
        path = write_json_atomic({"a": [1]}, tmp_path / "x.json")
    finally:
        os.umask(umask)
    assert _mode(path) == _mode(tmp_path / "plain") == 0o644
    assert path.read_text() == '{\n "a": [\n  1\n ]\n}\n'
    assert json.loads(path.read_text()) == {"a": [1]}


def test_atomic_path_suffix_and_torch(tmp_path):
    with atomic_path(tmp_path / "v.nii.gz", ".nii.gz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".v.nii.gz.")
        tmp.write_bytes(b"x")
    assert (tmp_path / "v.nii.gz").read_bytes() == b"x"
    path = save_torch_atomic({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "v.nii.gz"]


def test_staged_dir(tmp_path):
    target = tmp_path / "ds"
    target.mkdir()  # an empty folder is replaced
    with staged_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and tmp.name.startswith(".ds.tmp-")
        (tmp / "f").write_text("1")
    assert (target / "f").read_text() == "1"
    with pytest.raises(KeyboardInterrupt), staged_dir(tmp_path / "other"):
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    with pytest.raises(OSError), staged_dir(target) as tmp:  # target full: refuse
        (tmp / "g").write_text("2")
    with staged_dir(target, accept_existing=lambda root: (root / "f").is_file()) as tmp:
        (tmp / "g").write_text("2")
    assert [p.name for p in tmp_path.iterdir()] == ["ds"] and [p.name for p in target.iterdir()] == ["f"]
