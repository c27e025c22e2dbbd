"""The same stats edgectl shows, in the Prometheus text format, served off the loop thread.

Scrapes read counters (an atomic dict copy) and a StatsView snapshot (percentile math on the
``edge-metrics`` thread). Loopback by default: exposing it wider is an explicit
``metrics_addr``.

Why not prometheus_client: importing it brings ``http.server`` and with it http.client,
email, ssl and OpenSSL's libcrypto, ~9.6 MB of RSS against a 30 MB budget for all of edged
(``edgectl bench --scenarios footprint`` reports the import breakdown). What edged
needs is one read-only page of the text format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/): ``# HELP`` / ``# TYPE`` lines,
then ``name{label="value",...} value`` per sample. Counters carry the ``_total`` suffix
and are never reset by a client (``edgectl stats --reset`` resets only the operator's view);
latency is exposed as histograms (``_bucket{le=...}``, ``_sum``, ``_count``) per stage and per
rule, with fixed bounds, so a Prometheus server can compute rates and quantiles and aggregate
boards. A test parses the page with prometheus_client's own parser.

The server is one thread that accepts one connection at a time (``Connection: close``), reads
the request head with a timeout, answers ``GET``/``HEAD`` on ``/metrics`` (and ``/``), and
never lets a client hold it longer than ``timeout_s``.
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..config import split_host_port

log = logging.getLogger("edge.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_HEAD = 8192  # bytes; a scrape's request is a few hundred
_STORE_GAUGES = {"queued", "last_commit_us", "max_commit_us"}  # these go down: not counters
_OUTCOMES = ("ok", "failed", "rejected", "timeout", "undeliverable")

Sample = tuple[tuple[tuple[str, str], ...], float]
"""((label name, label value), ...), value."""


# ------------------------------------------------------------------ text format 0.0.4


def _value(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def _escape_label(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n")


def _family(out: list[str], name: str, kind: str, doc: str, samples: Iterable[Sample]) -> None:
    """Append one metric family. Counters are exposed as ``<name>_total``."""
    if kind == "counter":
        name += "_total"
    out.append(f"# HELP {name} {_escape_help(doc)}\n# TYPE {name} {kind}\n")
    for labels, value in samples:
        if labels:
            inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels))
            out.append(f"{name}{{{inner}}} {_value(value)}\n")
        else:
            out.append(f"{name} {_value(value)}\n")


def _histogram(out: list[str], name: str, doc: str, label: str, le_s: list[float],
               series: dict[str, tuple[list[int], int, float]]) -> None:
    """One histogram family: per ``label`` value, cumulative ``_bucket{le}`` counts (then
    ``+Inf``), ``_sum`` (seconds) and ``_count``; all only ever grow, so ``rate()`` and
    ``histogram_quantile()`` work and boards aggregate."""
    out.append(f"# HELP {name} {_escape_help(doc)}\n# TYPE {name} histogram\n")
    bounds = [_value(b) for b in le_s] + ["+Inf"]
    for key, (cum, count, total_s) in series.items():
        lv = f'{label}="{_escape_label(str(key))}"'
        for le, c in zip(bounds, cum, strict=True):
            out.append(f'{name}_bucket{{le="{le}",{lv}}} {_value(c)}\n')
        out.append(f"{name}_sum{{{lv}}} {_value(total_s)}\n")
        out.append(f"{name}_count{{{lv}}} {_value(count)}\n")


def _labelled(label: str, items: Iterable[tuple[str, float]]) -> Iterator[Sample]:
    return ((((label, str(k)),), v) for k, v in items)


def render(data: dict[str, Any]) -> str:
    """The exposition page for one read of edged's state (see ``Edged._metrics_read``)."""
    out: list[str] = []
    _family(out, "edge_events", "counter", "Control-loop event counters",
            _labelled("event", sorted(data["counters"].items())))
    _family(out, "edge_agents", "gauge", "Agents by state",
            _labelled("state", sorted(data["agents"].items())))
    health = data.get("agent_health") or ()
    if health:  # only when some agent reports health_* series
        _family(out, "edge_agent_health", "gauge",
                "An agent's own health_* series (a bridged device: online, errors, timeouts, ...)",
                [((("agent", a), ("name", n)), v) for a, n, v in health])
    stats = data["stats"]
    hists = data.get("histograms")
    if hists is not None:
        _histogram(out, "edge_stage_latency_seconds",
                   "Latency per stage of the metric -> instruction -> Ack loop, since start",
                   "stage", hists["le_s"], hists["stages"])
        _histogram(out, "edge_rule_e2e_latency_seconds",
                   "e2e latency (sample -> agent done) of acknowledged instructions per rule, "
                   "since start", "rule_id", hists["le_s"], hists["rules"])
    if stats["jitter_pct"] is not None:
        _family(out, "edge_e2e_jitter_percent", "gauge",
                "Mean absolute deviation of e2e latency over its mean",
                [((), stats["jitter_pct"])])
    rules = stats["rules"]
    _family(
        out,
        "edge_rule_sla_attainment_ratio",
        "gauge",
        "Share of instructions within SLA",
        _labelled("rule_id", ((rid, rc["sla_rate"]) for rid, rc in rules.items()
                              if rc["sla_rate"] is not None)),
    )
    _family(
        out,
        "edge_rule_instructions",
        "counter",
        "Instructions by rule and outcome",
        (
            ((("rule_id", rid), ("outcome", outcome)), rc[outcome])
            for rid, rc in rules.items()
            for outcome in _OUTCOMES
        ),
    )
    numeric = [(k, v) for k, v in sorted(data["store"].items()) if isinstance(v, int | float)]
    _family(out, "edge_store", "counter", "Store writer counters",
            _labelled("counter", ((k, v) for k, v in numeric if k not in _STORE_GAUGES)))
    _family(out, "edge_store_level", "gauge", "Store writer levels",
            _labelled("gauge", ((k, v) for k, v in numeric if k in _STORE_GAUGES)))
    return "".join(out)


# ------------------------------------------------------------------ HTTP


def _response(status: str, body: bytes, *, content_type: str = "text/plain; charset=utf-8",
              head_only: bool = False, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


class MetricsServer:
    """Serves ``render(read())`` at ``http://<addr>/metrics`` on the ``edge-metrics`` thread.

    ``addr`` is ``host:port`` (``[::1]:9108`` for IPv6; port 0 picks a free one, see
    ``port``). Raises ConfigError for a malformed addr, OSError when it cannot bind.
    ``timeout_s`` bounds how long one client may take to send its request and read the page.
    With ``start=False`` the port is bound but not served until :meth:`start` (edged binds
    early, so that a taken port fails its start before anything else runs, and serves once
    ready).
    """

    def __init__(self, addr: str, read: Callable[[], dict[str, Any]], *,
                 timeout_s: float = 2.0, start: bool = True):
        host, port = split_host_port(addr)
        self.host = host
        self._read = read
        self._timeout_s = timeout_s
        bind_host = host.strip("[]")
        family, _, _, _, sockaddr = socket.getaddrinfo(
            bind_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._sock: socket.socket | None = socket.create_server(
            (sockaddr[0], sockaddr[1]), family=family, backlog=16
        )
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="edge-metrics", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Serve on the ``edge-metrics`` thread; a no-op once started or closed."""
        if self._sock is not None and self._thread.ident is None:
            self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port; idempotent, and fine before :meth:`start`."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._thread.ident is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(5)
        sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # the client went away between poll and accept
            except OSError as exc:  # e.g. EMFILE: back off through the next poll
                log.warning("metrics: accept failed: %s", exc)
                continue
            with conn:
                try:
                    self._handle(conn, time.monotonic() + self._timeout_s)
                except OSError:  # a client that hung up or stalled: its problem, not ours
                    pass

    def _handle(self, conn: socket.socket, deadline: float) -> None:
        """One request, all of it (reading the head, sending the page) before ``deadline``:
        a client dribbling a byte at a time cannot hold the one-at-a-time server."""
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("metrics: request not complete in time")
            conn.settimeout(left)
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
            if len(head) > MAX_REQUEST_HEAD:
                conn.sendall(_response("431 Request Header Fields Too Large", b"too large\n"))
                return
        conn.settimeout(max(0.001, deadline - time.monotonic()))  # and the reply: sendall's total
        parts = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            conn.sendall(_response("400 Bad Request", b"bad request\n"))
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            conn.sendall(_response("405 Method Not Allowed", b"GET or HEAD\n",
                                   extra="Allow: GET, HEAD\r\n"))
            return
        if target.split("?", 1)[0] not in ("/metrics", "/"):
            conn.sendall(_response("404 Not Found", b"see /metrics\n", head_only=method == "HEAD"))
            return
        try:
            body = render(self._read()).encode("utf-8")
        except Exception:  # a bug in a snapshot must not kill the endpoint
            log.exception("metrics: rendering the page failed")
            conn.sendall(_response("500 Internal Server Error", b"see edged's log\n"))
            return
        conn.sendall(_response("200 OK", body, content_type=CONTENT_TYPE,
                               head_only=method == "HEAD"))
