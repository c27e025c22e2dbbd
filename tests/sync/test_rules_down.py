"""Rules down without a server: the checks, precedence and the version rule as pure functions,
and the component against a fake edged (the ctl seam) on virtual time."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import nacl.signing
import pytest

from edge.clock import MockClock
from edge.errors import CtlRefused, NotRunningError, RuleTableError
from edge.rules import key_id
from edge.sync import Backoff
from edge.sync._rules_down import (
    Active,
    Entry,
    RulesDown,
    Verified,
    check_table,
    decide,
    rule_keys,
)

from .tables import signed, table, tampered

KEY = nacl.signing.SigningKey.generate()
OTHER = nacl.signing.SigningKey.generate()
TRUSTED = {key_id(KEY.verify_key): KEY.verify_key}
NOW = 1_700_000_000_000
ORDER = rule_keys("b1", ["line-3", "plant"])


def check(value: bytes, device: str = "b1", groups: tuple[str, ...] = ("line-3", "plant")) -> Any:
    return check_table(
        value, trusted_keys=TRUSTED, device_id=device, groups=groups, now_unix_ms=NOW
    )


def test_keys_in_precedence_order() -> None:
    assert ORDER == ("device.b1", "group.line-3", "group.plant")
    assert rule_keys("b1", ["a", "a"]) == ("device.b1", "group.a")


def test_a_valid_table_passes() -> None:
    rs, info = check(signed(KEY, 7, scope=["plant"], expires_at_unix_ms=NOW + 1))
    assert rs.version == 7 and info.key_id == key_id(KEY.verify_key)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (table(7), "unsigned rule table refused"),
        (b"garbage!" * 4, "not a signed rule table"),
        (b"", "not a signed rule table"),
        (signed(OTHER, 7), "not trusted here"),
        (tampered(signed(KEY, 7)), "signature does not verify"),
        (signed(KEY, 7, expires_at_unix_ms=NOW), "expired"),
        (signed(KEY, 7, scope=["b2", "line-4"]), "not for device 'b1'"),
    ],
    ids=["unsigned", "garbage", "empty", "unknown-key", "tampered", "expired", "other-device"],
)
def test_every_bad_table_is_refused_with_its_reason(value: bytes, reason: str) -> None:
    with pytest.raises(RuleTableError, match=reason):
        check(value)


def entries(**tables: bytes) -> dict[str, Entry]:
    out = {}
    for i, (name, blob) in enumerate(tables.items()):
        key = name.replace("_", ".", 1).replace("_", "-")
        out[key] = Entry(key, i + 1, blob, NOW)
    return out


def checker(e: Entry) -> Verified:
    rs, info = check(e.value)
    return Verified(e, rs, info)


def hash_of(blob: bytes) -> str:
    return str(check(blob)[1].content_hash.hex())


def test_device_key_wins_over_groups_and_the_first_group_over_later_ones() -> None:
    es = entries(device_b1=signed(KEY, 5), group_line_3=signed(KEY, 9), group_plant=signed(KEY, 8))
    d = decide(ORDER, es, checker, Active(1, ""), NOW)
    assert d.action == "activate" and d.winner is not None and d.winner.entry.key == "device.b1"
    del es["device.b1"]
    d = decide(ORDER, es, checker, Active(1, ""), NOW)
    assert d.winner is not None and d.winner.entry.key == "group.line-3" and d.winner.version == 9


def test_an_invalid_device_table_is_refused_and_no_group_table_takes_over() -> None:
    es = entries(device_b1=signed(OTHER, 50), group_plant=signed(KEY, 8))
    d = decide(ORDER, es, checker, Active(1, ""), NOW)
    assert d.action == "refuse" and d.winner is None
    assert [(r.key, r.version) for r in d.refused] == [("device.b1", None)]
    assert "not trusted" in d.refused[0].reason
    # a bad table under a lower-precedence key is reported, and changes nothing
    es = entries(device_b1=signed(KEY, 5), group_plant=table(8))
    d = decide(ORDER, es, checker, Active(1, ""), NOW)
    assert d.action == "activate" and d.winner is not None and d.winner.entry.key == "device.b1"
    assert [r.key for r in d.refused] == ["group.plant"]


def test_the_version_rule_applies_to_the_winner_only_and_never_falls_through() -> None:
    dev, grp = signed(KEY, 5), signed(KEY, 9)
    es = entries(device_b1=dev, group_plant=grp)
    # the device table is what runs: nothing to do, the newer group table does not override it
    d = decide(ORDER, es, checker, Active(5, hash_of(dev)), NOW)
    assert d.action == "current" and d.refused == ()
    # an older device table (a replay) is a rollback: refused, and not replaced by the group
    d = decide(ORDER, es, checker, Active(6, "x"), NOW)
    assert d.action == "refuse" and d.winner is not None and d.winner.entry.key == "device.b1"
    assert "not newer than the active version 6" in d.refused[-1].reason
    # same version, other content
    d = decide(ORDER, es, checker, Active(5, "other"), NOW)
    assert d.action == "refuse" and "different content" in d.refused[-1].reason


def test_deleting_the_device_key_falls_back_only_to_a_newer_group_table() -> None:
    es = entries(group_plant=signed(KEY, 4))
    d = decide(ORDER, es, checker, Active(5, "device table"), NOW)
    assert d.action == "refuse" and d.winner is not None and d.winner.entry.key == "group.plant"
    es = entries(group_plant=signed(KEY, 6))
    assert decide(ORDER, es, checker, Active(5, "device table"), NOW).action == "activate"


def test_without_edged_a_winner_waits_and_nothing_at_all_is_none() -> None:
    assert decide(ORDER, entries(device_b1=signed(KEY, 5)), checker, None, NOW).action == "wait"
    assert decide(ORDER, {}, checker, Active(1, ""), NOW).action == "none"


class FakeEdged:
    """The ctl seam: a table is active when pushed; refuses what real edged would."""

    def __init__(self) -> None:
        self.up = False
        self.version, self.hash = 1, "h1"
        self.pushes: list[dict[str, Any]] = []

    def status(self) -> dict[str, Any]:
        if not self.up:
            raise NotRunningError("edged is not running")
        return {"rules": {"version": self.version, "hash": self.hash}}

    def push(self, blob: bytes, args: dict[str, Any]) -> dict[str, Any]:
        if not self.up:
            raise NotRunningError("edged is not running")
        self.pushes.append(args)
        rs, info = check(blob)
        if rs.version <= self.version:
            raise CtlRefused("rule table refused: not newer")
        self.version, self.hash = rs.version, info.content_hash.hex()
        return {"version": self.version, "hash": self.hash}


def test_component_keeps_a_table_pending_while_edged_is_down_and_activates_it_later() -> None:
    edged, audits, clock = FakeEdged(), [], MockClock(wall_start_ms=NOW)
    rd = RulesDown(
        device_id="b1",
        groups=["line-3"],
        trusted_keys=TRUSTED,
        edged=edged,
        audit=lambda kind, **f: audits.append((kind, f)),
        clock=clock,
        backoff=Backoff(0.1, 0.4, rng=random.Random(1)),
    )

    async def scenario() -> None:
        rd.on_update("device.b1", 3, signed(KEY, 9))
        delays = [await rd.step() for _ in range(6)]
        assert all(d is not None and 0.05 <= d <= 0.4 for d in delays)  # bounded
        assert delays[-1] is not None and delays[-1] >= 0.2  # grown to the cap
        assert rd.pending is not None and rd.pending["version"] == 9
        edged.up = True
        assert await rd.step() is None
        assert edged.version == 9 and rd.pending is None
        assert rd.last_applied is not None and rd.last_applied["key"] == "device.b1"
        assert edged.pushes == [
            {"require_signed": True, "require_newer": True,
             "source": "edge-sync device.b1 revision 3"}
        ]  # fmt: skip
        rd.on_update("group.line-3", 4, signed(OTHER, 99))
        assert await rd.step() is None and edged.version == 9
        assert rd.last_refused is not None and rd.last_refused["key"] == "group.line-3"
        await rd.step()  # reported once per key revision
        assert [k for k, _ in audits] == ["rules_refused"]
        assert audits[0][1]["source"] == "edge-sync" and "not trusted" in audits[0][1]["reason"]

    asyncio.run(scenario())


def test_component_reports_an_edged_refusal_without_auditing_it_twice() -> None:
    edged, audits = FakeEdged(), []
    edged.up = True
    rd = RulesDown(
        device_id="b1",
        groups=[],
        trusted_keys=TRUSTED,
        edged=edged,
        audit=lambda kind, **f: audits.append(kind),
        clock=MockClock(wall_start_ms=NOW),
    )

    async def scenario() -> None:
        rd.on_update("device.b1", 1, signed(KEY, 5))
        edged.version = 7  # activated behind edge-sync's back between its status and push
        real_status = edged.status
        edged.status = lambda: {"rules": {"version": 1, "hash": "h"}}  # type: ignore[method-assign]
        assert await rd.step() is None
        edged.status = real_status  # type: ignore[method-assign]
        assert rd.last_refused is not None and rd.last_refused["by"] == "edged"
        assert audits == []  # edged audited it
        assert await rd.step() is None and len(edged.pushes) == 1

    asyncio.run(scenario())
