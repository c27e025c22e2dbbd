"""The ``edged`` console script: edged's command line plus ``--self-test``.

Outside every layer on purpose: the daemon (edge.runtime) may not import the self-test, which
drives edged through the SDK and edgectl's client (edge.cli), and importing those for every
start would cost edged ~10 MB of RSS and ~300 ms of start-up (click, rich, the SDK). So the
self-test is imported only when ``--self-test`` asks for it.
"""

from __future__ import annotations


def _self_test() -> int:
    from .cli._selftest import run

    return run()


def main() -> None:
    from .runtime import main as edged

    edged(self_test=_self_test)
