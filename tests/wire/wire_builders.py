"""Reference encoders and decoders written only with flatc's generated code and
flatbuffers.Builder, to check the lean codec against.

* ``lean_reference(m)``: the exact Builder call sequence the lean encoders reproduce byte for
  byte (ForceDefaults, children first in schema order, fields in flatc's C++ CreateX() order).
* ``builder_encode(m, rnd)``: a different, ordinary Builder use: defaults omitted, empty strings
  and vectors omitted, fields added in a random order. Lean decoders must read it all the same.
* ``generated_decode(buf)``: the generated accessors, back to edge.wire dataclasses.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import flatbuffers

from edge.wire import (
    Ack,
    AckStatus,
    Action,
    Bye,
    CtlCode,
    CtlOp,
    CtlReply,
    CtlRequest,
    Heartbeat,
    Hello,
    Instruction,
    MessageType,
    MetricDecl,
    Notice,
    NoticeCode,
    Param,
    ParamKind,
    Welcome,
    fb,
)

Sample = tuple[int, float, int]  # (metric_id, value, t_ns), as encode_metric_batch takes them
Adds = list[Callable[..., object]]  # one closure per field: adds it to the open table


def _finish(b: flatbuffers.Builder, root: int, t: MessageType) -> bytes:
    b.Finish(root, t.value)
    return bytes(b.Output())


def _offsets_vector(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


# --- the lean encoders' call sequences ---------------------------------------------------------


def lean_reference_heartbeat(m: Heartbeat) -> bytes:
    b = flatbuffers.Builder(0)
    b.ForceDefaults(True)
    fb.Heartbeat.Start(b)
    fb.Heartbeat.AddSeq(b, m.seq)
    fb.Heartbeat.AddTNs(b, m.t_ns)
    fb.Heartbeat.AddSession(b, m.session)
    return _finish(b, fb.Heartbeat.End(b), MessageType.HEARTBEAT)


def lean_reference_metric_batch(
    session: int, seq: int, t_send_ns: int, samples: Sequence[Sample]
) -> bytes:
    b = flatbuffers.Builder(0)
    b.ForceDefaults(True)
    fb.MetricBatch.StartSamplesVector(b, len(samples))
    for metric_id, value, t_ns in reversed(samples):
        fb.Sample.CreateSample(b, t_ns, value, metric_id, 0)
    vec = b.EndVector()
    fb.MetricBatch.Start(b)
    fb.MetricBatch.AddTSendNs(b, t_send_ns)
    fb.MetricBatch.AddSeq(b, seq)
    fb.MetricBatch.AddSession(b, session)
    fb.MetricBatch.AddSamples(b, vec)
    return _finish(b, fb.MetricBatch.End(b), MessageType.METRIC_BATCH)


def lean_reference_ack(m: Ack) -> bytes:
    b = flatbuffers.Builder(0)
    b.ForceDefaults(True)
    detail = b.CreateString(m.detail)
    fb.Ack.Start(b)
    fb.Ack.AddTDoneNs(b, m.t_done_ns)
    fb.Ack.AddTDeliveredNs(b, m.t_delivered_ns)
    fb.Ack.AddInstructionId(b, m.instruction_id)
    fb.Ack.AddSession(b, m.session)
    fb.Ack.AddDetail(b, detail)
    fb.Ack.AddStatus(b, m.status)
    return _finish(b, fb.Ack.End(b), MessageType.ACK)


def _param_parts(p: Param) -> tuple[ParamKind, float, str]:
    if isinstance(p.value, str):
        return ParamKind.TEXT, 0.0, p.value
    kind = ParamKind.BOOL if isinstance(p.value, bool) else ParamKind.NUMBER
    return kind, float(p.value), ""


def lean_reference_instruction(m: Instruction) -> bytes:
    b = flatbuffers.Builder(0)
    b.ForceDefaults(True)
    rule = b.CreateString(m.rule_id)
    custom = b.CreateString(m.custom_action)
    params = []
    for p in m.params:
        kind, number, text = _param_parts(p)
        key = b.CreateString(p.key)
        txt = b.CreateString(text)
        fb.Param.Start(b)
        fb.Param.AddNumber(b, number)
        fb.Param.AddText(b, txt)
        fb.Param.AddKey(b, key)
        fb.Param.AddKind(b, kind)
        params.append(fb.Param.End(b))
    vec = _offsets_vector(b, params)
    source = b.CreateString(m.source_agent)
    i = fb.Instruction
    i.Start(b)
    i.AddTSampleNs(b, m.t_sample_ns)
    i.AddValue(b, m.value)
    i.AddDeadlineNs(b, m.deadline_ns)
    i.AddInstructionId(b, m.instruction_id)
    i.AddSourceAgent(b, source)
    i.AddMetricId(b, m.metric_id)
    i.AddParams(b, vec)
    i.AddCustomAction(b, custom)
    i.AddRuleId(b, rule)
    i.AddPriority(b, m.priority)
    i.AddAction(b, m.action)
    return _finish(b, i.End(b), MessageType.INSTRUCTION)


# --- ordinary Builder use: defaults omitted, random field order --------------------------------


def _table(
    b: flatbuffers.Builder, module: object, adds: Adds, rnd: random.Random
) -> int:
    module.Start(b)  # type: ignore[attr-defined]
    rnd.shuffle(adds)
    for add in adds:
        add()
    end: int = module.End(b)  # type: ignore[attr-defined]
    return end


def _opt_string(b: flatbuffers.Builder, s: str) -> int:
    return b.CreateString(s) if s else 0


def builder_encode(m: object, rnd: random.Random) -> bytes:
    b = flatbuffers.Builder(0)
    if isinstance(m, Heartbeat):
        h = fb.Heartbeat
        root = _table(b, h, [
            lambda: h.AddSession(b, m.session), lambda: h.AddTNs(b, m.t_ns),
            lambda: h.AddSeq(b, m.seq),
        ], rnd)  # fmt: skip
        return _finish(b, root, MessageType.HEARTBEAT)
    if isinstance(m, Ack):
        a = fb.Ack
        detail = _opt_string(b, m.detail)
        adds: Adds = [
            lambda: a.AddSession(b, m.session), lambda: a.AddInstructionId(b, m.instruction_id),
            lambda: a.AddStatus(b, m.status), lambda: a.AddTDeliveredNs(b, m.t_delivered_ns),
            lambda: a.AddTDoneNs(b, m.t_done_ns),
        ]  # fmt: skip
        if detail:
            adds.append(lambda: a.AddDetail(b, detail))
        return _finish(b, _table(b, a, adds, rnd), MessageType.ACK)
    if isinstance(m, Instruction):
        return _builder_instruction(b, m, rnd)
    if isinstance(m, Hello):
        return _builder_hello(b, m, rnd)
    if isinstance(m, Welcome):
        w = fb.Welcome
        w.StartMetricIdsVector(b, len(m.metric_ids))
        for metric_id in reversed(m.metric_ids):
            b.PrependUint32(metric_id)
        ids = b.EndVector()
        root = _table(b, w, [
            lambda: w.AddProtocolVersion(b, m.protocol_version),
            lambda: w.AddSession(b, m.session), lambda: w.AddMetricIds(b, ids),
            lambda: w.AddHeartbeatMs(b, m.heartbeat_ms),
            lambda: w.AddMissedBeats(b, m.missed_beats), lambda: w.AddMaxBatch(b, m.max_batch),
            lambda: w.AddMaxMsgBytes(b, m.max_msg_bytes),
        ], rnd)  # fmt: skip
        return _finish(b, root, MessageType.WELCOME)
    if isinstance(m, Bye):
        reason = _opt_string(b, m.reason)
        adds = [lambda: fb.Bye.AddSession(b, m.session)]
        if reason:
            adds.append(lambda: fb.Bye.AddReason(b, reason))
        return _finish(b, _table(b, fb.Bye, adds, rnd), MessageType.BYE)
    if isinstance(m, Notice):
        detail = _opt_string(b, m.detail)
        adds = [lambda: fb.Notice.AddCode(b, m.code)]
        if detail:
            adds.append(lambda: fb.Notice.AddDetail(b, detail))
        return _finish(b, _table(b, fb.Notice, adds, rnd), MessageType.NOTICE)
    if isinstance(m, CtlRequest):
        import json

        q = fb.CtlRequest
        blob = b.CreateByteVector(m.blob) if m.blob else 0
        args = b.CreateString(json.dumps(m.args)) if m.args else 0
        adds = [lambda: q.AddRequestId(b, m.request_id), lambda: q.AddOp(b, m.op)]
        if args:
            adds.append(lambda: q.AddArgsJson(b, args))
        if blob:
            adds.append(lambda: q.AddBlob(b, blob))
        return _finish(b, _table(b, q, adds, rnd), MessageType.CTL_REQUEST)
    if isinstance(m, CtlReply):
        import json

        r = fb.CtlReply
        body = b.CreateString(json.dumps(m.body)) if m.body else 0
        error = _opt_string(b, m.error)
        adds = [lambda: r.AddRequestId(b, m.request_id), lambda: r.AddCode(b, m.code)]
        if body:
            adds.append(lambda: r.AddBodyJson(b, body))
        if error:
            adds.append(lambda: r.AddError(b, error))
        return _finish(b, _table(b, r, adds, rnd), MessageType.CTL_REPLY)
    raise TypeError(type(m))


def builder_metric_batch(
    session: int, seq: int, t_send_ns: int, samples: Sequence[Sample], rnd: random.Random
) -> bytes:
    b = flatbuffers.Builder(0)
    mb = fb.MetricBatch
    vec = 0
    if samples:
        mb.StartSamplesVector(b, len(samples))
        for metric_id, value, t_ns in reversed(samples):
            fb.Sample.CreateSample(b, t_ns, value, metric_id, 0)
        vec = b.EndVector()
    adds: Adds = [
        lambda: mb.AddSession(b, session), lambda: mb.AddSeq(b, seq),
        lambda: mb.AddTSendNs(b, t_send_ns),
    ]  # fmt: skip
    if vec:
        adds.append(lambda: mb.AddSamples(b, vec))
    return _finish(b, _table(b, mb, adds, rnd), MessageType.METRIC_BATCH)


def _builder_instruction(b: flatbuffers.Builder, m: Instruction, rnd: random.Random) -> bytes:
    i, p_ = fb.Instruction, fb.Param
    params = []
    for p in m.params:
        kind, number, text = _param_parts(p)
        key = b.CreateString(p.key)
        txt = _opt_string(b, text)
        adds: Adds = [lambda key=key: p_.AddKey(b, key), lambda kind=kind: p_.AddKind(b, kind)]
        if kind is not ParamKind.TEXT:
            adds.append(lambda number=number: p_.AddNumber(b, number))
        if txt:
            adds.append(lambda txt=txt: p_.AddText(b, txt))
        params.append(_table(b, p_, adds, rnd))
    vec = _offsets_vector(b, params) if params else 0
    rule, custom = _opt_string(b, m.rule_id), _opt_string(b, m.custom_action)
    source = _opt_string(b, m.source_agent)
    adds = [
        lambda: i.AddInstructionId(b, m.instruction_id), lambda: i.AddAction(b, m.action),
        lambda: i.AddPriority(b, m.priority), lambda: i.AddDeadlineNs(b, m.deadline_ns),
        lambda: i.AddMetricId(b, m.metric_id), lambda: i.AddValue(b, m.value),
        lambda: i.AddTSampleNs(b, m.t_sample_ns),
    ]  # fmt: skip
    if rule:
        adds.append(lambda: i.AddRuleId(b, rule))
    if custom:
        adds.append(lambda: i.AddCustomAction(b, custom))
    if vec:
        adds.append(lambda: i.AddParams(b, vec))
    if source:
        adds.append(lambda: i.AddSourceAgent(b, source))
    return _finish(b, _table(b, i, adds, rnd), MessageType.INSTRUCTION)


def _builder_hello(b: flatbuffers.Builder, m: Hello, rnd: random.Random) -> bytes:
    h, d_, l_ = fb.Hello, fb.MetricDecl, fb.Label
    decls = []
    for decl in m.metrics:
        labels = []
        for key, value in decl.labels:
            k, v = b.CreateString(key), b.CreateString(value)
            labels.append(_table(b, l_, [
                lambda k=k: l_.AddKey(b, k), lambda v=v: l_.AddValue(b, v)
            ], rnd))  # fmt: skip
        vec = _offsets_vector(b, labels) if labels else 0
        name = b.CreateString(decl.name)
        adds: Adds = [lambda name=name: d_.AddName(b, name)]
        if vec:
            adds.append(lambda vec=vec: d_.AddLabels(b, vec))
        decls.append(_table(b, d_, adds, rnd))
    metrics = _offsets_vector(b, decls) if decls else 0
    agent_id, kind = b.CreateString(m.agent_id), _opt_string(b, m.agent_kind)
    adds = [
        lambda: h.AddProtocolVersion(b, m.protocol_version), lambda: h.AddAgentId(b, agent_id),
        lambda: h.AddPid(b, m.pid), lambda: h.AddHeartbeatMs(b, m.heartbeat_ms),
    ]  # fmt: skip
    if kind:
        adds.append(lambda: h.AddAgentKind(b, kind))
    if metrics:
        adds.append(lambda: h.AddMetrics(b, metrics))
    return _finish(b, _table(b, h, adds, rnd), MessageType.HELLO)


# --- RuleTable (the verifier must accept what the rules layer builds) ---------------------------


def build_rule_table(rules: Sequence[dict[str, object]], rnd: random.Random) -> bytes:
    """A RuleTable; each rule dict has rule_id, action, metric, labels, agents, params.
    Each condition is ``metric{labels} < 1.5 for 10ns`` in IR form (LATEST, CONST, LT)."""
    b = flatbuffers.Builder(0)
    c, u, sel = fb.Condition, fb.Rule, fb.Selector
    offs = []
    for r in rules:
        labels = []
        for key, value in r["labels"]:  # type: ignore[attr-defined]
            k, v = b.CreateString(key), b.CreateString(value)
            labels.append(_table(b, fb.Label, [
                lambda k=k: fb.Label.AddKey(b, k), lambda v=v: fb.Label.AddValue(b, v)
            ], rnd))  # fmt: skip
        label_vec = _offsets_vector(b, labels)
        metric = b.CreateString(r["metric"])  # type: ignore[arg-type]
        selector = _table(b, sel, [
            lambda metric=metric: sel.AddMetric(b, metric),
            lambda label_vec=label_vec: sel.AddLabels(b, label_vec),
        ], rnd)  # fmt: skip
        selectors = _offsets_vector(b, [selector])
        c.StartNodesVector(b, 3)
        for window_ns, value, index, op in reversed([(0, 0.0, 0, 1), (0, 1.5, 0, 0), (0, 0.0, 0, 11)]):
            fb.Node.CreateNode(b, window_ns, value, index, op)
        nodes = b.EndVector()
        text = b.CreateString("m < 1.5 for 10ns")
        cond = _table(b, c, [
            lambda selectors=selectors: c.AddSelectors(b, selectors),
            lambda nodes=nodes: c.AddNodes(b, nodes),
            lambda text=text: c.AddText(b, text), lambda: c.AddHoldNs(b, 10),
        ], rnd)  # fmt: skip
        agents = _offsets_vector(b, [b.CreateString(a) for a in r["agents"]])  # type: ignore[attr-defined]
        params = []
        for p in r["params"]:  # type: ignore[attr-defined]
            key = b.CreateString(p.key)
            kind, number, text = _param_parts(p)
            txt = b.CreateString(text)
            params.append(_table(b, fb.Param, [
                lambda key=key: fb.Param.AddKey(b, key),
                lambda kind=kind: fb.Param.AddKind(b, kind),
                lambda number=number: fb.Param.AddNumber(b, number),
                lambda txt=txt: fb.Param.AddText(b, txt),
            ], rnd))  # fmt: skip
        param_vec = _offsets_vector(b, params)
        rule_id = b.CreateString(r["rule_id"])  # type: ignore[arg-type]
        offs.append(_table(b, u, [
            lambda rule_id=rule_id: u.AddRuleId(b, rule_id),
            lambda r=r: u.AddAction(b, r["action"]),
            lambda agents=agents: u.AddAgents(b, agents),
            lambda param_vec=param_vec: u.AddParams(b, param_vec),
            lambda cond=cond: u.AddCondition(b, cond),
            lambda: u.AddSlaMs(b, 2.5), lambda: u.AddPriority(b, 9),
        ], rnd))  # fmt: skip
    rules_vec = _offsets_vector(b, offs)
    digest = b.CreateByteVector(bytes(range(32)))
    t = fb.RuleTable
    root = _table(b, t, [
        lambda: t.AddSchemaVersion(b, 1), lambda: t.AddVersion(b, 7),
        lambda: t.AddContentHash(b, digest), lambda: t.AddRules(b, rules_vec),
    ], rnd)  # fmt: skip
    return _finish(b, root, MessageType.RULE_TABLE)


def build_signed_rule_table(table: bytes, key_id: bytes, signature: bytes,
                            rnd: random.Random) -> bytes:  # fmt: skip
    """A SignedRuleTable envelope around ``table`` (the signature is not checked here)."""
    b = flatbuffers.Builder(0)
    s = fb.SignedRuleTable
    sig, kid = b.CreateByteVector(signature), b.CreateByteVector(key_id)
    inner = b.CreateByteVector(table)
    root = _table(b, s, [
        lambda: s.AddTable(b, inner), lambda: s.AddKeyId(b, kid), lambda: s.AddSignature(b, sig),
    ], rnd)  # fmt: skip
    return _finish(b, root, MessageType.SIGNED_RULE_TABLE)


# --- generated accessors -> dataclasses --------------------------------------------------------


def _s(v: bytes | None) -> str:
    return v.decode() if v is not None else ""


def generated_decode(buf: bytes) -> object:
    """Decode with flatc's generated classes only (samples as (t_ns, value, metric_id, flags))."""
    t = MessageType(buf[4:8])
    if t is MessageType.HEARTBEAT:
        h = fb.Heartbeat.Heartbeat.GetRootAs(buf, 0)
        return Heartbeat(h.Session(), h.TNs(), h.Seq())
    if t is MessageType.METRIC_BATCH:
        mb = fb.MetricBatch.MetricBatch.GetRootAs(buf, 0)
        samples = []
        for j in range(mb.SamplesLength()):
            s = mb.Samples(j)
            samples.append((s.TNs(), s.Value(), s.MetricId(), s.Flags()))
        return (mb.Session(), mb.Seq(), mb.TSendNs(), samples)
    if t is MessageType.ACK:
        a = fb.Ack.Ack.GetRootAs(buf, 0)
        return Ack(a.Session(), a.InstructionId(), AckStatus(a.Status()), a.TDeliveredNs(),
                   a.TDoneNs(), _s(a.Detail()))  # fmt: skip
    if t is MessageType.INSTRUCTION:
        i = fb.Instruction.Instruction.GetRootAs(buf, 0)
        params = []
        for j in range(i.ParamsLength()):
            p = i.Params(j)
            kind = ParamKind(p.Kind())
            value: float | bool | str
            if kind is ParamKind.TEXT:
                value = _s(p.Text())
            elif kind is ParamKind.BOOL:
                value = p.Number() != 0
            else:
                value = p.Number()
            params.append(Param(_s(p.Key()), value))
        return Instruction(
            i.InstructionId(), _s(i.RuleId()), Action(i.Action()), _s(i.CustomAction()),
            tuple(params), i.Priority(), i.DeadlineNs(), i.MetricId(), i.Value(), i.TSampleNs(),
            _s(i.SourceAgent()),
        )  # fmt: skip
    if t is MessageType.HELLO:
        h = fb.Hello.Hello.GetRootAs(buf, 0)
        metrics = []
        for j in range(h.MetricsLength()):
            d = h.Metrics(j)
            labels = tuple(
                (_s(d.Labels(k).Key()), _s(d.Labels(k).Value())) for k in range(d.LabelsLength())
            )
            metrics.append(MetricDecl(_s(d.Name()), labels))
        return Hello(_s(h.AgentId()), tuple(metrics), _s(h.AgentKind()), h.Pid(),
                     h.HeartbeatMs(), h.ProtocolVersion())  # fmt: skip
    if t is MessageType.WELCOME:
        w = fb.Welcome.Welcome.GetRootAs(buf, 0)
        ids = tuple(w.MetricIds(j) for j in range(w.MetricIdsLength()))
        return Welcome(w.Session(), ids, w.HeartbeatMs(), w.MissedBeats(), w.MaxBatch(),
                       w.MaxMsgBytes(), w.ProtocolVersion())  # fmt: skip
    if t is MessageType.BYE:
        y = fb.Bye.Bye.GetRootAs(buf, 0)
        return Bye(y.Session(), _s(y.Reason()))
    if t is MessageType.NOTICE:
        n = fb.Notice.Notice.GetRootAs(buf, 0)
        return Notice(NoticeCode(n.Code()), _s(n.Detail()))
    if t is MessageType.CTL_REQUEST:
        import json

        q = fb.CtlRequest.CtlRequest.GetRootAs(buf, 0)
        blob = bytes(q.Blob(j) for j in range(q.BlobLength()))
        return CtlRequest(q.RequestId(), CtlOp(q.Op()), json.loads(_s(q.ArgsJson()) or "{}"),
                          blob)  # fmt: skip
    if t is MessageType.CTL_REPLY:
        import json

        r = fb.CtlReply.CtlReply.GetRootAs(buf, 0)
        return CtlReply(r.RequestId(), CtlCode(r.Code()), json.loads(_s(r.BodyJson()) or "{}"),
                        _s(r.Error()))  # fmt: skip
    raise TypeError(t)
