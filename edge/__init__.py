"""edge: a per-device runtime giving sub-millisecond local control over AI agents and firmware.

The package reads bottom-up; a module may import only from layers below its own (a test
enforces it):

    errors, clock, config, _log   foundations (and _digest: hashes without OpenSSL)
    transport                     ZeroMQ sockets and the run directory
    wire                          FlatBuffers schemas: generated code, lean codec, verifier
    rules                         rule model, parser, compiled table, evaluator
    store                         LMDB state: registry, rule tables, audit log, stats
    runtime                       edged: the control loop, registry, stats, ctl server
    sync                          edge-sync: outbox up, rule tables down over NATS JetStream
    sdk                           the agent library (talks to edged over the wire only)
    sim                           simulated agents, load generators, the child-process rig
    cli                           edgectl: operator commands, bench, demo
    _edged                        the edged console script (the self-test imported only for it)

Agents use ``edge.sdk``; operators use ``edgectl``. Everything else is internal.
"""

__version__ = "0.1.0"
