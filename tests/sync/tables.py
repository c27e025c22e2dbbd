"""Signed rule tables for the sync tests: real keys, real compiled tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import nacl.signing

from edge.rules import encode_rule_table, parse_rule_text, sign_table

RULE = "- {{rule_id: {rid}, rule_content: x > 1, action: alert, priority: 1, sla_threshold: 5}}\n"


def table(
    version: int,
    *,
    rule_id: str = "fleet_rule",
    scope: Sequence[str] = (),
    expires_at_unix_ms: int = 0,
) -> bytes:
    """An unsigned RuleTable of one rule (its id tells tables apart in `rules list`)."""
    rs = dataclasses.replace(parse_rule_text(RULE.format(rid=rule_id), "r.yaml"), version=version)
    return encode_rule_table(rs, expires_at_unix_ms=expires_at_unix_ms, scope=tuple(scope))


def signed(key: nacl.signing.SigningKey, version: int, **kw: object) -> bytes:
    return sign_table(table(version, **kw), key)  # type: ignore[arg-type]


def tampered(blob: bytes) -> bytes:
    """One byte of the signed payload flipped (inside a rule id, so the buffer stays well
    formed and only the signature can tell)."""
    i = blob.index(b"fleet_rule")
    return blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]
