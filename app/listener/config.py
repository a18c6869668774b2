"""Listener settings: a flat JSON file (``app/config/listener.example.json``) and command-line overrides.

Relative paths are resolved against the current working directory, as for ``python app -i … -o …``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from app.cli import NETLOC, TRITON_ENV
from app.listener.instance_uids import names_a_file
from app.listener.urgency import C_STORE_PRIORITIES, REQUESTED_PROCEDURE_PRIORITIES, UrgentRule

DEFAULT_PORT = 11112
#: PS3.5 §6.2 (AE VR): 1-16 characters of the default repertoire, no backslash, no control characters.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``storage_sop_classes``: every Storage SOP Class pynetdicom knows (PS3.4 Annex B.5), or only the image
#: classes of the modalities the app's series selection takes; or else a list of SOP Class UIDs.
ALL_STORAGE, SELECTED_IMAGES = "all", "images"
#: ``max_concurrent_jobs`` by default: 1 with a local model (each job loads the model and uses both
#: cores), 2 with a Triton server (the app instances share its model: 5.8 → 7.9 studies/min from 1 to 2
#: instances, 8.1 at 4 for twice the memory; through the listener, jobs forked warm, 21.6-25.6, 23.6-25.8 and
#: 22.1-27.5 studies/min at 1, 2 and 4 jobs in three runs (the last with prefetch): within each other's noise,
#: and a job waiting on the server leaves the cores to the other; BENCHMARKS.md "Triton remote inference",
#: "Listener with a Triton server").
LOCAL_CONCURRENT_JOBS, TRITON_CONCURRENT_JOBS = 1, 2


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


def ae_title(value: str, setting: str) -> str:
    title = str(value).strip()
    if not _AE_TITLE.match(title):
        raise ConfigError(f"{setting}: {value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)")
    return title


@dataclass(frozen=True)
class Destination:
    """A remote Storage SCP, written ``AE@host:port``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        match = re.fullmatch(r"(?P<ae>[^@]+)@(?P<host>\[[0-9a-fA-F:]+\]|[^:@\[\]]+):(?P<port>\d{1,5})", str(text).strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise ConfigError(f"destination: {text!r} is not AE@host:port")
        return cls(ae_title(match["ae"], "destination"), match["host"].strip("[]"), int(match["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsSettings:
    """Server certificate and key (PEM); with ``ca_certificates``, clients must present a certificate it signed."""

    certificate: Path
    private_key: Path
    ca_certificates: Path | None = None


@dataclass(frozen=True)
class DestinationTlsSettings:
    """TLS for sending the SRs: the destination's certificate must be signed by ``ca_certificates`` (PEM)
    and name its host; ``certificate`` and ``private_key`` (PEM), if given, authenticate the listener."""

    ca_certificates: Path
    certificate: Path | None = None
    private_key: Path | None = None


@dataclass(frozen=True)
class ListenerConfig:
    spool_dir: Path
    output_dir: Path
    model_dir: Path
    allowed_calling_ae_titles: tuple[str, ...]
    #: The PACS that receives the SRs (they are also written to ``output_dir``).
    destination: Destination
    ae_title: str = "BIOMEDCLIP"
    bind_host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: ``GET /healthz`` (``app/listener/health.py``) on this address and port; None: no health endpoint.
    health_host: str = "127.0.0.1"
    health_port: int | None = None
    #: Empty: any source address (the calling AE title list still applies).
    allowed_source_addresses: tuple[IPNetwork, ...] = ()
    #: A whole study is accepted (prior SRs, Key Object Selections, Presentation States, PDFs…): the
    #: app skips what it does not use, with its reason, instead of the sender's push failing.
    storage_sop_classes: str | tuple[str, ...] = ALL_STORAGE
    #: Established associations at once; connections that have not (yet) requested one do not count.
    max_associations: int = 8
    #: TCP connections at once, in all and per source address (before any A-ASSOCIATE check).
    max_connections: int = 32
    max_connections_per_address: int = 8
    #: Seconds a new connection has to send its A-ASSOCIATE-RQ (the ARTIM timer, PS3.8 §9.1.5).
    association_request_timeout_s: float = 10.0
    #: The longest PDU received (PS3.8 §9.3.1), also announced as Maximum Length Received (D.3.3.1).
    max_pdu_bytes: int = 1 << 20
    #: The largest data set received; a larger one aborts the association (it is held in memory whole).
    max_instance_bytes: int = 2 << 30
    #: How much of a deflated data set is inflated to find its UIDs (PS3.5 §A.5: a small deflated
    #: data set can inflate to gigabytes).
    max_header_bytes: int = 1 << 20
    quiet_period_s: float = 10.0
    #: Calling AE title -> its own quiet period (a modality that pauses between series, say).
    quiet_period_by_calling_ae: dict[str, float] = field(default_factory=dict)
    #: New associations are refused (and C-STOREs answered "out of resources") when the spool holds
    #: this much, or its file system has less than ``min_free_bytes`` free.
    max_spool_bytes: int = 50 * 2**30
    min_free_bytes: int = 2 * 2**30
    tls: TlsSettings | None = None
    destination_tls: DestinationTlsSettings | None = None
    network_timeout_s: float = 60.0
    #: HOST:PORT of a Triton server's HTTP endpoint: each job runs the app with ``-t`` against it.
    triton_server: str | None = None
    #: With a Triton server: each instance's images are sent to it as they arrive, so that the job's inference
    #: is mostly done by the end of the quiet period (``prefetch.py``).
    prefetch_embeddings: bool = True
    #: Jobs at once; None: ``TRITON_CONCURRENT_JOBS`` with a Triton server, else ``LOCAL_CONCURRENT_JOBS``. With a
    #: server one more runs for urgent studies only (the urgent lane, ``service.py``).
    max_concurrent_jobs: int | None = None
    #: Which studies jump the job queue and ask Triton for its higher priority level (``urgency.py``).
    urgent: UrgentRule = field(default_factory=UrgentRule)
    job_max_attempts: int = 3
    job_timeout_s: float = 3600.0
    delivery_initial_backoff_s: float = 2.0
    delivery_max_backoff_s: float = 300.0
    #: Quarantined studies (SPOOL/failed) and results (OUTPUT/<id>) are removed this many days after
    #: their last change; an SR still waiting for delivery is kept.
    retention_days: float = 30.0

    def quiet_period_for(self, calling_ae_title: str) -> float:
        return self.quiet_period_by_calling_ae.get(calling_ae_title.strip(), self.quiet_period_s)

    @property
    def concurrent_jobs(self) -> int:
        """``max_concurrent_jobs``, or its default for this configuration."""
        if self.max_concurrent_jobs is not None:
            return self.max_concurrent_jobs
        return TRITON_CONCURRENT_JOBS if self.triton_server else LOCAL_CONCURRENT_JOBS

    def __post_init__(self) -> None:
        if not self.allowed_calling_ae_titles:
            raise ConfigError("allowed_calling_ae_titles: at least one calling AE title must be allowed")
        for name in ("quiet_period_s", "network_timeout_s", "association_request_timeout_s", "job_timeout_s",
                     "delivery_initial_backoff_s", "delivery_max_backoff_s", "retention_days"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0")
        for name in ("max_instance_bytes", "max_header_bytes", "max_associations", "max_connections", "max_connections_per_address",
                     "max_concurrent_jobs", "job_max_attempts"):
            if getattr(self, name) is not None and getattr(self, name) < 1:  # max_concurrent_jobs None: its default
                raise ConfigError(f"{name}: must be >= 1")
        if self.max_pdu_bytes < 4096:
            raise ConfigError("max_pdu_bytes: must be >= 4096")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in self.quiet_period_by_calling_ae.values()):
            raise ConfigError("quiet_period_by_calling_ae: every quiet period must be a number > 0")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port: {self.port} is out of range")
        if self.health_port is not None:
            if isinstance(self.health_port, bool) or not isinstance(self.health_port, int) or not 0 <= self.health_port < 65536:
                raise ConfigError(f"health_port: {self.health_port!r} is not a port number (or null: no health endpoint)")
            if self.health_port == self.port != 0 and self.health_host == self.bind_host:
                raise ConfigError("health_port: must differ from port (the DICOM port)")


def _typed(key: str, value: Any) -> Any:
    """One JSON/command-line value -> the field's type."""
    if key.endswith("_dir"):
        return Path(value)
    if key == "destination":
        return Destination.parse(value)
    if key == "ae_title":
        return ae_title(value, key)
    if key == "allowed_calling_ae_titles":
        return tuple(ae_title(t, key) for t in value)
    if key == "quiet_period_by_calling_ae":
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected an object of calling AE title -> seconds")
        return {ae_title(k, key): v for k, v in value.items()}
    if key == "triton_server":
        if value is not None and not (isinstance(value, str) and NETLOC.fullmatch(value) and 1 <= int(value.rsplit(":", 1)[1]) <= 65535):
            raise ConfigError(f"{key}: {value!r} is not HOST:PORT, the Triton server's HTTP address (or null: a local model)")
        return value or None
    if key == "urgent":
        return urgent_rule(value)
    if key == "prefetch_embeddings" and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, not {value!r}")
    if key == "storage_sop_classes":
        if value in (ALL_STORAGE, SELECTED_IMAGES):
            return value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and names_a_file(v) for v in value):
            raise ConfigError(f"{key}: expected {ALL_STORAGE!r}, {SELECTED_IMAGES!r} or a non-empty list of SOP Class UIDs")
        return tuple(value)
    if key == "allowed_source_addresses":
        try:
            return tuple(ipaddress.ip_network(v, strict=False) for v in value)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    if key == "tls":
        if not value:
            return None
        ca = value.get("ca_certificates")
        return TlsSettings(Path(value["certificate"]), Path(value["private_key"]), Path(ca) if ca else None)
    if key == "destination_tls":
        if not value:
            return None
        if not value.get("ca_certificates"):
            raise ConfigError(f"{key}: ca_certificates is required (the destination's certificate is checked against it)")
        if bool(value.get("certificate")) != bool(value.get("private_key")):
            raise ConfigError(f"{key}: certificate and private_key go together")
        optional = (Path(value[k]) if value.get(k) else None for k in ("certificate", "private_key"))
        return DestinationTlsSettings(Path(value["ca_certificates"]), *optional)
    return value


def urgent_rule(value: Any) -> UrgentRule:
    """``urgent``: ``{"calling_ae_titles": [...], "priorities": [...]}``, both optional."""
    known = {"calling_ae_titles", "priorities"}
    if not isinstance(value, dict) or set(value) - known:
        raise ConfigError(f"urgent: expected an object with {' and/or '.join(sorted(known))}")
    titles, priorities = value.get("calling_ae_titles", []), value.get("priorities", list(UrgentRule.priorities))
    allowed = sorted(set(REQUESTED_PROCEDURE_PRIORITIES) | set(C_STORE_PRIORITIES.values()))
    if not isinstance(titles, list) or not isinstance(priorities, list) or not all(p in allowed for p in priorities):
        raise ConfigError(f"urgent: calling_ae_titles is a list of AE titles, priorities a list of {', '.join(allowed)}")
    return UrgentRule(tuple(ae_title(t, "urgent.calling_ae_titles") for t in titles), tuple(priorities))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app.listener", description="DICOM listener: C-STORE in, the MAP once per study, SR out by C-STORE."
    )
    p.add_argument("--config", type=Path, help="JSON settings file (see app/config/listener.example.json)")
    p.add_argument("--ae-title", help="this listener's AE title (the called AE title)")
    p.add_argument("--host", dest="bind_host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--health-port", type=int, help="serve GET /healthz on this port (default: none; 0 picks a free one)")
    p.add_argument("--allowed-calling-ae", dest="allowed_calling_ae_titles", action="append",
                   help="calling AE title allowed to send (repeatable)")
    p.add_argument("--spool-dir", help="where received instances and the journal are kept")
    p.add_argument("--output-dir", help="where each study's SR and run report are written")
    p.add_argument("--model-dir", help="the BiomedCLIP model package (python app -m)")
    p.add_argument("--quiet-period", dest="quiet_period_s", type=float,
                   help="seconds without a new instance after which a study is complete")
    p.add_argument("--destination", help="where SRs are sent: AE@host:port")
    p.add_argument("-t", "--triton-server-netloc", dest="triton_server", metavar="HOST:PORT",
                   help=f"each job runs the image encoder on this Triton server (or {TRITON_ENV}; default: the local model)")
    p.add_argument("--max-concurrent-jobs", dest="max_concurrent_jobs", type=int,
                   help=f"jobs at once (default {LOCAL_CONCURRENT_JOBS}, {TRITON_CONCURRENT_JOBS} with a Triton server)")
    p.add_argument("--port-file", type=Path, help="write the bound port to this file once listening (useful with --port 0)")
    return p


def load(args: argparse.Namespace) -> ListenerConfig:
    """The config file's settings, overridden by the command-line flags that were given."""
    data: Any = json.loads(args.config.read_text()) if args.config else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{args.config}: expected a JSON object")
    data.update({k: v for k, v in vars(args).items() if v is not None and k not in ("config", "port_file")})
    if data.get("triton_server") is None and os.environ.get(TRITON_ENV):  # as python app -t
        data["triton_server"] = os.environ[TRITON_ENV]
    known = {f.name for f in fields(ListenerConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    missing = [k for k in ("spool_dir", "output_dir", "model_dir", "allowed_calling_ae_titles", "destination") if k not in data]
    if missing:
        raise ConfigError(f"missing setting(s): {', '.join(missing)}")
    try:
        return ListenerConfig(**{k: _typed(k, v) for k, v in data.items()})
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"malformed setting: {exc}") from None
