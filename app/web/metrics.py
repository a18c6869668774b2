"""Prometheus metrics (``GET /metrics``, text exposition format): requests, latency, classifications,
STOW-RS instances and DICOMweb jobs. One registry per application, so that each test's app counts alone."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("biomedclip_web_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("biomedclip_web_request_seconds", "Time to answer an HTTP request", ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.classifications = Counter("biomedclip_web_classifications", "Images classified or refused by /api/v1/classify",
                                       ["outcome"], registry=self.registry)
        self.inference = Histogram("biomedclip_web_inference_seconds", "Image embedding and zero-shot head, per image",
                                   registry=self.registry)
        self.stow_instances = Counter("biomedclip_web_stow_instances", "Instances received by STOW-RS", ["outcome"],
                                      registry=self.registry)
        self.jobs = Gauge("biomedclip_web_jobs", "DICOMweb study jobs by state (the journal's arrivals)", ["state"],
                          registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
