"""prepare_run_dir under edged.service: systemd creates /run/edge as edge:edge 0750
(RuntimeDirectory=), and the unit's system-call filter (~@privileged) refuses chown with EPERM.
edged must not call chown when the directory has run_dir_group already (the full aarch64
boot found it failing to start on exactly that: "run dir /run/edge: Operation not permitted")."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from edge.transport._zmq import prepare_run_dir


def _refuse_chown(*args: object) -> None:
    raise PermissionError(1, "Operation not permitted")  # what the seccomp filter answers


def test_no_chown_when_the_group_is_already_right(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "run"
    d.mkdir(mode=0o750)
    group = grp.getgrgid(d.stat().st_gid).gr_name
    monkeypatch.setattr(os, "chown", _refuse_chown)
    assert prepare_run_dir(d, group) == d
    assert oct(d.stat().st_mode & 0o777) == "0o750"


def test_chgrp_when_the_group_differs(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir(mode=0o750)
    others = [g for g in os.getgroups() if g != d.stat().st_gid]
    if not others and os.geteuid() != 0:
        pytest.skip("needs a second group to chgrp to (or root)")
    target = others[0] if others else next(g.gr_gid for g in grp.getgrall() if g.gr_gid != d.stat().st_gid)
    prepare_run_dir(d, grp.getgrgid(target).gr_name)
    assert d.stat().st_gid == target
