# DO NOT EDIT. Generated from schemas/*.fbs by "make regen" (python -m edge.wire._gen) with flatc 25.12.19.
"""The wire layout of every type in schemas/*.fbs, read from flatc's binary schema.

The verifier (edge.wire._verify) compiles its per-table plans from these tables, so it checks
exactly what the schemas declare. Offsets are in bytes; a field's vtable entry is at byte
``4 + 2 * slot`` of its table's vtable.
"""

from typing import NamedTuple


class FieldLayout(NamedTuple):
    """One field of a table."""

    name: str
    slot: int  # field id
    kind: str  # "scalar", "string", "struct", "table" or "vector"
    size: int  # bytes inline in the table (4 for the offset of a string, table or vector)
    align: int  # alignment of those inline bytes
    type: str  # scalar type ("ubyte", "long", ...) or struct/table name; vectors: element type
    required: bool = False
    enum: str = ""  # the enum of the scalar, or of a vector's scalar elements
    elem_kind: str = ""  # vectors: "scalar", "struct", "string" or "table"
    elem_size: int = 0  # vectors: bytes per element (4 for offsets)
    elem_align: int = 0  # vectors: alignment of the element data


class StructLayout(NamedTuple):
    """A fixed-size struct; fields are (name, byte offset, scalar type)."""

    name: str
    size: int
    align: int
    fields: tuple[tuple[str, int, str], ...]


class EnumLayout(NamedTuple):
    """An enum: its underlying scalar type and (name, value) pairs in declaration order."""

    name: str
    type: str
    values: tuple[tuple[str, int], ...]


TABLES: dict[str, tuple[FieldLayout, ...]] = {
    'Ack': (
        FieldLayout('session', slot=0, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('instruction_id', slot=1, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('status', slot=2, kind='scalar', size=1, align=1, type='ubyte', enum='AckStatus'),
        FieldLayout('t_delivered_ns', slot=3, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('t_done_ns', slot=4, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('detail', slot=5, kind='string', size=4, align=4, type='string'),
    ),
    'Aggregate': (
        FieldLayout('device_id', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('window_start_unix_ns', slot=1, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('window_end_unix_ns', slot=2, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('rules_version', slot=3, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('rules_hash', slot=4, kind='string', size=4, align=4, type='string'),
        FieldLayout('agents_active', slot=5, kind='scalar', size=4, align=4, type='uint'),
        FieldLayout('samples', slot=6, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('samples_summarised', slot=7, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('series', slot=8, kind='vector', size=4, align=4, type='SeriesAgg', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('series_omitted', slot=9, kind='scalar', size=4, align=4, type='uint'),
        FieldLayout('rules', slot=10, kind='vector', size=4, align=4, type='RuleAgg', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('latency', slot=11, kind='vector', size=4, align=4, type='LatencyAgg', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('counters', slot=12, kind='vector', size=4, align=4, type='CounterAgg', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('health', slot=13, kind='table', size=4, align=4, type='Health'),
        FieldLayout('jitter_pct', slot=14, kind='scalar', size=8, align=8, type='double'),
    ),
    'Bye': (
        FieldLayout('session', slot=0, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('reason', slot=1, kind='string', size=4, align=4, type='string'),
    ),
    'Condition': (
        FieldLayout('selectors', slot=0, kind='vector', size=4, align=4, type='Selector', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('nodes', slot=1, kind='vector', size=4, align=4, type='Node', elem_kind='struct', elem_size=24, elem_align=8),
        FieldLayout('hold_ns', slot=2, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('text', slot=3, kind='string', size=4, align=4, type='string'),
    ),
    'CounterAgg': (
        FieldLayout('name', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('delta', slot=1, kind='scalar', size=8, align=8, type='ulong'),
    ),
    'CtlReply': (
        FieldLayout('request_id', slot=0, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('code', slot=1, kind='scalar', size=1, align=1, type='ubyte', enum='CtlCode'),
        FieldLayout('error', slot=2, kind='string', size=4, align=4, type='string'),
        FieldLayout('body_json', slot=3, kind='string', size=4, align=4, type='string'),
    ),
    'CtlRequest': (
        FieldLayout('request_id', slot=0, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('op', slot=1, kind='scalar', size=1, align=1, type='ubyte', enum='CtlOp'),
        FieldLayout('args_json', slot=2, kind='string', size=4, align=4, type='string'),
        FieldLayout('blob', slot=3, kind='vector', size=4, align=4, type='ubyte', elem_kind='scalar', elem_size=1, elem_align=1),
    ),
    'Health': (
        FieldLayout('cpu_pct', slot=0, kind='scalar', size=4, align=4, type='float'),
        FieldLayout('mem_used_pct', slot=1, kind='scalar', size=4, align=4, type='float'),
        FieldLayout('load1', slot=2, kind='scalar', size=4, align=4, type='float'),
        FieldLayout('disk_free_bytes', slot=3, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('temp_c', slot=4, kind='scalar', size=4, align=4, type='float'),
        FieldLayout('edged_rss_bytes', slot=5, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('edged_cpu_pct', slot=6, kind='scalar', size=4, align=4, type='float'),
    ),
    'Heartbeat': (
        FieldLayout('session', slot=0, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('t_ns', slot=1, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('seq', slot=2, kind='scalar', size=8, align=8, type='ulong'),
    ),
    'Hello': (
        FieldLayout('protocol_version', slot=0, kind='scalar', size=2, align=2, type='ushort'),
        FieldLayout('agent_id', slot=1, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('agent_kind', slot=2, kind='string', size=4, align=4, type='string'),
        FieldLayout('pid', slot=3, kind='scalar', size=4, align=4, type='uint'),
        FieldLayout('heartbeat_ms', slot=4, kind='scalar', size=4, align=4, type='uint'),
        FieldLayout('metrics', slot=5, kind='vector', size=4, align=4, type='MetricDecl', elem_kind='table', elem_size=4, elem_align=4),
    ),
    'Instruction': (
        FieldLayout('instruction_id', slot=0, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('rule_id', slot=1, kind='string', size=4, align=4, type='string'),
        FieldLayout('action', slot=2, kind='scalar', size=1, align=1, type='ubyte', enum='Action'),
        FieldLayout('custom_action', slot=3, kind='string', size=4, align=4, type='string'),
        FieldLayout('params', slot=4, kind='vector', size=4, align=4, type='Param', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('priority', slot=5, kind='scalar', size=1, align=1, type='ubyte'),
        FieldLayout('deadline_ns', slot=6, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('metric_id', slot=7, kind='scalar', size=4, align=4, type='uint'),
        FieldLayout('value', slot=8, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('t_sample_ns', slot=9, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('source_agent', slot=10, kind='string', size=4, align=4, type='string'),
    ),
    'Label': (
        FieldLayout('key', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('value', slot=1, kind='string', size=4, align=4, type='string', required=True),
    ),
    'LatencyAgg': (
        FieldLayout('stage', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('count', slot=1, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('p50_us', slot=2, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('p90_us', slot=3, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('p99_us', slot=4, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('p999_us', slot=5, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('max_us', slot=6, kind='scalar', size=8, align=8, type='double'),
    ),
    'MetricBatch': (
        FieldLayout('session', slot=0, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('seq', slot=1, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('t_send_ns', slot=2, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('samples', slot=3, kind='vector', size=4, align=4, type='Sample', elem_kind='struct', elem_size=24, elem_align=8),
    ),
    'MetricDecl': (
        FieldLayout('name', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('labels', slot=1, kind='vector', size=4, align=4, type='Label', elem_kind='table', elem_size=4, elem_align=4),
    ),
    'Notice': (
        FieldLayout('code', slot=0, kind='scalar', size=2, align=2, type='ushort', enum='NoticeCode'),
        FieldLayout('detail', slot=1, kind='string', size=4, align=4, type='string'),
    ),
    'Param': (
        FieldLayout('key', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('kind', slot=1, kind='scalar', size=1, align=1, type='ubyte', enum='ParamKind'),
        FieldLayout('number', slot=2, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('text', slot=3, kind='string', size=4, align=4, type='string'),
    ),
    'Rule': (
        FieldLayout('rule_id', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('name', slot=1, kind='string', size=4, align=4, type='string'),
        FieldLayout('content', slot=2, kind='string', size=4, align=4, type='string'),
        FieldLayout('action', slot=3, kind='scalar', size=1, align=1, type='ubyte', enum='Action'),
        FieldLayout('custom_action', slot=4, kind='string', size=4, align=4, type='string'),
        FieldLayout('priority', slot=5, kind='scalar', size=1, align=1, type='ubyte'),
        FieldLayout('sla_ms', slot=6, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('agents', slot=7, kind='vector', size=4, align=4, type='string', elem_kind='string', elem_size=4, elem_align=4),
        FieldLayout('params', slot=8, kind='vector', size=4, align=4, type='Param', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('cooldown_ns', slot=9, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('escalate', slot=10, kind='scalar', size=1, align=1, type='ubyte', enum='Action'),
        FieldLayout('escalate_custom', slot=11, kind='string', size=4, align=4, type='string'),
        FieldLayout('condition', slot=12, kind='table', size=4, align=4, type='Condition', required=True),
        FieldLayout('target', slot=13, kind='vector', size=4, align=4, type='string', elem_kind='string', elem_size=4, elem_align=4),
        FieldLayout('board', slot=14, kind='scalar', size=1, align=1, type='bool'),
        FieldLayout('rearm', slot=15, kind='table', size=4, align=4, type='Condition'),
        FieldLayout('rearm_content', slot=16, kind='string', size=4, align=4, type='string'),
    ),
    'RuleAgg': (
        FieldLayout('rule_id', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('instructions', slot=1, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('acks_ok', slot=2, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('acks_failed', slot=3, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('acks_rejected', slot=4, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('unacked', slot=5, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('sla_judged', slot=6, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('sla_misses', slot=7, kind='scalar', size=8, align=8, type='ulong'),
    ),
    'RuleTable': (
        FieldLayout('schema_version', slot=0, kind='scalar', size=2, align=2, type='ushort'),
        FieldLayout('version', slot=1, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('content_hash', slot=2, kind='vector', size=4, align=4, type='ubyte', elem_kind='scalar', elem_size=1, elem_align=1),
        FieldLayout('created_at_unix_ms', slot=3, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('description', slot=4, kind='string', size=4, align=4, type='string'),
        FieldLayout('custom_actions', slot=5, kind='vector', size=4, align=4, type='string', elem_kind='string', elem_size=4, elem_align=4),
        FieldLayout('rules', slot=6, kind='vector', size=4, align=4, type='Rule', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('expires_at_unix_ms', slot=7, kind='scalar', size=8, align=8, type='long'),
        FieldLayout('scope', slot=8, kind='vector', size=4, align=4, type='string', elem_kind='string', elem_size=4, elem_align=4),
    ),
    'Selector': (
        FieldLayout('metric', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('labels', slot=1, kind='vector', size=4, align=4, type='Label', elem_kind='table', elem_size=4, elem_align=4),
    ),
    'SeriesAgg': (
        FieldLayout('agent_id', slot=0, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('metric', slot=1, kind='string', size=4, align=4, type='string', required=True),
        FieldLayout('labels', slot=2, kind='vector', size=4, align=4, type='Label', elem_kind='table', elem_size=4, elem_align=4),
        FieldLayout('count', slot=3, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('min', slot=4, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('max', slot=5, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('mean', slot=6, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('last', slot=7, kind='scalar', size=8, align=8, type='double'),
        FieldLayout('p99', slot=8, kind='scalar', size=8, align=8, type='double'),
    ),
    'SignedRuleTable': (
        FieldLayout('table', slot=0, kind='vector', size=4, align=4, type='ubyte', elem_kind='scalar', elem_size=1, elem_align=1, required=True),
        FieldLayout('key_id', slot=1, kind='vector', size=4, align=4, type='ubyte', elem_kind='scalar', elem_size=1, elem_align=1, required=True),
        FieldLayout('signature', slot=2, kind='vector', size=4, align=4, type='ubyte', elem_kind='scalar', elem_size=1, elem_align=1, required=True),
    ),
    'Welcome': (
        FieldLayout('protocol_version', slot=0, kind='scalar', size=2, align=2, type='ushort'),
        FieldLayout('session', slot=1, kind='scalar', size=8, align=8, type='ulong'),
        FieldLayout('metric_ids', slot=2, kind='vector', size=4, align=4, type='uint', elem_kind='scalar', elem_size=4, elem_align=4),
        FieldLayout('heartbeat_ms', slot=3, kind='scalar', size=4, align=4, type='uint'),
        FieldLayout('missed_beats', slot=4, kind='scalar', size=4, align=4, type='uint'),
        FieldLayout('max_batch', slot=5, kind='scalar', size=4, align=4, type='uint'),
        FieldLayout('max_msg_bytes', slot=6, kind='scalar', size=4, align=4, type='uint'),
    ),
}

STRUCTS: dict[str, StructLayout] = {
    'Node': StructLayout('Node', size=24, align=8, fields=(
        ('window_ns', 0, 'long'),
        ('value', 8, 'double'),
        ('sel', 16, 'ushort'),
        ('op', 18, 'ubyte'),
    )),
    'Sample': StructLayout('Sample', size=24, align=8, fields=(
        ('t_ns', 0, 'long'),
        ('value', 8, 'double'),
        ('metric_id', 16, 'uint'),
        ('flags', 20, 'uint'),
    )),
}

ENUMS: dict[str, EnumLayout] = {
    'AckStatus': EnumLayout('AckStatus', 'ubyte', (('Ok', 0), ('Failed', 1), ('Rejected', 2),)),
    'Action': EnumLayout('Action', 'ubyte', (('Unspecified', 0), ('RestartAgent', 1), ('StopAgent', 2), ('PauseAgent', 3), ('ResumeAgent', 4), ('Throttle', 5), ('SetParam', 6), ('Alert', 7), ('SafeState', 8), ('Custom', 255),)),
    'CtlCode': EnumLayout('CtlCode', 'ubyte', (('Ok', 0), ('BadRequest', 1), ('Refused', 2), ('Error', 3),)),
    'CtlOp': EnumLayout('CtlOp', 'ubyte', (('Unspecified', 0), ('Status', 1), ('Agents', 2), ('Stats', 3), ('RulesPush', 4), ('RulesList', 5), ('Tail', 6), ('StatsReset', 7), ('RulesRollback', 8),)),
    'NodeOp': EnumLayout('NodeOp', 'ubyte', (('Const', 0), ('Latest', 1), ('Avg', 2), ('Min', 3), ('Max', 4), ('Sum', 5), ('Count', 6), ('Rate', 7), ('Absent', 8), ('Gt', 9), ('Ge', 10), ('Lt', 11), ('Le', 12), ('Eq', 13), ('Ne', 14), ('And', 15), ('Or', 16), ('Not', 17),)),
    'NoticeCode': EnumLayout('NoticeCode', 'ushort', (('Unspecified', 0), ('HelloRequired', 1), ('DuplicateAgent', 2), ('BadHello', 3), ('UnknownMetric', 4), ('Malformed', 5), ('TooLarge', 6), ('ProtocolVersion', 7), ('ShuttingDown', 8), ('ForeignAck', 9),)),
    'ParamKind': EnumLayout('ParamKind', 'ubyte', (('Number', 0), ('Bool', 1), ('Text', 2),)),
}

# file identifier -> root table
ROOTS: dict[bytes, str] = {
    b'EACK': 'Ack',
    b'EAGG': 'Aggregate',
    b'EBYE': 'Bye',
    b'ECRP': 'CtlReply',
    b'ECRQ': 'CtlRequest',
    b'EHBT': 'Heartbeat',
    b'EHLO': 'Hello',
    b'EINS': 'Instruction',
    b'EMBT': 'MetricBatch',
    b'ENTC': 'Notice',
    b'ERTB': 'RuleTable',
    b'ESRT': 'SignedRuleTable',
    b'EWLC': 'Welcome',
}
