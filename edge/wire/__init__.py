"""The wire layer: the FlatBuffers protocol of schemas/*.fbs (docs/protocol.md).

Above transport (ZeroMQ sockets), below rules: it imports nothing from edge but edge.errors.

* ``verify(buf)`` checks any buffer from outside the process before it is used.
* A lean codec for the hot path (MetricBatch, Heartbeat, Instruction, Ack): hand-written struct
  packing, byte-identical to flatbuffers.Builder output for a fixed call order.
* ``encode_*`` / ``decode_*`` for every other message, ``decode(buf)`` for any of them.
* ``lean_type`` / ``lean_instruction``: verify + decode in one pass for the layouts our own
  encoders write (edge.wire._lean), with verify() as the fallback for any other layout.
* ``fb``: the flatc-generated classes, for building or reading with flatbuffers.Builder.
"""

from . import fb as fb
from ._codec import Buffer as Buffer
from ._codec import MetricBatchView as MetricBatchView
from ._codec import decode as decode
from ._codec import decode_ack as decode_ack
from ._codec import decode_bye as decode_bye
from ._codec import decode_ctl_reply as decode_ctl_reply
from ._codec import decode_ctl_request as decode_ctl_request
from ._codec import decode_heartbeat as decode_heartbeat
from ._codec import decode_hello as decode_hello
from ._codec import decode_instruction as decode_instruction
from ._codec import decode_metric_batch as decode_metric_batch
from ._codec import decode_notice as decode_notice
from ._codec import decode_welcome as decode_welcome
from ._codec import encode_ack as encode_ack
from ._codec import encode_bye as encode_bye
from ._codec import encode_ctl_reply as encode_ctl_reply
from ._codec import encode_ctl_request as encode_ctl_request
from ._codec import encode_heartbeat as encode_heartbeat
from ._codec import encode_hello as encode_hello
from ._codec import encode_instruction as encode_instruction
from ._codec import encode_metric_batch as encode_metric_batch
from ._codec import encode_notice as encode_notice
from ._codec import encode_welcome as encode_welcome
from ._codec import message_type as message_type
from ._doc import DocError as DocError
from ._doc import decode_aggregate as decode_aggregate
from ._doc import decode_doc as decode_doc
from ._doc import encode_aggregate as encode_aggregate
from ._doc import encode_doc as encode_doc
from ._lean import lean_ack as lean_ack
from ._lean import lean_instruction as lean_instruction
from ._lean import lean_type as lean_type
from ._messages import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._messages import SAMPLE_FORMAT as SAMPLE_FORMAT
from ._messages import SAMPLE_SIZE as SAMPLE_SIZE
from ._messages import TIMER_METRIC_ID as TIMER_METRIC_ID
from ._messages import Ack as Ack
from ._messages import AckStatus as AckStatus
from ._messages import Action as Action
from ._messages import Bye as Bye
from ._messages import CtlCode as CtlCode
from ._messages import CtlOp as CtlOp
from ._messages import CtlReply as CtlReply
from ._messages import CtlRequest as CtlRequest
from ._messages import Heartbeat as Heartbeat
from ._messages import Hello as Hello
from ._messages import Instruction as Instruction
from ._messages import MessageType as MessageType
from ._messages import MetricDecl as MetricDecl
from ._messages import Notice as Notice
from ._messages import NoticeCode as NoticeCode
from ._messages import Param as Param
from ._messages import ParamKind as ParamKind
from ._messages import Welcome as Welcome
from ._messages import action_from_name as action_from_name
from ._messages import action_name as action_name
from ._verify import verify as verify
