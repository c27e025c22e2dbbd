"""The same stats edgectl shows, in the Prometheus text format, served off the loop thread.

Scrapes read counters (an atomic dict copy) and a StatsView snapshot (percentile math on the
HTTP thread). Loopback by default: exposing it wider is an explicit ``metrics_addr``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import ConfigError

_STORE_GAUGES = {"queued", "last_commit_us", "max_commit_us"}  # these go down: not counters


class EdgeCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]):
        self._read = read

    def collect(self) -> Iterator[Any]:
        data = self._read()
        c = CounterMetricFamily("edge_events", "Control-loop event counters", labels=["event"])
        for name, value in sorted(data["counters"].items()):
            c.add_metric([name], value)
        yield c
        agents = GaugeMetricFamily("edge_agents", "Agents by state", labels=["state"])
        for state, n in sorted(data["agents"].items()):
            agents.add_metric([state], n)
        yield agents
        stats = data["stats"]
        lat = GaugeMetricFamily(
            "edge_stage_latency_microseconds",
            "Per-stage latency percentiles since start or reset",
            labels=["stage", "quantile"],
        )
        for stage, summary in stats["stages_us"].items():
            for q, key in (
                ("0.5", "p50"),
                ("0.9", "p90"),
                ("0.99", "p99"),
                ("0.999", "p999"),
                ("1", "max"),
            ):
                if key in summary:
                    lat.add_metric([stage, q], summary[key])
        yield lat
        if stats["jitter_pct"] is not None:
            yield GaugeMetricFamily(
                "edge_e2e_jitter_percent",
                "Mean absolute deviation of e2e latency over its mean",
                value=stats["jitter_pct"],
            )
        sla = GaugeMetricFamily(
            "edge_rule_sla_attainment_ratio", "Share of instructions within SLA", labels=["rule_id"]
        )
        fired = CounterMetricFamily(
            "edge_rule_instructions",
            "Instructions by rule and outcome",
            labels=["rule_id", "outcome"],
        )
        for rid, rc in stats["rules"].items():
            if rc["sla_rate"] is not None:
                sla.add_metric([rid], rc["sla_rate"])
            for outcome in ("ok", "failed", "rejected", "timeout", "undeliverable"):
                fired.add_metric([rid, outcome], rc[outcome])
        yield sla
        yield fired
        store = CounterMetricFamily("edge_store", "Store writer counters", labels=["counter"])
        levels = GaugeMetricFamily("edge_store_level", "Store writer levels", labels=["gauge"])
        for name, value in sorted(data["store"].items()):
            if isinstance(value, int | float):
                (levels if name in _STORE_GAUGES else store).add_metric([name], value)
        yield store
        yield levels


class MetricsServer:
    def __init__(self, addr: str, read: Callable[[], dict[str, Any]]):
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"metrics_addr {addr!r}: expected host:port, e.g. 127.0.0.1:9108")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(EdgeCollector(read))
        server, self._thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=registry
        )
        self._server: WSGIServer | None = server
        self._thread.name = "edge-metrics"
        self.port: int = server.server_port
        self.host = host

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)

    @property
    def thread(self) -> threading.Thread:
        return self._thread
