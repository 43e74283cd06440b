"""Prometheus metrics, collected from the daemon's state at scrape time (no per-read cost)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from protocols.arbitration import BreakerState

if TYPE_CHECKING:
    from headend.daemon import Daemon

__all__ = ["DaemonCollector", "render"]


class DaemonCollector(Collector):
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        d = self.d
        reads = CounterMetricFamily("headend_reads", "Jobs finished per channel and outcome",
                                    labels=["channel", "outcome"])
        depth = GaugeMetricFamily("headend_queue_depth", "Jobs waiting per channel and priority",
                                  labels=["channel", "priority"])
        state = GaugeMetricFamily("headend_channel_up", "1 when the channel's connection is up", labels=["channel"])
        breakers = GaugeMetricFamily("headend_breakers", "Meters per breaker state", labels=["channel", "state"])
        busy = CounterMetricFamily("headend_bus_busy_seconds", "Seconds the bus spent on requests",
                                   labels=["channel"])
        for ch in list(d.channels.values()):
            for outcome, n in ch.counts.items():
                reads.add_metric([ch.name, outcome], n)
            for prio, n in ch.queue_depths().items():
                depth.add_metric([ch.name, prio], n)
            state.add_metric([ch.name], 1.0 if ch.state.value == "up" else 0.0)
            counts = {s.name.lower(): 0 for s in BreakerState}
            counts.update(ch.breaker.counts())
            counts["closed"] = len(ch.meters) - counts["open"] - counts["half_open"]
            for s, n in counts.items():
                breakers.add_metric([ch.name, s], n)
            busy.add_metric([ch.name], ch.busy_seconds)
        yield reads
        yield depth
        yield state
        yield breakers
        yield busy
        yield GaugeMetricFamily("headend_reads_per_second", "Finished jobs per second over the last minute",
                                value=d.rate.per_second())
        yield GaugeMetricFamily("headend_success_ratio", "Scheduled reads done in their window / due (since start)",
                                value=d.success_ratio())
        yield GaugeMetricFamily("headend_spool_bytes", "Readings waiting in the ingest spool (bytes)",
                                value=float(d.spool_size()))
        yield GaugeMetricFamily("headend_ingest_pending", "Readings waiting to be handed to the ingestor",
                                value=float(d.sink.pending()))
        yield GaugeMetricFamily("headend_channels_held", "Channels this daemon polls", value=float(len(d.channels)))
        yield GaugeMetricFamily("headend_event_loop_lag_seconds", "Worst event-loop lag over the last minute",
                                value=d.loop_lag)
        gc_seconds = CounterMetricFamily("headend_gc_seconds", "Time spent in garbage collection per generation",
                                         labels=["generation"])
        for gen, secs in enumerate(d.gc_watch.seconds):
            gc_seconds.add_metric([str(gen)], secs)
        yield gc_seconds
        yield GaugeMetricFamily("headend_gc_pause_max_seconds", "Longest garbage-collection pause since start",
                                value=d.gc_watch.worst)
        yield CounterMetricFamily("headend_backfill_jobs", "Backfill jobs queued", value=d.backfiller.queued)
        yield CounterMetricFamily("headend_clock_syncs", "Broadcast time syncs sent", value=len(d.clocks.syncs))
        yield GaugeMetricFamily("headend_meters_clock_flagged", "Meters whose clock is flagged",
                                value=float(len(d.clocks.flagged)))


def render(daemon: Daemon) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    return generate_latest(registry)
