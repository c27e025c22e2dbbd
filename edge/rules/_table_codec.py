"""RuleSet <-> RuleTable FlatBuffer (cold path: generated code is fine here).

The board never parses rule text: edgectl compiles the file, edged verifies this buffer and
rebuilds the model from the normalised IR.
"""

from __future__ import annotations

import flatbuffers

from ..errors import EdgeError, RuleTableError
from ..wire import Action, MessageType, Param, ParamKind, fb, verify
from ._ir import OP_SYMBOLS, NodeOp, threshold
from ._model import Rule, RuleSet

SCHEMA_VERSION = 1
MAX_TABLE_BYTES = 64 << 20


def _param(b: flatbuffers.Builder, p: Param) -> int:
    key = b.CreateString(p.key)
    text = b.CreateString(p.value) if isinstance(p.value, str) else 0
    fb.Param.ParamStart(b)
    fb.Param.ParamAddKey(b, key)
    fb.Param.ParamAddKind(b, p.kind)
    if p.kind == ParamKind.TEXT:
        fb.Param.ParamAddText(b, text)
    else:
        fb.Param.ParamAddNumber(b, float(p.value))  # a bool is 0.0 / 1.0 on the wire
    return fb.Param.ParamEnd(b)


def _vector(b: flatbuffers.Builder, start: object, offsets: list[int]) -> int:
    start(b, len(offsets))  # type: ignore[operator]
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _labels(b: flatbuffers.Builder, labels: tuple[tuple[str, str], ...]) -> int:
    offs = []
    for k, v in labels:
        ko, vo = b.CreateString(k), b.CreateString(v)
        fb.Label.LabelStart(b)
        fb.Label.LabelAddKey(b, ko)
        fb.Label.LabelAddValue(b, vo)
        offs.append(fb.Label.LabelEnd(b))
    return _vector(b, fb.Condition.ConditionStartLabelsVector, offs)


def _rule(b: flatbuffers.Builder, r: Rule) -> int:
    c = r.condition  # (interim) the threshold form, until the IR schema lands
    sel = c.selectors[0]
    metric = b.CreateString(sel.metric)
    labels = _labels(b, sel.labels) if sel.labels else 0
    fb.Condition.ConditionStart(b)
    fb.Condition.ConditionAddMetric(b, metric)
    if labels:
        fb.Condition.ConditionAddLabels(b, labels)
    fb.Condition.ConditionAddOp(b, int(c.nodes[2].op) - int(NodeOp.GT))
    fb.Condition.ConditionAddThreshold(b, c.nodes[1].value)
    fb.Condition.ConditionAddHoldNs(b, c.hold_ns)
    cond = fb.Condition.ConditionEnd(b)
    rid, name, content = (
        b.CreateString(r.rule_id),
        b.CreateString(r.name),
        b.CreateString(r.content),
    )
    custom = b.CreateString(r.custom_action) if r.custom_action else 0
    esc_custom = b.CreateString(r.escalate_custom) if r.escalate_custom else 0
    agents = (
        _vector(b, fb.Rule.RuleStartAgentsVector, [b.CreateString(a) for a in r.agents])
        if r.agents
        else 0
    )
    params = (
        _vector(b, fb.Rule.RuleStartParamsVector, [_param(b, p) for p in r.params])
        if r.params
        else 0
    )
    fb.Rule.RuleStart(b)
    fb.Rule.RuleAddRuleId(b, rid)
    fb.Rule.RuleAddName(b, name)
    fb.Rule.RuleAddContent(b, content)
    fb.Rule.RuleAddAction(b, int(r.action))
    if custom:
        fb.Rule.RuleAddCustomAction(b, custom)
    fb.Rule.RuleAddPriority(b, r.priority)
    fb.Rule.RuleAddSlaMs(b, r.sla_ms)
    if agents:
        fb.Rule.RuleAddAgents(b, agents)
    if params:
        fb.Rule.RuleAddParams(b, params)
    fb.Rule.RuleAddCooldownNs(b, r.cooldown_ns)
    fb.Rule.RuleAddEscalate(b, int(r.escalate))
    if esc_custom:
        fb.Rule.RuleAddEscalateCustom(b, esc_custom)
    fb.Rule.RuleAddCondition(b, cond)
    return fb.Rule.RuleEnd(b)


def encode_rule_table(rs: RuleSet, *, created_at_unix_ms: int | None = None) -> bytes:
    """Serialise a RuleSet (with its content hash) as a RuleTable buffer."""
    import time

    b = flatbuffers.Builder(1024)
    rules = _vector(b, fb.RuleTable.RuleTableStartRulesVector, [_rule(b, r) for r in rs.rules])
    customs = (
        _vector(
            b,
            fb.RuleTable.RuleTableStartCustomActionsVector,
            [b.CreateString(a) for a in rs.custom_actions],
        )
        if rs.custom_actions
        else 0
    )
    digest = b.CreateByteVector(rs.content_hash)
    desc = b.CreateString(rs.description)
    fb.RuleTable.RuleTableStart(b)
    fb.RuleTable.RuleTableAddSchemaVersion(b, SCHEMA_VERSION)
    fb.RuleTable.RuleTableAddVersion(b, rs.version)
    fb.RuleTable.RuleTableAddContentHash(b, digest)
    created = rs.created_at_unix_ms or created_at_unix_ms or int(time.time() * 1000)
    fb.RuleTable.RuleTableAddCreatedAtUnixMs(b, created)
    fb.RuleTable.RuleTableAddDescription(b, desc)
    if customs:
        fb.RuleTable.RuleTableAddCustomActions(b, customs)
    fb.RuleTable.RuleTableAddRules(b, rules)
    b.Finish(fb.RuleTable.RuleTableEnd(b), file_identifier=MessageType.RULE_TABLE.value)
    return bytes(b.Output())


def _s(v: bytes | None) -> str:
    return v.decode("utf-8") if v else ""


def decode_rule_table(buf: bytes) -> RuleSet:
    """Verify and decode a RuleTable; RuleTableError says why one is refused.

    Refused: anything that fails verification, a newer schema_version, an unknown action or
    comparison, a content hash that does not match the rules, duplicate rule ids.
    """
    try:
        if verify(buf, max_bytes=MAX_TABLE_BYTES) is not MessageType.RULE_TABLE:
            raise RuleTableError("not a RuleTable (wrong file identifier)")
    except RuleTableError:
        raise
    except EdgeError as exc:
        raise RuleTableError(f"RuleTable failed verification: {exc}") from None
    t = fb.RuleTable.RuleTable.GetRootAs(buf, 0)
    if t.SchemaVersion() > SCHEMA_VERSION:
        raise RuleTableError(
            f"RuleTable schema_version {t.SchemaVersion()} is newer than this edged understands "
            f"({SCHEMA_VERSION}); upgrade the runtime first"
        )
    rules = []
    seen = set()
    for i in range(t.RulesLength()):
        r = t.Rules(i)
        c = r.Condition()
        try:
            op = OP_SYMBOLS[NodeOp(int(NodeOp.GT) + c.Op())]
            action = Action(r.Action())
            escalate = Action(r.Escalate())
        except ValueError as exc:
            raise RuleTableError(f"rule #{i}: {exc}") from None
        rid = _s(r.RuleId())
        if rid in seen:
            raise RuleTableError(f"rule #{i}: duplicate rule_id {rid!r}")
        seen.add(rid)
        labels = tuple(
            (_s(c.Labels(j).Key()), _s(c.Labels(j).Value())) for j in range(c.LabelsLength())
        )
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
        rules.append(
            Rule(
                rule_id=rid,
                condition=threshold(
                    _s(c.Metric()), op, c.Threshold(), labels=dict(labels), hold_ns=c.HoldNs()
                ),
                action=action,
                priority=r.Priority(),
                sla_ms=r.SlaMs(),
                name=_s(r.Name()),
                content=_s(r.Content()),
                custom_action=_s(r.CustomAction()),
                agents=tuple(_s(r.Agents(j)) for j in range(r.AgentsLength())),
                params=tuple(params),
                cooldown_ns=r.CooldownNs(),
                escalate=escalate,
                escalate_custom=_s(r.EscalateCustom()),
            )
        )
    rs = RuleSet(
        tuple(rules),
        version=t.Version(),
        description=_s(t.Description()),
        custom_actions=tuple(_s(t.CustomActions(j)) for j in range(t.CustomActionsLength())),
        created_at_unix_ms=t.CreatedAtUnixMs(),
    )
    digest = bytes(t.ContentHash(j) for j in range(t.ContentHashLength()))
    if digest != rs.content_hash:
        raise RuleTableError(
            "RuleTable content hash does not match its rules (corrupted or edited)"
        )
    return rs
