"""Prometheus metrics of the workflow worker: the :class:`~.ports.Observer` the engine reports to, and the
gauges the stats loop sets."""

from __future__ import annotations

from novapulse_runtime.runtime import Runtime

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MetricsObserver:
    """Runs started and finished (by status), step attempt durations (by step type and status), schedule
    lag (due → claimed), and the gauges of active runs and pending timers. Not labelled by definition: the
    definition ids of every organisation would make the series unbounded."""

    def __init__(self, rt: Runtime) -> None:
        self.runs = rt.metrics.counter(
            "novapulse_workflow_runs_total", "Runs started, completed, failed and cancelled", ("event",)
        )
        self.steps = rt.metrics.histogram(
            "novapulse_workflow_step_seconds", "Duration of step attempts, by step type and status", ("type", "status")
        )
        self.lag = rt.metrics.histogram(
            "novapulse_workflow_schedule_lag_seconds",
            "Time from a run being due to a worker claiming it",
            buckets=LAG_BUCKETS,
        )
        self.active = rt.metrics.gauge("novapulse_workflow_active_runs", "Runs not finished (every worker)")
        self.timers = rt.metrics.gauge(
            "novapulse_workflow_pending_timers", "Runs waiting on a delay or a wait deadline"
        )

    def run_started(self) -> None:
        self.runs.labels("started").inc()

    def run_finished(self, status: str) -> None:
        self.runs.labels(status).inc()

    def step(self, type_: str, status: str, seconds: float) -> None:
        self.steps.labels(type_, status).observe(seconds)

    def schedule_lag(self, seconds: float) -> None:
        self.lag.observe(seconds)

    def counts(self, active: int, timers: int) -> None:
        self.active.set(active)
        self.timers.set(timers)
