"""RulesPush options used by edge-sync's fleet path: require_signed, require_newer, source."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.cli import CtlClient
from edge.errors import CtlRefused
from edge.rules import (
    encode_rule_table,
    load_signing_key,
    parse_rule_text,
    sign_table,
    write_key_pair,
)
from edge.runtime import Edged
from edge.wire import CtlOp

pytestmark = pytest.mark.integration

RULE = "- {rule_id: a, rule_content: x > 1, action: alert, priority: 1, sla_threshold: 5}\n"


def table(version: int) -> bytes:
    rs = parse_rule_text(RULE, "r.yaml")
    return encode_rule_table(dataclasses.replace(rs, version=version))


def audits(d: Edged, kind: str) -> list[dict[str, Any]]:
    assert d.writer is not None and d.store is not None
    d.writer.flush()
    return [a for a in d.store.iter_audit() if a["kind"] == kind]


def test_require_newer_refuses_an_unsigned_table_instead_of_renumbering(
    edged: Edged,
) -> None:
    with CtlClient(edged.cfg.run_dir) as ctl:
        active = ctl.request(CtlOp.STATUS)["rules"]["version"]
        assert active >= 1
        with pytest.raises(CtlRefused, match="not newer than the active version"):
            ctl.request(
                CtlOp.RULES_PUSH,
                {"require_newer": True, "source": "edge-sync device.b1"},
                table(active),
            )
        assert ctl.request(CtlOp.STATUS)["rules"]["version"] == active
        # without the option the same table is renumbered and activated, as before
        assert ctl.request(CtlOp.RULES_PUSH, blob=table(active))["version"] == active + 1
        r = ctl.request(CtlOp.RULES_PUSH, {"require_newer": True, "source": "s"}, table(50))
        assert r["version"] == 50
    refused = audits(edged, "rules_refused")
    assert [a.get("source") for a in refused] == ["edge-sync device.b1"]
    activated = audits(edged, "rules_activated")
    assert [a.get("source") for a in activated] == [None, "s"]


def test_require_signed_refuses_unsigned_even_when_the_config_allows_it(
    make_cfg: Callable[..., Any], tmp_path: Path
) -> None:
    key_path, pub = write_key_pair(tmp_path / "ops")
    cfg = make_cfg(rules_trusted_keys=str(pub))
    assert not cfg.rules_require_signed
    with Edged(cfg) as d, CtlClient(cfg.run_dir) as ctl:
        with pytest.raises(CtlRefused, match="unsigned"):
            ctl.request(CtlOp.RULES_PUSH, {"require_signed": True}, table(10))
        assert d.loop is not None and d.loop.table.version == 1
        signed = sign_table(table(10), load_signing_key(key_path))
        assert ctl.request(CtlOp.RULES_PUSH, {"require_signed": True}, signed)["version"] == 10


@pytest.mark.parametrize("args", [{"require_newer": "yes"}, {"require_signed": 1}, {"source": 3}])
def test_bad_option_values_are_bad_requests(edged: Edged, args: dict[str, Any]) -> None:
    with CtlClient(edged.cfg.run_dir) as ctl, pytest.raises(CtlRefused, match="RulesPush"):
        ctl.request(CtlOp.RULES_PUSH, args, table(99))
    assert edged.loop is not None and edged.loop.table.version == 1
