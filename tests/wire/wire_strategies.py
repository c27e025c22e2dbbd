"""Hypothesis strategies for every message dataclass, within each field's wire range."""

from __future__ import annotations

from hypothesis import strategies as st

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
    MetricDecl,
    Notice,
    NoticeCode,
    Param,
    Welcome,
)

u8 = st.integers(0, 2**8 - 1)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
small = st.integers(0, 3) | u64  # defaults (0) often, so absent fields get exercised
numbers = st.floats(allow_nan=False)  # NaN != NaN; samples test NaN bit patterns separately
text = st.text(max_size=40)
short_text = st.text(max_size=8)

samples = st.lists(st.tuples(u32, st.floats(), i64), max_size=40)  # (metric_id, value, t_ns)

params = st.builds(
    Param,
    key=short_text,
    value=st.one_of(st.booleans(), numbers, st.integers(-(2**53), 2**53), short_text),
)

heartbeats = st.builds(Heartbeat, session=small, t_ns=i64, seq=small)
acks = st.builds(
    Ack,
    session=small,
    instruction_id=small,
    status=st.sampled_from(AckStatus),
    t_delivered_ns=i64,
    t_done_ns=i64,
    detail=text,
)
instructions = st.builds(
    Instruction,
    instruction_id=small,
    rule_id=text,
    action=st.sampled_from(Action),
    custom_action=short_text,
    params=st.lists(params, max_size=5).map(tuple),
    priority=u8,
    deadline_ns=i64,
    metric_id=u32,
    value=numbers,
    t_sample_ns=i64,
    source_agent=short_text,
)
hellos = st.builds(
    Hello,
    agent_id=text,
    metrics=st.lists(
        st.builds(
            MetricDecl,
            name=short_text,
            labels=st.lists(st.tuples(short_text, short_text), max_size=3).map(tuple),
        ),
        max_size=5,
    ).map(tuple),
    agent_kind=short_text,
    pid=u32,
    heartbeat_ms=u32,
    protocol_version=u16,
)
welcomes = st.builds(
    Welcome,
    session=small,
    metric_ids=st.lists(u32, max_size=20).map(tuple),
    heartbeat_ms=u32,
    missed_beats=u32,
    max_batch=u32,
    max_msg_bytes=u32,
    protocol_version=u16,
)
byes = st.builds(Bye, session=small, reason=text)
notices = st.builds(Notice, code=st.sampled_from(NoticeCode), detail=text)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | numbers.filter(
        lambda x: x not in (float("inf"), float("-inf"))
    ) | short_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(short_text, json_values, max_size=4)
ctl_requests = st.builds(
    CtlRequest,
    request_id=small,
    op=st.sampled_from(CtlOp),
    args=json_objects,
    blob=st.binary(max_size=64),
)
ctl_replies = st.builds(
    CtlReply, request_id=small, code=st.sampled_from(CtlCode), body=json_objects, error=text
)

hot_messages = st.one_of(heartbeats, acks, instructions)
cold_messages = st.one_of(hellos, welcomes, byes, notices, ctl_requests, ctl_replies)
messages = st.one_of(hot_messages, cold_messages)
