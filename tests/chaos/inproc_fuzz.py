"""In-process fuzzing of the verifier and the lean codec paths (edge/wire/_verify.py, _codec.py).

Every input goes through ``verify``; every buffer it accepts must then go through the lean
decoders (``decode``, a MetricBatch's samples) and flatc's generated accessors
(``tests/wire/wire_builders.generated_decode``) without an exception other than the decoders'
own VerifyError, and both must read the same values. A buffer that breaks that is *a malformed
buffer accepted*: counted, its first bytes kept as an example. Rule tables (decoded by
edge.rules, not by flatc's accessors here) must only ever raise EdgeError.

Engine: atheris (coverage-guided libFuzzer, PyPI) when it imports, seeded with one valid buffer
of every message type; else a mutation loop of our own over the same seeds (atheris has wheels
for x86-64 Linux only; elsewhere it must be built with clang). Run as a script, it writes its
figures as JSON::

    python -m tests.chaos.inproc_fuzz --runs 1000000 --out bench-out/inproc.json [--engine mutator]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RULE_TYPES = (b"ERTB", b"ESRT")
SAMPLE_FORMAT = "<qdII"  # edge.wire.SAMPLE_FORMAT (checked in Checker; edge is imported late,
# so that atheris can instrument it)


def seeds() -> list[bytes]:
    """One valid buffer of each message type, nested shapes and both encoders included."""
    from edge.wire import (
        Bye,
        CtlCode,
        CtlReply,
        Notice,
        NoticeCode,
        Welcome,
        encode_bye,
        encode_ctl_reply,
        encode_notice,
        encode_welcome,
    )
    from tests.wire.test_verify import sample_buffers

    out = list(sample_buffers().values())
    out += [
        encode_welcome(Welcome(7, (1, 2, 3), 100, 3, 4096, 1 << 20, 1)),
        encode_bye(Bye(7, "done")),
        encode_notice(Notice(NoticeCode.MALFORMED, "x")),
        encode_ctl_reply(CtlReply(1, CtlCode.OK, {"a": [1, 2]}, "")),
    ]
    return out


class Checker:
    """verify -> lean decode -> generated decode -> compare, with counts."""

    def __init__(self) -> None:
        from edge.errors import EdgeError, VerifyError, WireError
        from edge.rules import decode_table_with_info
        from edge.wire import SAMPLE_FORMAT as FORMAT
        from edge.wire import MessageType, decode, lean_instruction, lean_type, verify
        from tests.wire.wire_builders import generated_decode

        assert FORMAT == SAMPLE_FORMAT, FORMAT

        self._verify, self._decode, self._generated = verify, decode, generated_decode
        self._lean_type, self._lean_instruction = lean_type, lean_instruction
        self.lean_taken = 0
        self._rules = decode_table_with_info
        self._batch, self._instruction = MessageType.METRIC_BATCH, MessageType.INSTRUCTION
        self._edge, self._verify_error, self._wire = EdgeError, VerifyError, WireError
        self.inputs = self.rejected = self.accepted = self.decoder_refused = 0
        self.malformed_accepted = 0
        self.by_type: dict[str, int] = {}
        self.examples: list[dict[str, str]] = []

    def __call__(self, data: bytes) -> None:
        self.inputs += 1
        data = bytes(data)
        try:  # the fixed-layout checks edged and the SDK try first (edge.wire._lean)
            lean_t = self._lean_type(data, 1 << 30)
            lean_ins = self._lean_instruction(data)
        except Exception as exc:
            self._finding(data, f"a lean check raised {exc!r}")
            return
        try:
            t = self._verify(data)
        except self._wire:
            self.rejected += 1
            if lean_t is not None or lean_ins is not None:
                self._finding(data, "a lean check accepted what verify refuses")
            return
        except Exception as exc:  # the verifier itself must only ever refuse with WireError
            self._finding(data, f"verify raised {exc!r}")
            return
        self.accepted += 1
        self.by_type[t.name] = self.by_type.get(t.name, 0) + 1
        if lean_t is not None or lean_ins is not None:
            self.lean_taken += 1
            if (lean_t or self._instruction) is not t:
                self._finding(data, f"a lean check took a {t.name} as {lean_t}")
            elif lean_ins is not None and repr(lean_ins) != repr(self._decode(data)):
                self._finding(data, "lean_instruction decoded differently")
        if bytes(data[4:8]) in RULE_TYPES:
            try:
                self._rules(bytes(data), trusted_keys={}, require_signed=False)
            except self._edge:
                self.decoder_refused += 1
            except Exception as exc:
                self._finding(data, f"rule table decoder raised {exc!r}")
            return
        try:
            lean: Any = self._decode(data)
            if t is self._batch:
                lean = (lean.session, lean.seq, lean.t_send_ns, [_bits(s) for s in lean.samples()])
        except self._verify_error:
            self.decoder_refused += 1
            return
        except Exception as exc:
            self._finding(data, f"lean decoder raised {exc!r}")
            return
        try:
            gen: Any = self._generated(bytes(data))
            if t is self._batch:
                gen = (gen[0], gen[1], gen[2], [_bits(s) for s in gen[3]])
        except Exception as exc:
            self._finding(data, f"flatc accessors raised {exc!r} on a buffer the lean codec read")
            return
        if repr(lean) != repr(gen):
            self._finding(data, f"values differ: lean {lean!r:.200} vs flatc {gen!r:.200}")

    def _finding(self, data: bytes, what: str) -> None:
        self.malformed_accepted += 1
        if len(self.examples) < 20:
            self.examples.append({"what": what, "hex": bytes(data[:256]).hex()})

    def figures(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "rejected": self.rejected,
            "accepted": self.accepted,
            "decoder_refused": self.decoder_refused,
            "lean_taken": self.lean_taken,
            "malformed_accepted": self.malformed_accepted,
            "accepted_by_type": self.by_type,
            "examples": self.examples,
        }


def _bits(s: Any) -> bytes:
    """A sample (t_ns, value, metric_id, flags) as bytes: NaN payloads and -0.0 compare."""
    return struct.pack(SAMPLE_FORMAT, *s)


# --- the mutator (fallback engine; also the live fuzzer's) --------------------------------------

_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0xFE, 0x10, 0x20, 0x40)


_IDENTS = (b"EHLO", b"EWLC", b"EMBT", b"EHBT", b"EINS", b"EACK", b"EBYE", b"ENTC", b"ECRQ",
           b"ECRP", b"ERTB", b"ESRT", b"EAGG", b"XXXX")  # edge.wire.MessageType's, and one not


def mutate(buf: bytes, rnd: random.Random, pool: list[bytes] | None = None) -> bytes:
    """One to four random edits of ``buf``: bit flips, interesting bytes and 32-bit words
    (offsets, lengths), truncation, extension, duplication, splicing with another buffer of
    ``pool``, a different file identifier."""
    b = bytearray(buf)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(9)
        n = len(b)
        if op == 0 and n:
            i = rnd.randrange(n)
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and n:
            b[rnd.randrange(n)] = rnd.choice(_INTERESTING)
        elif op == 2 and n >= 4:
            i = rnd.randrange(0, n - 3) & ~3 if rnd.random() < 0.7 else rnd.randrange(n - 3)
            word = rnd.choice((0, 1, 4, n, n - 4, n + 4, 0x7FFFFFFF, 0xFFFFFFFF,
                               rnd.randrange(1 << 32)))
            b[i : i + 4] = struct.pack("<I", word % (1 << 32))
        elif op == 3 and n:
            del b[rnd.randrange(n) :]
        elif op == 4:
            b += os.urandom(rnd.choice((1, 3, 4, 8, 64)))
        elif op == 5 and n >= 2:
            i = rnd.randrange(n)
            j = rnd.randrange(i, min(n, i + 64))
            b[j:j] = b[i:j]
        elif op == 6 and pool:
            other = rnd.choice(pool)
            cut = rnd.randrange(len(other) + 1)
            b = b[: rnd.randrange(n + 1)] + bytearray(other[cut:])
        elif op == 7 and n >= 8:
            b[4:8] = rnd.choice(_IDENTS)
        elif op == 8 and n:
            i = rnd.randrange(n)
            b[i : i + 8] = os.urandom(min(8, n - i))
    return bytes(b)


def run_mutator(check: Checker, runs: int, seed: int) -> None:
    rnd = random.Random(seed)
    pool = seeds()
    corpus = list(pool)
    for _ in range(runs):
        r = rnd.random()
        if r < 0.05:
            data = os.urandom(rnd.randrange(0, 128))
        else:
            data = mutate(rnd.choice(corpus), rnd, pool)
        before = check.accepted
        check(data)
        if check.accepted != before and len(corpus) < 5000:
            corpus.append(data)  # accepted mutants are good parents: deeper structure


def run_atheris(runs: int, out: Path, seed: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["edge"]):  # coverage feedback from edge's code
        check = Checker()
    corpus = Path(tempfile.mkdtemp(prefix="edge-fuzz-corpus-"))
    for i, s in enumerate(seeds()):
        (corpus / f"seed{i}").write_bytes(s)
    t0 = time.monotonic()

    def one(data: bytes) -> None:
        check(data)
        if check.inputs >= runs or check.inputs % 50_000 == 0:
            write(out, check, "atheris", time.monotonic() - t0)

    # libFuzzer ends the process itself (os-level exit) after -runs: the figures are written
    # from inside the callback, the last time at the final run
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-seed={seed}", "-max_len=4096",
                   "-print_final_stats=0", "-close_fd_mask=1", str(corpus)], one)
    atheris.Fuzz()


def write(out: Path, check: Checker, engine: str, seconds: float) -> None:
    doc = {"engine": engine, "seconds": round(seconds, 2), **check.figures()}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--engine", choices=["auto", "atheris", "mutator"], default="auto")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    engine = a.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "mutator"
    if engine == "atheris":
        run_atheris(a.runs, a.out, a.seed)
    check = Checker()
    t0 = time.monotonic()
    run_mutator(check, a.runs, a.seed)
    write(a.out, check, "mutator", time.monotonic() - t0)


if __name__ == "__main__":
    main()
