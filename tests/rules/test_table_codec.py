"""RuleSet <-> RuleTable: the round trip over random well-formed IR, and each refusal."""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import flatbuffers
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import RuleTableError, VerifyError
from edge.rules import Condition, Node, NodeOp, Rule, RuleSet, Selector
from edge.rules import _table_codec as codec
from edge.rules._ir import AGGREGATES, COMPARISONS, threshold
from edge.rules._signing import key_id, sign_table
from edge.rules._table_codec import (
    SCHEMA_VERSION,
    TableInfo,
    decode_rule_table,
    decode_table_with_info,
    encode_rule_table,
    rule_json,
)
from edge.wire import Action, MessageType, Param, encode_heartbeat, fb, verify
from edge.wire import Heartbeat as HeartbeatMsg
from edge.wire._generated import layout

MS, S = 1_000_000, 1_000_000_000
I63 = 1 << 62  # comfortably inside the i64 fields


def test_node_ops_match_the_generated_constants() -> None:
    generated = {k.upper(): v for k, v in vars(fb.NodeOp.NodeOp).items() if not k.startswith("_")}
    assert {op.name: op.value for op in NodeOp} == generated


def test_node_struct_format_matches_the_schema() -> None:
    node = layout.STRUCTS["Node"]
    assert (node.size, node.align) == (codec.NODE.size, 8)
    b = flatbuffers.Builder(0)
    fb.Condition.StartNodesVector(b, 1)
    fb.Node.CreateNode(b, -5, 2.5, 513, 17)
    b.EndVector()
    vector = bytes(b.Bytes[b.Head() :])  # the length, then the one node
    assert codec.NODE.unpack(vector[4:28]) == (-5, 2.5, 513, 17)


# --- strategies: well-formed IR ----------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
name = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
window = st.integers(1, I63)

selectors = st.lists(
    st.builds(
        Selector,
        name,
        st.dictionaries(name, text, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    ),
    min_size=1,
    max_size=4,
).map(tuple)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    sels = draw(selectors)
    index = st.integers(0, len(sels) - 1)

    def numeric(d: st.DrawFn) -> list[Node]:
        kind = d(st.sampled_from(["const", "latest", "agg"]))
        if kind == "const":
            return [Node(NodeOp.CONST, value=d(finite))]
        if kind == "latest":
            return [Node(NodeOp.LATEST, sel=d(index))]
        op = d(st.sampled_from(sorted(AGGREGATES)))
        return [Node(op, sel=d(index), window_ns=d(window))]

    def boolean(d: st.DrawFn, depth: int) -> list[Node]:
        kind = d(st.sampled_from(["cmp", "absent"] + (["and", "or", "not"] if depth < 4 else [])))
        if kind == "cmp":
            op = d(st.sampled_from(sorted(COMPARISONS)))
            return [*numeric(d), *numeric(d), Node(op)]
        if kind == "absent":
            return [Node(NodeOp.ABSENT, sel=d(index), window_ns=d(window))]
        if kind == "not":
            return [*boolean(d, depth + 1), Node(NodeOp.NOT)]
        op = NodeOp.AND if kind == "and" else NodeOp.OR
        return [*boolean(d, depth + 1), *boolean(d, depth + 1), Node(op)]

    nodes = boolean(draw, 0)
    # the IR lists exactly the selectors its nodes use, in a compact numbering
    series_ops = AGGREGATES | {NodeOp.LATEST, NodeOp.ABSENT}
    used = sorted({n.sel for n in nodes if n.op in series_ops})
    renumber = {old: new for new, old in enumerate(used)}
    nodes = [
        dataclasses.replace(n, sel=renumber[n.sel]) if n.op in series_ops else n for n in nodes
    ]
    return Condition(tuple(sels[i] for i in used), tuple(nodes), draw(st.integers(0, I63)))


param_values = st.one_of(finite, st.integers(-(1 << 53), 1 << 53), st.booleans(), text)
actions = st.sampled_from([a for a in Action if a is not Action.UNSPECIFIED])


@st.composite
def rulesets(draw: st.DrawFn) -> RuleSet:
    customs = tuple(draw(st.lists(name, max_size=3, unique=True)))
    ids = draw(st.lists(name, min_size=0, max_size=5, unique=True))

    def act(allow_none: bool) -> tuple[Action, str]:
        a = draw(actions if not allow_none else st.sampled_from(Action))
        if a is Action.CUSTOM:
            if not customs:
                return (Action.UNSPECIFIED, "") if allow_none else (Action.ALERT, "")
            return a, draw(st.sampled_from(customs))
        return a, ""

    rules = []
    for rid in ids:
        action, custom = act(False)
        escalate, esc_custom = act(True)
        keys = draw(st.lists(name, max_size=3, unique=True))
        rules.append(
            Rule(
                rule_id=rid,
                condition=draw(conditions()),
                action=action,
                custom_action=custom,
                priority=draw(st.integers(0, 255)),
                sla_ms=draw(st.floats(0, 1e9)),
                name=draw(text),
                content=draw(text),
                agents=tuple(draw(st.lists(name, max_size=3))),
                params=tuple(Param(k, draw(param_values)) for k in keys),
                cooldown_ns=draw(st.integers(0, I63)),
                escalate=escalate,
                escalate_custom=esc_custom,
            )
        )
    return RuleSet(
        tuple(rules),
        version=draw(st.integers(0, (1 << 64) - 1)),
        description=draw(text),
        custom_actions=customs,
        created_at_unix_ms=draw(st.integers(1, I63)),
    )


@settings(max_examples=200, deadline=None)
@given(rulesets(), st.integers(0, I63), st.lists(name, max_size=3).map(tuple))
def test_round_trip(rs: RuleSet, expires: int, scope: tuple[str, ...]) -> None:
    blob = encode_rule_table(rs, expires_at_unix_ms=expires, scope=scope)
    assert verify(blob) is MessageType.RULE_TABLE
    got, info = decode_table_with_info(blob)
    assert got == rs
    if not any(type(p.value) is int for r in rs.rules for p in r.params):
        assert got.content_hash == rs.content_hash
    assert info == TableInfo(
        SCHEMA_VERSION, rs.version, got.content_hash, rs.created_at_unix_ms, expires, scope, None
    )
    assert decode_rule_table(blob) == rs


def test_round_trip_of_a_signed_table() -> None:
    rs = small()
    key = nacl.signing.SigningKey.generate()
    signed = sign_table(encode_rule_table(rs), key)
    got, info = decode_table_with_info(
        signed, trusted_keys={key_id(key.verify_key): key.verify_key}, require_signed=True
    )
    assert got == rs and info.signed and info.key_id == key_id(key.verify_key)


def test_integer_params_travel_as_doubles_under_a_matching_hash() -> None:
    r = dataclasses.replace(small().rules[0], params=(Param("rate", 2), Param("on", True)))
    got = decode_rule_table(encode_rule_table(RuleSet((r,), created_at_unix_ms=1)))
    assert got.rules[0].params == (Param("rate", 2.0), Param("on", True))
    assert type(got.rules[0].params[0].value) is float


def test_created_at_defaults_to_now_and_keeps_a_ruleset_s_own() -> None:
    rs = dataclasses.replace(small(), created_at_unix_ms=0)
    assert decode_rule_table(encode_rule_table(rs, created_at_unix_ms=42)).created_at_unix_ms == 42
    assert decode_rule_table(encode_rule_table(rs)).created_at_unix_ms > 1_600_000_000_000
    own = dataclasses.replace(rs, created_at_unix_ms=7)
    assert decode_rule_table(encode_rule_table(own, created_at_unix_ms=42)).created_at_unix_ms == 7


def test_rule_json_carries_the_canonical_condition() -> None:
    r = small().rules[0]
    doc = rule_json(r)
    assert doc["condition"] == 'zz_metric{host="a"} > 12345.678 for 5s'
    assert doc["rule_content"] == "zz_metric{host='a'}>12345.678 for 5s"
    assert doc["params"] == {"rate": 0.5} and doc["escalate"] == "safe_state"


# --- refusals ----------------------------------------------------------------------------------

CONST = 12345.678  # a value to find the CONST node by in the buffer


def small(*extra: Rule) -> RuleSet:
    cond = threshold("zz_metric", ">", CONST, labels={"host": "a"}, hold_ns=5 * S)
    r = Rule(
        "dup_rule_A",
        cond,
        Action.ALERT,
        7,
        10.0,
        content="zz_metric{host='a'}>12345.678 for 5s",
        params=(Param("rate", 0.5),),
        escalate=Action.SAFE_STATE,
    )
    return RuleSet((r, *extra), version=3, created_at_unix_ms=1000)


def refused(buf: bytes | bytearray, match: str, **kw: Any) -> str:
    with pytest.raises(RuleTableError, match=match) as info:
        decode_rule_table(bytes(buf), **kw)
    return str(info.value)


def node_at(blob: bytes, index: int) -> int:
    """Byte offset of nodes[index] of the (only) CONST-bearing condition: LATEST, CONST, GT."""
    const = blob.index(struct.pack("<d", CONST)) - 8  # Node: window_ns, value, sel, op
    return const + 24 * (index - 1)


def patched(blob: bytes, at: int, fmt: str, value: object) -> bytes:
    out = bytearray(blob)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def test_every_truncation_is_refused() -> None:
    key = nacl.signing.SigningKey.generate()
    keys = {key_id(key.verify_key): key.verify_key}
    plain = encode_rule_table(small())
    for full in (plain, sign_table(plain, key)):
        for k in range(len(full)):
            try:
                got = decode_rule_table(full[:k], trusted_keys=keys)
            except RuleTableError:
                continue
            # only trailing padding may go without changing the message
            assert full[k:] == bytes(len(full) - k), f"prefix {k} of {len(full)} accepted"
            assert got == small()


def test_any_byte_flip_of_a_signed_table_is_refused_or_harmless() -> None:
    key = nacl.signing.SigningKey.generate()
    keys = {key_id(key.verify_key): key.verify_key}
    plain = encode_rule_table(small())
    signed = sign_table(plain, key)
    start = signed.index(plain)
    for at in range(len(signed)):
        buf = bytearray(signed)
        buf[at] ^= 0x01
        try:
            got = decode_rule_table(bytes(buf), trusted_keys=keys)
        except RuleTableError as exc:
            if start <= at < start + len(plain):
                assert "signature does not verify" in str(exc)
            continue
        assert got == small(), f"byte {at} changed the rules without being noticed"
        assert not start <= at < start + len(plain)


def test_a_changed_rule_fails_the_content_hash() -> None:
    blob = encode_rule_table(small())
    refused(patched(blob, node_at(blob, 1) + 8, "<d", 99.0), "content hash does not match")
    at = blob.index(b"dup_rule_A")
    refused(blob[:at] + b"dup_rule_B" + blob[at + 10 :], "content hash does not match")
    digest = blob.index(small().content_hash)
    refused(patched(blob, digest, "<B", blob[digest] ^ 1), "content hash does not match")


def test_display_text_that_does_not_match_the_ir_is_refused() -> None:
    blob = encode_rule_table(small())
    shown = b'zz_metric{host="a"} > 12345.678 for 5s'
    at = blob.index(shown)
    edited = blob[:at] + shown.replace(b"12345", b"99999") + blob[at + len(shown) :]
    refused(edited, "display text .* does not match what it evaluates")


def test_unsigned_when_signatures_are_required() -> None:
    refused(encode_rule_table(small()), "unsigned rule table refused.*--sign", require_signed=True)


def test_signed_by_an_unknown_key_or_with_no_trusted_keys() -> None:
    signer, other = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    signed = sign_table(encode_rule_table(small()), signer)
    kid = key_id(signer.verify_key).hex()
    refused(signed, f"signed by key {kid}, which is not trusted here \\(trusted: none\\)")
    msg = refused(signed, "not trusted", trusted_keys={key_id(other.verify_key): other.verify_key})
    assert key_id(other.verify_key).hex() in msg


def test_a_key_id_that_names_a_trusted_key_but_the_signature_is_another_s() -> None:
    signer, trusted = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    signed = bytearray(sign_table(encode_rule_table(small()), signer))
    at = bytes(signed).index(key_id(signer.verify_key))
    signed[at : at + 8] = key_id(trusted.verify_key)
    refused(
        signed,
        "signature does not verify",
        trusted_keys={key_id(trusted.verify_key): trusted.verify_key},
    )


def test_malformed_envelope_fields() -> None:
    b = flatbuffers.Builder(0)
    sig, kid = b.CreateByteVector(bytes(64)), b.CreateByteVector(bytes(4))
    inner = b.CreateByteVector(encode_rule_table(small()))
    fb.SignedRuleTable.Start(b)
    fb.SignedRuleTable.AddTable(b, inner)
    fb.SignedRuleTable.AddKeyId(b, kid)
    fb.SignedRuleTable.AddSignature(b, sig)
    b.Finish(fb.SignedRuleTable.End(b), MessageType.SIGNED_RULE_TABLE.value)
    refused(bytes(b.Output()), "4-byte key_id and a 64-byte signature")


@pytest.mark.parametrize("version, word", [(SCHEMA_VERSION + 1, "newer"), (1, "older")])
def test_another_schema_version_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, version: int, word: str
) -> None:
    monkeypatch.setattr(codec, "SCHEMA_VERSION", version)
    blob = encode_rule_table(small())
    monkeypatch.undo()
    refused(blob, f"schema_version {version} is {word} than this runtime")


def test_a_newer_table_is_named_even_when_this_schema_cannot_verify_it() -> None:
    b = flatbuffers.Builder(0)
    b.StartObject(7)
    b.PrependUint16Slot(0, SCHEMA_VERSION + 5, 0)
    b.PrependUint32Slot(6, 12345, 0)  # where this version expects the rules vector's offset
    b.Finish(b.EndObject(), MessageType.RULE_TABLE.value)
    buf = bytes(b.Output())
    with pytest.raises(VerifyError):
        verify(buf)
    refused(buf, f"schema_version {SCHEMA_VERSION + 5} is newer.*upgrade")


def test_unknown_node_op_is_refused() -> None:
    blob = encode_rule_table(small())
    refused(patched(blob, node_at(blob, 2) + 18, "<B", 200), "node 2 has op 200")


@pytest.mark.parametrize(
    "index, offset, fmt, value, match",
    [
        (0, 16, "<H", 7, "selector 7 out of range"),  # LATEST of a selector that is not there
        (2, 18, "<B", int(NodeOp.AND), "AND needs two conditions"),  # and of two numbers
        (2, 18, "<B", int(NodeOp.CONST), "does not reduce to one condition"),
        (0, 18, "<B", int(NodeOp.AVG), "AVG needs a positive window"),
    ],
)
def test_malformed_ir_that_verifies_structurally_is_refused(
    index: int, offset: int, fmt: str, value: int, match: str
) -> None:
    blob = encode_rule_table(small())
    bad = patched(blob, node_at(blob, index) + offset, fmt, value)
    assert verify(bad) is MessageType.RULE_TABLE
    assert "malformed condition" in refused(bad, match)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_constant_that_is_not_finite_is_refused(value: float) -> None:
    blob = encode_rule_table(small())
    refused(
        patched(blob, node_at(blob, 1) + 8, "<d", value),
        f"node 1: constant {value} is not a finite",
    )


def test_duplicate_rule_ids_are_refused() -> None:
    second = dataclasses.replace(small().rules[0], rule_id="dup_rule_B")
    blob = encode_rule_table(small(second))
    at = blob.index(b"dup_rule_B")
    refused(blob[:at] + b"dup_rule_A" + blob[at + 10 :], "rule #1: duplicate rule_id 'dup_rule_A'")


def test_bad_action_enum_is_refused_by_the_verifier() -> None:
    blob = encode_rule_table(small())
    rule = fb.RuleTable.RuleTable.GetRootAs(blob, 0).Rules(0)
    at = rule._tab.Pos + rule._tab.Offset(4 + 2 * 3)  # Rule.action is field 3
    assert blob[at] == Action.ALERT
    refused(patched(blob, at, "<B", 99), r"failed verification.*action.*99")


@pytest.mark.parametrize(
    "buf, match",
    [
        (b"", "not a rule table"),
        (b"\x00" * 16, "not a rule table"),
        (encode_heartbeat(HeartbeatMsg(1, 2, 3)), r"not a rule table \(file identifier b'EHBT'"),
    ],
)
def test_other_buffers_are_not_rule_tables(buf: bytes, match: str) -> None:
    refused(buf, match)


def test_encode_refuses_what_every_edged_would_refuse() -> None:
    r = small().rules[0]
    cases: list[tuple[RuleSet, str]] = [
        (small(r), "duplicate rule_id"),
        (
            RuleSet((dataclasses.replace(r, action=Action.CUSTOM, custom_action="x"),)),
            "custom action 'x' is not declared",
        ),
        (RuleSet((dataclasses.replace(r, action=Action.UNSPECIFIED),)), "has no action"),
        (RuleSet((dataclasses.replace(r, priority=256),)), "priority 256"),
        (RuleSet((dataclasses.replace(r, sla_ms=math.inf),)), "sla_threshold"),
        (RuleSet((dataclasses.replace(r, cooldown_ns=1 << 63),)), "cooldown"),
        (RuleSet((dataclasses.replace(r, rule_id=""),)), "empty rule_id"),
        (RuleSet((r,), version=-1), "version -1 is out of range"),
    ]
    for bad in (math.nan, math.inf):  # not even an IR: a Condition refuses a non-finite constant
        with pytest.raises(ValueError, match="not a finite number"):
            dataclasses.replace(
                r.condition,
                nodes=(r.condition.nodes[0], Node(NodeOp.CONST, value=bad), r.condition.nodes[2]),
            )
    for rs, match in cases:
        with pytest.raises(RuleTableError, match=match):
            encode_rule_table(rs)


# --- expiry and scope --------------------------------------------------------------------------


def test_check_applies() -> None:
    _, info = decode_table_with_info(
        encode_rule_table(small(), expires_at_unix_ms=2_000, scope=["dev-7", "line-3"])
    )
    info.check_applies(now_unix_ms=1_999, device_id="dev-7")
    info.check_applies(now_unix_ms=1_000, device_id="dev-9", groups=["line-3"])
    with pytest.raises(RuleTableError, match="expired at 1970-01-01T00:00:02Z"):
        info.check_applies(now_unix_ms=2_000, device_id="dev-7")
    with pytest.raises(RuleTableError, match="is for dev-7, line-3, not for device 'dev-9'"):
        info.check_applies(now_unix_ms=0, device_id="dev-9", groups=["line-4"])
    _, anywhere = decode_table_with_info(encode_rule_table(small()))
    anywhere.check_applies(now_unix_ms=1 << 60, device_id="any")
    assert anywhere.to_json()["expires_at_unix_ms"] == 0 and anywhere.to_json()["key_id"] is None
