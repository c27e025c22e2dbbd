"""The Prometheus endpoint: text format 0.0.4 with the metric families edged always served, over
a small HTTP server of our own (edge.runtime._prom)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from edge.errors import ConfigError
from edge.runtime import Edged
from edge.runtime._prom import CONTENT_TYPE, MetricsServer, render

from ..support import wait_for


def _data() -> dict[str, Any]:
    return {
        "counters": {"acks_ok": 3, "bad_frames": 0},
        "agents": {"connected": 2, "known_offline": 1},
        "stats": {
            "stages_us": {
                "e2e": {"p50": 12.5, "p90": 20.0, "p99": 31.25, "p999": 40.0, "max": 41},
                "collect": {},
            },
            "jitter_pct": 22.5,
            "rules": {
                'cpu"hot\\x\ny': {"sla_rate": 0.995, "ok": 1, "failed": 2, "rejected": 0,
                                  "timeout": 0, "undeliverable": 0},
                "r2": {"sla_rate": None, "ok": 0, "failed": 0, "rejected": 0, "timeout": 0,
                       "undeliverable": 7},
            },
        },
        "store": {"commits": 10, "queued": 1, "last_commit_us": 250.5, "max_commit_us": 900,
                  "last_error": "text is not a sample"},
    }


EXPECTED = r"""# HELP edge_events_total Control-loop event counters
# TYPE edge_events_total counter
edge_events_total{event="acks_ok"} 3.0
edge_events_total{event="bad_frames"} 0.0
# HELP edge_agents Agents by state
# TYPE edge_agents gauge
edge_agents{state="connected"} 2.0
edge_agents{state="known_offline"} 1.0
# HELP edge_e2e_jitter_percent Mean absolute deviation of e2e latency over its mean
# TYPE edge_e2e_jitter_percent gauge
edge_e2e_jitter_percent 22.5
# HELP edge_rule_sla_attainment_ratio Share of instructions within SLA
# TYPE edge_rule_sla_attainment_ratio gauge
edge_rule_sla_attainment_ratio{rule_id="cpu\"hot\\x\ny"} 0.995
# HELP edge_rule_instructions_total Instructions by rule and outcome
# TYPE edge_rule_instructions_total counter
edge_rule_instructions_total{outcome="ok",rule_id="cpu\"hot\\x\ny"} 1.0
edge_rule_instructions_total{outcome="failed",rule_id="cpu\"hot\\x\ny"} 2.0
edge_rule_instructions_total{outcome="rejected",rule_id="cpu\"hot\\x\ny"} 0.0
edge_rule_instructions_total{outcome="timeout",rule_id="cpu\"hot\\x\ny"} 0.0
edge_rule_instructions_total{outcome="undeliverable",rule_id="cpu\"hot\\x\ny"} 0.0
edge_rule_instructions_total{outcome="ok",rule_id="r2"} 0.0
edge_rule_instructions_total{outcome="failed",rule_id="r2"} 0.0
edge_rule_instructions_total{outcome="rejected",rule_id="r2"} 0.0
edge_rule_instructions_total{outcome="timeout",rule_id="r2"} 0.0
edge_rule_instructions_total{outcome="undeliverable",rule_id="r2"} 7.0
# HELP edge_store_total Store writer counters
# TYPE edge_store_total counter
edge_store_total{counter="commits"} 10.0
# HELP edge_store_level Store writer levels
# TYPE edge_store_level gauge
edge_store_level{gauge="last_commit_us"} 250.5
edge_store_level{gauge="max_commit_us"} 900.0
edge_store_level{gauge="queued"} 1.0
"""
"""What prometheus_client's CounterMetricFamily/GaugeMetricFamily produced for the same data
(edged used it before; only its Go-style exponent for values >= 1e6 is not reproduced)."""


def test_render_is_the_text_format_edged_always_served() -> None:
    assert render(_data()) == EXPECTED


def test_render_special_values_and_no_jitter() -> None:
    data = _data()
    data["stats"]["jitter_pct"] = None
    data["stats"]["rules"]["r2"]["sla_rate"] = float("nan")
    data["stats"]["rules"]["r3"] = {**data["stats"]["rules"]["r2"], "sla_rate": float("inf")}
    text = render(data)
    assert "edge_e2e_jitter_percent" not in text
    assert 'edge_rule_sla_attainment_ratio{rule_id="r2"} NaN\n' in text
    assert 'edge_rule_sla_attainment_ratio{rule_id="r3"} +Inf\n' in text


def test_histograms_render_buckets_sum_and_count() -> None:
    data = _data()
    data["histograms"] = {
        "le_s": [0.001, 0.01],
        "stages": {"e2e": ([2, 3, 4], 4, 0.0125)},
        "rules": {"cpu_hot": ([1, 1, 1], 1, 0.0005)},
    }
    text = render(data)
    assert (
        "# TYPE edge_stage_latency_seconds histogram\n"
        'edge_stage_latency_seconds_bucket{le="0.001",stage="e2e"} 2.0\n'
        'edge_stage_latency_seconds_bucket{le="0.01",stage="e2e"} 3.0\n'
        'edge_stage_latency_seconds_bucket{le="+Inf",stage="e2e"} 4.0\n'
        'edge_stage_latency_seconds_sum{stage="e2e"} 0.0125\n'
        'edge_stage_latency_seconds_count{stage="e2e"} 4.0\n'
    ) in text
    assert 'edge_rule_e2e_latency_seconds_count{rule_id="cpu_hot"} 1.0\n' in text


def test_prometheus_clients_parser_reads_the_page() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    families = {f.name: f for f in parser.text_string_to_metric_families(render(_data()))}
    assert sorted(families) == sorted([
        "edge_events", "edge_agents",
        "edge_e2e_jitter_percent", "edge_rule_sla_attainment_ratio", "edge_rule_instructions",
        "edge_store", "edge_store_level",
    ])  # fmt: skip
    assert families["edge_events"].type == "counter"
    sla = families["edge_rule_sla_attainment_ratio"].samples
    assert [(s.labels, s.value) for s in sla] == [({"rule_id": 'cpu"hot\\x\ny'}, 0.995)]


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    s = MetricsServer("127.0.0.1:0", _data, timeout_s=0.2)
    try:
        yield s
    finally:
        s.close()


def _get(server: MetricsServer, path: str = "/metrics", method: str = "GET") -> tuple[int, Any, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def test_serves_the_page_over_http(server: MetricsServer) -> None:
    status, headers, body = _get(server)
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    assert body.decode() == EXPECTED
    assert server.thread.name == "edge-metrics"
    status, headers, body = _get(server, "/metrics", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == len(EXPECTED.encode())


def test_other_paths_and_methods_are_refused(server: MetricsServer) -> None:
    assert _get(server, "/favicon.ico")[0] == 404
    status, headers, _ = _get(server, "/metrics", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as c:
        c.sendall(b"nonsense\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 400 ")


def test_a_silent_client_does_not_stop_the_next_scrape(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as silent:
        status, _, body = _get(server)  # served once the silent one timed out
        assert status == 200 and body.decode() == EXPECTED
        assert silent.recv(100) == b""  # closed without an answer


def test_a_client_dribbling_its_request_cannot_hold_the_server(server: MetricsServer) -> None:
    """The timeout bounds the whole request, not each read: one byte every 0.1 s (under the
    0.2 s timeout) for as long as the test runs is cut off, and the next scrape is served."""
    import threading

    stop, started = threading.Event(), threading.Event()
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 4000

    def dribble() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as c:
            for byte in request:
                if stop.wait(0.1):
                    return
                try:
                    c.sendall(bytes([byte]))
                except OSError:
                    return  # cut off: what the server should do
                started.set()

    t = threading.Thread(target=dribble)
    t.start()
    try:
        assert started.wait(5)  # the dribbler is being served first
        status, _, body = _get(server)  # urlopen gives up after 5 s
        assert status == 200 and body.decode() == EXPECTED
    finally:
        stop.set()
        t.join()


def test_a_failing_read_is_a_500_and_the_server_keeps_serving() -> None:
    calls = []

    def read() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("snapshot bug")
        return _data()

    s = MetricsServer("127.0.0.1:0", read)
    try:
        assert _get(s)[0] == 500
        assert _get(s)[0] == 200
    finally:
        s.close()


def test_close_is_idempotent_and_releases_the_port() -> None:
    s = MetricsServer("127.0.0.1:0", _data)
    port = s.port
    s.close()
    s.close()
    assert not s.thread.is_alive()
    again = MetricsServer(f"127.0.0.1:{port}", _data)
    again.close()


@pytest.mark.parametrize("addr", ["9108", ":9108", "127.0.0.1:http"])
def test_malformed_addr_is_a_config_error(addr: str) -> None:
    with pytest.raises(ConfigError, match="expected host:port"):
        MetricsServer(addr, _data)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        s = MetricsServer("[::1]:0", _data)
    except OSError:
        pytest.skip("::1 is not configured here")
    try:
        with socket.create_connection(("::1", s.port), timeout=5) as c:
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while chunk := c.recv(65536):
                got += chunk
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        assert got.endswith(EXPECTED.encode())
    finally:
        s.close()


def test_live_edged_serves_every_family(make_cfg: Any, agent_factory: Any) -> None:
    with Edged(make_cfg(metrics_addr="127.0.0.1:0")) as d:
        assert d.metrics is not None
        with agent_factory("p1", ["cpu_usage"], handler=lambda ins: None) as agent:
            agent.report("cpu_usage", 1.0)
            wait_for(lambda: d.loop is not None and d.loop.counters["acks"] == 1)
            status, _, body = _get(d.metrics)
    text = body.decode()
    assert status == 200
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert names == {
        "edge_events_total", "edge_agents", "edge_stage_latency_seconds",
        "edge_rule_e2e_latency_seconds",
        "edge_e2e_jitter_percent", "edge_rule_sla_attainment_ratio",
        "edge_rule_instructions_total", "edge_store_total", "edge_store_level",
    }  # fmt: skip
    assert 'edge_rule_instructions_total{outcome="ok",rule_id="cpu_hot"} 1.0' in text
    assert 'edge_agents{state="active"} 1.0' in text


def _scrape(d: Edged) -> dict[str, Any]:
    """The page parsed by prometheus_client: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    assert d.metrics is not None
    _, _, body = _get(d.metrics)
    out: dict[str, Any] = {}
    types = {}
    for fam in text_string_to_metric_families(body.decode()):
        types[fam.name] = fam.type
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    out["types"] = types
    return out


def test_counters_and_histograms_only_grow_whatever_a_client_resets(
    make_cfg: Any, agent_factory: Any
) -> None:
    """Prometheus can rate() every counter and histogram: `edgectl stats --reset` resets the
    operator's view only; histograms are cumulative with _sum and _count, per stage and rule."""
    from edge.cli import CtlClient
    from edge.wire import CtlOp

    with Edged(make_cfg(metrics_addr="127.0.0.1:0")) as d, CtlClient(d.cfg.run_dir) as ctl:
        with agent_factory("p1", ["cpu_usage"], handler=lambda ins: None) as agent:
            for i in range(3):  # fire, re-arm, fire ...: three acknowledged instructions
                agent.report("cpu_usage", 1.0)
                wait_for(lambda i=i: d.loop is not None and d.loop.counters["acks"] == i + 1)
                agent.report("cpu_usage", 0.0)
            before = _scrape(d)
            ctl.request(CtlOp.STATS_RESET)
            assert ctl.request(CtlOp.STATS)["counters"]["acks"] == 0  # the operator's view
            assert ctl.request(CtlOp.STATS)["e2e_us"]["count"] == 0
            agent.report("cpu_usage", 1.0)
            wait_for(lambda: d.loop is not None and d.loop.counters["acks"] == 4)
            after = _scrape(d)
        assert ctl.request(CtlOp.STATS)["counters"]["acks"] == 1
    types = after.pop("types")
    before.pop("types")
    assert types["edge_stage_latency_seconds"] == "histogram"
    assert types["edge_rule_e2e_latency_seconds"] == "histogram"
    assert types["edge_events"] == "counter"
    # nothing that counts went down: every counter, bucket, _sum and _count only grew
    for key, value in before.items():
        name = key[0]
        if name.endswith(("_total", "_bucket", "_count", "_sum")):
            assert after[key] >= value, key
    assert after[("edge_events_total", (("event", "acks"),))] == 4
    for label, name in (("stage", "edge_stage_latency_seconds"),
                        ("rule_id", "edge_rule_e2e_latency_seconds")):
        key = "e2e" if label == "stage" else "cpu_hot"
        buckets = sorted(
            (float(dict(lb)["le"]), v) for (n, lb), v in after.items()
            if n == f"{name}_bucket" and dict(lb)[label] == key
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and buckets[-1][0] == float("inf")
        assert counts[-1] == after[(f"{name}_count", ((label, key),))] == 4
        assert after[(f"{name}_sum", ((label, key),))] > 0
        # the rate between the two scrapes is what happened in between: one more instruction
        assert counts[-1] - before[(f"{name}_count", ((label, key),))] == 1
