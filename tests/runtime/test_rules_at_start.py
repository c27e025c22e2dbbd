"""``--rules FILE`` at start is never silently ignored: the file wins and becomes a new
version when its rules differ from the stored table's, unless the stored one is signed; one
log line says which table runs and why."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.cli import CtlClient
from edge.rules import load_signing_key, sign_table, write_key_pair
from edge.runtime import Edged
from edge.wire import CtlOp

from ..sync.tables import table

EDITED = """\
- rule_id: cpu_hot
  rule_content: cpu_usage > 0.8
  action: restart_agent
  priority: 8
  sla_threshold: 10
"""


def _start(cfg: Any, caplog: pytest.LogCaptureFixture) -> tuple[int, int | None, str]:
    """Open and close edged once: the active version, last-known-good, and the log."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge"), Edged(cfg) as d, CtlClient(
        cfg.run_dir
    ) as ctl:
        assert d.loop is not None
        listed = ctl.request(CtlOp.RULES_LIST)
        return listed["active"], listed["lkg"], caplog.text


def test_an_edited_file_becomes_a_new_version_and_the_log_says_why(
    make_cfg: Callable[..., Any], rules_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg()
    active, lkg, text = _start(cfg, caplog)
    assert (active, lkg) == (1, None) and f"activated {rules_file} as rule table version 1" in text
    active, lkg, text = _start(cfg, caplog)  # same file again: the stored table, said so
    assert (active, lkg) == (1, None) and f"{rules_file} is unchanged" in text
    rules_file.write_text("# a comment changes the bytes, not the rules\n" + rules_file.read_text())
    active, lkg, text = _start(cfg, caplog)
    assert (active, lkg) == (1, None) and "the same rules as" in text
    rules_file.write_text(EDITED)
    active, lkg, text = _start(cfg, caplog)
    assert (active, lkg) == (2, 1)
    assert "rules differ from the stored active table version 1" in text
    # after a restart without --rules the stored table runs, and last-known-good is still known
    active, lkg, text = _start(make_cfg(rules_file=None), caplog)
    assert (active, lkg) == (2, 1) and "running the stored active rule table version 2" in text


def test_a_file_with_mistakes_fails_the_start(
    make_cfg: Callable[..., Any], rules_file: Path
) -> None:
    from edge.errors import RuleError

    rules_file.write_text(EDITED.replace("rule_content", "rule_contnet"))
    with pytest.raises(RuleError, match="rule_contnet"):
        Edged(make_cfg()).open().close()


def test_a_signed_stored_table_is_kept_with_a_warning_naming_the_conflict(
    make_cfg: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_path, pub = write_key_pair(tmp_path / "ops")
    cfg = make_cfg(rules_trusted_keys=str(pub))
    with Edged(cfg), CtlClient(cfg.run_dir) as ctl:
        ctl.request(CtlOp.RULES_PUSH, blob=sign_table(table(50), load_signing_key(key_path)))
    active, _, text = _start(cfg, caplog)
    assert active == 50
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "which is signed" in warning[0].getMessage()
