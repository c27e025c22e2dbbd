"""RuleSet <-> RuleTable FlatBuffer, signed or not (cold path: generated code is fine here).

The board never parses rule text: edgectl compiles the file, edged verifies the buffer and
rebuilds the model from the normalised IR (edge.rules._ir). What travels::

    "ESRT" SignedRuleTable                     (optional: edge.rules._signing)
      table ------------------------------+    the exact RuleTable bytes, Ed25519-signed
      key_id (8 B), signature (64 B)      |
                                          v
    "ERTB" RuleTable
      schema_version (always field 0)  version  content_hash (SHA-256)  created_at_unix_ms
      expires_at_unix_ms (0 = never)   scope [device ids / groups; empty = any]
      description  custom_actions [names]
      rules [Rule]
        rule_id  name  content  action/custom_action  priority  sla_ms  agents [globs]
        params [Param]  cooldown_ns  escalate/escalate_custom
        condition Condition
          selectors [Selector {metric, labels [Label]}]
          nodes [Node]          postfix, one 24-byte struct each:
                                +-----------+---------+-------+----+-----+
                                | window_ns | value   | sel   | op | pad |
                                | i64       | f64     | u16   | u8 | 5 B |
                                +-----------+---------+-------+----+-----+
          hold_ns               ``C for D``: D in ns
          text                  canonical Condition.text(); must match the nodes

decode_rule_table() refuses, with RuleTableError saying what and what to do: a buffer that is
neither; an unsigned table when signatures are required; a signature by an untrusted key or
one that does not verify; another schema_version; anything that fails structural verification
(edge.wire.verify: bounds, UTF-8, required fields, Action/ParamKind values); a NodeOp value
that does not exist; a malformed IR (edge.rules._ir.check_postfix); display text that does not
match the IR; rule fields out of range; duplicate rule ids; a content hash that does not match.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import time
from collections.abc import Iterable, Sequence
from typing import Any

import flatbuffers

from ..errors import EdgeError, RuleTableError
from ..wire import Action, MessageType, Param, ParamKind, action_name, fb, message_type, verify
from ._ir import Condition, Node, NodeOp, Selector
from ._model import Rule, RuleSet
from ._signing import TrustedKeys, _ubytes, open_signed_table

SCHEMA_VERSION = 3
"""3: rules gain target, board, rearm (written always). 2: the IR (selectors + postfix nodes),
still read: its rules have none of them. 1 (threshold-only conditions) is no longer read."""
READABLE_SCHEMA_VERSIONS = (2, 3)
MAX_TABLE_BYTES = 64 << 20

_I64 = (-(1 << 63), (1 << 63) - 1)
_U64 = (0, (1 << 64) - 1)
_MAX_SELECTORS = 1 << 16  # Node.sel is a ushort
_CONTENT_HASH = 2  # RuleTable field id
_NODES_FIELD = 4 + 2 * 1  # vtable offset of Condition.nodes (field id 1)
NODE = struct.Struct("<qdHB5x")
"""One Node struct: window_ns, value, sel, op, padding to 24 bytes (tests pin it to the schema)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TableInfo:
    """What a RuleTable says about itself, beyond its rules (decode_table_with_info())."""

    schema_version: int
    version: int
    content_hash: bytes
    """SHA-256 of the normalised rules (RuleSet.content_hash), checked on decode."""
    created_at_unix_ms: int
    expires_at_unix_ms: int = 0
    """Wall-clock ms after which the table must not be activated; 0 = never."""
    scope: tuple[str, ...] = ()
    """Device ids and group names the table is for; empty = any device."""
    key_id: bytes | None = None
    """The id of the trusted key whose signature verified; None for an unsigned table."""

    @property
    def signed(self) -> bool:
        return self.key_id is not None

    def check_applies(
        self, *, now_unix_ms: int, device_id: str = "", groups: Iterable[str] = ()
    ) -> None:
        """Raise RuleTableError when the table has expired at ``now_unix_ms`` (wall clock) or
        its scope names neither ``device_id`` nor any of ``groups``."""
        if self.expires_at_unix_ms and now_unix_ms >= self.expires_at_unix_ms:
            raise RuleTableError(
                f"rule table version {self.version} expired at {_iso(self.expires_at_unix_ms)} "
                f"(now {_iso(now_unix_ms)}); compile and sign a new one"
            )
        groups = tuple(groups)
        if self.scope and device_id not in self.scope and not set(groups) & set(self.scope):
            raise RuleTableError(
                f"rule table version {self.version} is for {', '.join(self.scope)}, not for "
                f"device {device_id!r} (groups: {', '.join(groups) or 'none'})"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "version": self.version,
            "hash": self.content_hash.hex(),
            "created_at_unix_ms": self.created_at_unix_ms,
            "expires_at_unix_ms": self.expires_at_unix_ms,
            "scope": list(self.scope),
            "key_id": self.key_id.hex() if self.key_id is not None else None,
        }


def _iso(unix_ms: int) -> str:
    """UTC ISO 8601 of a wall-clock ms value; raw ms where the platform's gmtime has no year."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_ms / 1000))
    except (OverflowError, OSError, ValueError):
        return f"{unix_ms} ms after the epoch"


def rule_json(rule: Rule) -> dict[str, Any]:
    """One rule as edgectl shows it and ctl replies carry it (RulesList): the seed's field
    names, plus ``condition``, the canonical text of the compiled IR."""
    return {
        "rule_id": rule.rule_id,
        "rule_name": rule.name,
        "rule_content": rule.content,
        "condition": rule.condition.text(),
        "action": rule.action_name,
        "priority": rule.priority,
        "sla_threshold": rule.sla_ms,
        "agents": list(rule.agents),
        "params": {p.key: p.value for p in rule.params},
        "cooldown_ns": rule.cooldown_ns,
        "escalate": action_name(rule.escalate, rule.escalate_custom)
        if rule.escalate != Action.UNSPECIFIED
        else "",
        "board": rule.board,
        "target": list(rule.target),
        "rearm": rule.rearm.text() if rule.rearm is not None else "",
        "rearm_content": rule.rearm_content,
    }


# --- checks shared by both directions ----------------------------------------------------------


def _check_rule(
    i: int, r: Rule, custom_actions: Sequence[str], schema: int = SCHEMA_VERSION
) -> None:
    """Raise RuleTableError unless the rule's fields are in range and consistent."""
    where = f"rule #{i} {r.rule_id!r}"
    if not r.rule_id:
        raise RuleTableError(f"rule #{i} has an empty rule_id")
    if r.action == Action.UNSPECIFIED:
        raise RuleTableError(f"{where} has no action")
    for what, act, custom in (
        ("action", r.action, r.custom_action),
        ("escalate", r.escalate, r.escalate_custom),
    ):
        if act == Action.CUSTOM and custom not in custom_actions:
            raise RuleTableError(
                f"{where}: custom {what} {custom!r} is not declared in the table's actions "
                f"({', '.join(custom_actions) or 'none'})"
            )
    if not 0 <= r.priority <= 255:
        raise RuleTableError(f"{where}: priority {r.priority} is outside 0-255")
    if not (math.isfinite(r.sla_ms) and r.sla_ms >= 0):
        raise RuleTableError(f"{where}: sla_threshold {r.sla_ms} ms is not a non-negative number")
    if not 0 <= r.cooldown_ns <= _I64[1]:
        raise RuleTableError(f"{where}: cooldown {r.cooldown_ns} ns is out of range")
    if any(not g for g in r.target):
        raise RuleTableError(f"{where}: an empty target glob")
    _check_condition(where, r.condition)
    conds = [r.condition] + ([r.rearm] if r.rearm is not None else [])
    if r.rearm is not None:
        _check_condition(where + " rearm", r.rearm)
    if r.board:
        if not r.target:
            raise RuleTableError(f"{where}: a board rule without a target cannot run")
        if r.agents:
            raise RuleTableError(f"{where}: a board rule cannot have agents globs")
        for c in conds:
            for s in c.selectors:
                if s.agent is None or not s.agent or set(s.agent) & set("*?["):
                    raise RuleTableError(
                        f"{where}: board selector {s.text()} does not name exactly one agent"
                    )
    elif schema >= 3:
        for c in conds:
            for s in c.selectors:
                if s.agent is not None:
                    raise RuleTableError(
                        f"{where}: selector {s.text()} uses the reserved label 'agent' "
                        "outside a board rule"
                    )


def _check_condition(where: str, c: Condition) -> None:
    """What check_postfix leaves to the wire: the ranges the schema's types can hold."""
    if len(c.selectors) > _MAX_SELECTORS:
        raise RuleTableError(f"{where}: {len(c.selectors)} series selectors; at most 65536")
    if not 0 <= c.hold_ns <= _I64[1]:
        raise RuleTableError(f"{where}: hold {c.hold_ns} ns is out of range")
    for j, n in enumerate(c.nodes):
        if not math.isfinite(n.value):
            raise RuleTableError(f"{where}: condition node {j} holds {n.value}, not a number")
        if not _I64[0] <= n.window_ns <= _I64[1]:
            raise RuleTableError(f"{where}: condition node {j}: window out of range")


def _check_int(what: str, v: int, bounds: tuple[int, int]) -> None:
    if not bounds[0] <= v <= bounds[1]:
        raise RuleTableError(f"{what} {v} is out of range ({bounds[0]} to {bounds[1]})")


# --- encode ------------------------------------------------------------------------------------


def _vector(b: flatbuffers.Builder, start: Any, offsets: list[int]) -> int:
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _strings(b: flatbuffers.Builder, start: Any, items: Iterable[str]) -> int:
    return _vector(b, start, [b.CreateString(s) for s in items])


def _param(b: flatbuffers.Builder, p: Param) -> int:
    key = b.CreateString(p.key)
    text = b.CreateString(p.value) if isinstance(p.value, str) else 0
    fb.Param.Start(b)
    fb.Param.AddKey(b, key)
    fb.Param.AddKind(b, p.kind)
    if p.kind == ParamKind.TEXT:
        fb.Param.AddText(b, text)
    else:
        fb.Param.AddNumber(b, float(p.value))  # a bool is 0.0 / 1.0 on the wire
    return fb.Param.End(b)


def _selector(b: flatbuffers.Builder, s: Selector) -> int:
    labels = []
    for k, v in s.labels:
        ko, vo = b.CreateString(k), b.CreateString(v)
        fb.Label.Start(b)
        fb.Label.AddKey(b, ko)
        fb.Label.AddValue(b, vo)
        labels.append(fb.Label.End(b))
    label_vec = _vector(b, fb.Selector.StartLabelsVector, labels) if labels else 0
    metric = b.CreateString(s.metric)
    fb.Selector.Start(b)
    fb.Selector.AddMetric(b, metric)
    if label_vec:
        fb.Selector.AddLabels(b, label_vec)
    return fb.Selector.End(b)


def _condition(b: flatbuffers.Builder, c: Condition) -> int:
    selectors = _vector(
        b, fb.Condition.StartSelectorsVector, [_selector(b, s) for s in c.selectors]
    )
    fb.Condition.StartNodesVector(b, len(c.nodes))
    for n in reversed(c.nodes):
        fb.Node.CreateNode(b, n.window_ns, n.value, n.sel, int(n.op))
    nodes = b.EndVector()
    text = b.CreateString(c.text())
    fb.Condition.Start(b)
    fb.Condition.AddSelectors(b, selectors)
    fb.Condition.AddNodes(b, nodes)
    fb.Condition.AddHoldNs(b, c.hold_ns)
    fb.Condition.AddText(b, text)
    return fb.Condition.End(b)


def _rule(b: flatbuffers.Builder, r: Rule) -> int:
    cond = _condition(b, r.condition)
    rearm = _condition(b, r.rearm) if r.rearm is not None else 0
    rearm_content = b.CreateString(r.rearm_content) if r.rearm_content else 0
    target = _strings(b, fb.Rule.StartTargetVector, r.target) if r.target else 0
    rid, name, content = (
        b.CreateString(r.rule_id),
        b.CreateString(r.name),
        b.CreateString(r.content),
    )
    custom = b.CreateString(r.custom_action) if r.custom_action else 0
    esc_custom = b.CreateString(r.escalate_custom) if r.escalate_custom else 0
    agents = _strings(b, fb.Rule.StartAgentsVector, r.agents) if r.agents else 0
    params = (
        _vector(b, fb.Rule.StartParamsVector, [_param(b, p) for p in r.params]) if r.params else 0
    )
    fb.Rule.Start(b)
    fb.Rule.AddRuleId(b, rid)
    fb.Rule.AddName(b, name)
    fb.Rule.AddContent(b, content)
    fb.Rule.AddAction(b, int(r.action))
    if custom:
        fb.Rule.AddCustomAction(b, custom)
    fb.Rule.AddPriority(b, r.priority)
    fb.Rule.AddSlaMs(b, r.sla_ms)
    if agents:
        fb.Rule.AddAgents(b, agents)
    if params:
        fb.Rule.AddParams(b, params)
    fb.Rule.AddCooldownNs(b, r.cooldown_ns)
    fb.Rule.AddEscalate(b, int(r.escalate))
    if esc_custom:
        fb.Rule.AddEscalateCustom(b, esc_custom)
    fb.Rule.AddCondition(b, cond)
    if target:
        fb.Rule.AddTarget(b, target)
    fb.Rule.AddBoard(b, r.board)
    if rearm:
        fb.Rule.AddRearm(b, rearm)
    if rearm_content:
        fb.Rule.AddRearmContent(b, rearm_content)
    return fb.Rule.End(b)


def _wire_form(rs: RuleSet) -> RuleSet:
    """``rs`` with its values as the table carries them: a number param is a double, so an int
    one (``params: {rate: 2}``) becomes a float here and the content hash written is the one
    decoding will compute (it hashes 2 and 2.0 differently)."""

    def fix(r: Rule) -> Rule:
        if all(isinstance(p.value, float | bool | str) for p in r.params):
            return r
        params = tuple(
            p if isinstance(p.value, float | bool | str) else Param(p.key, float(p.value))
            for p in r.params
        )
        return dataclasses.replace(r, params=params)

    rules = tuple(fix(r) for r in rs.rules)
    if all(a is b for a, b in zip(rules, rs.rules, strict=True)):
        return rs
    return dataclasses.replace(rs, rules=rules)


def encode_rule_table(
    rs: RuleSet,
    *,
    created_at_unix_ms: int | None = None,
    expires_at_unix_ms: int = 0,
    scope: Sequence[str] = (),
) -> bytes:
    """Serialise a RuleSet (with its content hash) as an unsigned RuleTable buffer ("ERTB");
    edge.rules._signing.sign_table() wraps it for a fleet. Integer params travel as doubles,
    so the table's hash is that of the decoded RuleSet, which equals ``rs``.

    created_at_unix_ms: used when ``rs.created_at_unix_ms`` is 0; None means now (wall clock).
    expires_at_unix_ms: 0 = never. scope: device ids and group names; empty = any device.
    Raises RuleTableError for what every edged would refuse (fields out of range, an
    undeclared custom action, duplicate rule ids), naming the rule.
    """
    rs = _wire_form(rs)
    _check_int("version", rs.version, _U64)
    _check_int("expires_at_unix_ms", expires_at_unix_ms, (0, _I64[1]))
    seen: set[str] = set()
    for i, r in enumerate(rs.rules):
        _check_rule(i, r, rs.custom_actions)
        if r.rule_id in seen:
            raise RuleTableError(f"rule #{i}: duplicate rule_id {r.rule_id!r}")
        seen.add(r.rule_id)
    created = rs.created_at_unix_ms or created_at_unix_ms or int(time.time() * 1000)
    _check_int("created_at_unix_ms", created, _I64)

    b = flatbuffers.Builder(1024)
    # Write fields equal to their default too: -0.0 == 0.0 would otherwise be dropped and decode
    # as 0.0, a different value under the content hash (json gives "-0.0" and "0.0").
    b.ForceDefaults(True)
    rules = _vector(b, fb.RuleTable.StartRulesVector, [_rule(b, r) for r in rs.rules])
    customs = (
        _strings(b, fb.RuleTable.StartCustomActionsVector, rs.custom_actions)
        if rs.custom_actions
        else 0
    )
    scope_vec = _strings(b, fb.RuleTable.StartScopeVector, scope) if scope else 0
    digest = b.CreateByteVector(rs.content_hash)
    desc = b.CreateString(rs.description)
    fb.RuleTable.Start(b)
    fb.RuleTable.AddSchemaVersion(b, SCHEMA_VERSION)
    fb.RuleTable.AddVersion(b, rs.version)
    fb.RuleTable.AddContentHash(b, digest)
    fb.RuleTable.AddCreatedAtUnixMs(b, created)
    fb.RuleTable.AddDescription(b, desc)
    if customs:
        fb.RuleTable.AddCustomActions(b, customs)
    fb.RuleTable.AddRules(b, rules)
    fb.RuleTable.AddExpiresAtUnixMs(b, expires_at_unix_ms)
    if scope_vec:
        fb.RuleTable.AddScope(b, scope_vec)
    b.Finish(fb.RuleTable.End(b), file_identifier=MessageType.RULE_TABLE.value)
    return bytes(b.Output())


# --- decode ------------------------------------------------------------------------------------


def _s(v: bytes | None) -> str:
    return v.decode("utf-8") if v else ""


def _peek_schema_version(buf: bytes) -> int | None:
    """RuleTable field 0, read before verification with every offset bounds-checked (None when
    the header does not lead to it), so that a table from a newer compiler is refused as such
    even when this version's schema cannot verify it."""
    n = len(buf)
    if n < 8:
        return None
    root = int.from_bytes(buf[0:4], "little")
    if root + 4 > n:
        return None
    vt = root - int.from_bytes(buf[root : root + 4], "little", signed=True)
    if vt < 0 or vt + 6 > n or int.from_bytes(buf[vt : vt + 2], "little") < 6:
        return None
    at = int.from_bytes(buf[vt + 4 : vt + 6], "little")
    if at == 0:
        return 0
    if root + at + 2 > n:
        return None
    return int.from_bytes(buf[root + at : root + at + 2], "little")


def _unwrap(
    buf: bytes, trusted_keys: TrustedKeys | None, require_signed: bool
) -> tuple[bytes, bytes | None]:
    """(RuleTable bytes, key_id or None) of an ERTB or ESRT buffer."""
    kind = message_type(buf) if len(buf) >= 8 else None
    if kind is MessageType.SIGNED_RULE_TABLE:
        return open_signed_table(buf, trusted_keys)
    if kind is not MessageType.RULE_TABLE:
        raise RuleTableError(
            f"not a rule table (file identifier {bytes(buf[4:8])!r}; expected b'ERTB' or "
            "b'ESRT'): give a file written by `edgectl rules compile`"
        )
    if require_signed:
        raise RuleTableError(
            "unsigned rule table refused: this runtime accepts signed tables only; sign it "
            "with `edgectl rules compile FILE -o TABLE.bin --sign KEY`"
        )
    return buf, None


def _condition_of(where: str, c: Any) -> Condition:
    selectors = []
    for j in range(c.SelectorsLength()):
        s = c.Selectors(j)
        labels = tuple(
            (_s(s.Labels(k).Key()), _s(s.Labels(k).Value())) for k in range(s.LabelsLength())
        )
        selectors.append(Selector(_s(s.Metric()), labels))
    nodes = []
    tab = c._tab  # the verified node vector in one slice: 4 accessor calls per node cost more
    at = tab.Offset(_NODES_FIELD)
    start = tab.Vector(at) if at else 0
    raw = tab.Bytes[start : start + NODE.size * (tab.VectorLen(at) if at else 0)]
    for j, (window_ns, value, sel, op) in enumerate(NODE.iter_unpack(raw)):
        try:
            nodes.append(Node(NodeOp(op), value=value, sel=sel, window_ns=window_ns))
        except ValueError:
            raise RuleTableError(
                f"{where}: condition node {j} has op {op}, which this edged does not know "
                "(a table from a newer or broken compiler); recompile it with this edgectl"
            ) from None
    try:
        cond = Condition(tuple(selectors), tuple(nodes), c.HoldNs())
    except ValueError as exc:
        raise RuleTableError(
            f"{where}: malformed condition ({exc}); the table is corrupt or from a broken "
            "compiler: recompile the rule file"
        ) from None
    _check_condition(where, cond)
    return cond


def _params_of(r: Any) -> tuple[Param, ...]:
    params = []
    for j in range(r.ParamsLength()):
        p = r.Params(j)
        kind = p.Kind()
        value: float | bool | str
        if kind == ParamKind.BOOL:
            value = p.Number() != 0.0
        elif kind == ParamKind.TEXT:
            value = _s(p.Text())
        else:
            value = p.Number()
        params.append(Param(_s(p.Key()), value))
    return tuple(params)


def decode_table_with_info(
    buf: bytes, *, trusted_keys: TrustedKeys | None = None, require_signed: bool = False
) -> tuple[RuleSet, TableInfo]:
    """Check and decode a RuleTable ("ERTB") or SignedRuleTable ("ESRT") buffer.

    trusted_keys: key_id -> public key (edge.rules._signing.load_trusted_keys); a signed table
    is accepted only when its key is one of them and its signature verifies. None or empty:
    every signed table is refused. require_signed: refuse unsigned tables too.
    Expiry and scope are reported in TableInfo, not checked: see TableInfo.check_applies().
    Raises RuleTableError saying what is wrong and what to do (module docstring lists each).
    """
    buf = bytes(buf)
    if len(buf) > MAX_TABLE_BYTES + 4096:
        raise RuleTableError(
            f"rule table is {len(buf)} bytes; the limit is {MAX_TABLE_BYTES}: split the rules"
        )
    table, kid = _unwrap(buf, trusted_keys, require_signed)
    peeked = _peek_schema_version(table)
    if peeked is not None and peeked not in READABLE_SCHEMA_VERSIONS:
        if peeked > SCHEMA_VERSION:
            raise RuleTableError(
                f"rule table schema_version {peeked} is newer than this runtime understands "
                f"({SCHEMA_VERSION}); upgrade the runtime first, or compile with a matching edgectl"
            )
        raise RuleTableError(
            f"rule table schema_version {peeked} is older than this runtime reads "
            f"({', '.join(map(str, READABLE_SCHEMA_VERSIONS))}); recompile the rule file with "
            "this version's edgectl"
        )
    try:
        if verify(table, max_bytes=MAX_TABLE_BYTES) is not MessageType.RULE_TABLE:
            raise RuleTableError("the signed payload is not a RuleTable (wrong file identifier)")
    except RuleTableError:
        raise
    except EdgeError as exc:
        raise RuleTableError(f"RuleTable failed verification: {exc}") from None
    t = fb.RuleTable.RuleTable.GetRootAs(table, 0)
    schema = t.SchemaVersion()
    customs = tuple(_s(t.CustomActions(j)) for j in range(t.CustomActionsLength()))
    rules = []
    rearm_texts: dict[int, str] = {}
    seen: dict[str, int] = {}
    for i in range(t.RulesLength()):
        r = t.Rules(i)
        rid = _s(r.RuleId())
        if rid in seen:
            raise RuleTableError(
                f"rule #{i}: duplicate rule_id {rid!r} (first at rule #{seen[rid]})"
            )
        seen[rid] = i
        where = f"rule #{i} {rid!r}"
        # schema 3's fields; a schema-2 table has none of them (and must keep its hash)
        new = schema >= 3
        rearm = r.Rearm() if new else None
        if rearm is not None:
            rearm_texts[i] = _s(rearm.Text())
        n_target = r.TargetLength() if new else 0
        rule = Rule(
            rule_id=rid,
            condition=_condition_of(where, r.Condition()),
            action=Action(r.Action()),  # the verifier has checked both Action values
            priority=r.Priority(),
            sla_ms=r.SlaMs(),
            name=_s(r.Name()),
            content=_s(r.Content()),
            custom_action=_s(r.CustomAction()),
            agents=tuple(_s(r.Agents(j)) for j in range(r.AgentsLength())),
            params=_params_of(r),
            cooldown_ns=r.CooldownNs(),
            escalate=Action(r.Escalate()),
            escalate_custom=_s(r.EscalateCustom()),
            target=tuple(_s(r.Target(j)) for j in range(n_target)) if n_target else (),
            board=r.Board() if new else False,
            rearm=_condition_of(where + " rearm", rearm) if rearm is not None else None,
            rearm_content=_s(r.RearmContent()) if rearm is not None else "",
        )
        _check_rule(i, rule, customs, schema)
        rules.append(rule)
    rs = RuleSet(
        tuple(rules),
        version=t.Version(),
        description=_s(t.Description()),
        custom_actions=customs,
        created_at_unix_ms=t.CreatedAtUnixMs(),
    )
    digest = _ubytes(t, _CONTENT_HASH)
    if digest != rs.content_hash:
        raise RuleTableError(
            "rule table content hash does not match its rules (corrupted or edited after "
            "compiling); recompile the rule file"
        )
    # The hash covers the canonical text computed from the IR, not the stored copy shown to
    # people; that copy must say the same, or a display could hide what a rule does.
    for i, rule in enumerate(rules):
        shown = _s(t.Rules(i).Condition().Text())
        rearm_shown = rearm_texts.get(i)
        if rule.rearm is not None and rearm_shown != rule.rearm.text():
            raise RuleTableError(
                f"rule #{i} {rule.rule_id!r}: the rearm's display text {rearm_shown!r} "
                f"does not match what it evaluates ({rule.rearm.text()!r}); the table was "
                "edited after compiling: recompile the rule file"
            )
        if shown != rule.condition.text():
            raise RuleTableError(
                f"rule #{i} {rule.rule_id!r}: the condition's display text {shown!r} does not "
                f"match what it evaluates ({rule.condition.text()!r}); the table was edited "
                "after compiling: recompile the rule file"
            )
    info = TableInfo(
        schema_version=t.SchemaVersion(),
        version=rs.version,
        content_hash=digest,
        created_at_unix_ms=rs.created_at_unix_ms,
        expires_at_unix_ms=t.ExpiresAtUnixMs(),
        scope=tuple(_s(t.Scope(j)) for j in range(t.ScopeLength())),
        key_id=kid,
    )
    return rs, info


def decode_rule_table(
    buf: bytes, *, trusted_keys: TrustedKeys | None = None, require_signed: bool = False
) -> RuleSet:
    """decode_table_with_info() without the TableInfo. Raises RuleTableError."""
    return decode_table_with_info(buf, trusted_keys=trusted_keys, require_signed=require_signed)[0]
