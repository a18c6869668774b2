"""Embedding prefetch: a study's inference done while the study is still arriving (a listener with a Triton server).

A study's job starts a quiet period after its last instance; until then the cores wait. With prefetch, each
spooled instance is read by a process of its own (forked from the jobs' warm process, ``jobs.py``), its
images preprocessed as the job will (``operators.imaging.preprocessing.model_input``) and sent to the server
at the study's priority level. The server's CPU model keeps each image's embedding by the SHA-256 of its
pixels (``operators.inference.embedding_cache``), so the job's own requests for the same pixels are answered
from there. The job runs exactly as without prefetch: a prefetch that is late, fails, or computes an image
the job then leaves out changes how long things take, never what the SR says.

Only what a job could send is sent: not an instance the intake refuses (``classify_file``), one without
pixels, or one the de-identification admission refuses (burned-in annotation: its pixels may carry PHI).
Every queued instance is registered (its header read) before the next image is sent, one image at a time,
so what is sent is decided by all that arrived: a series within ``max_images_per_series`` (the job takes it
whole) image by image; a longer one, which the job samples evenly over all its images and so only its end
decides, once it has received nothing for ``SETTLE_S``: the images the job's ``SamplingPlan`` takes of what
arrived. The work a job may not use is the images of a series sent before it grew longer (none when it
arrives faster than one image is computed) or before a pause in it. A series whose study's job may have
started (a quiet period after its latest instance) is left to the job. Urgent series go first.

Prefetch stops, said once in the log, where the server's model keeps no embeddings (the GPU model: there
inference is cheaper than the prefetch itself).
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.listener.jobs import JOB_CONTEXT, ROUTINE_NICENESS, die_with_parent

logger = logging.getLogger(__name__)

#: The name the prefetch process shows (comm, as ``ps`` shows it).
PREFETCH_PROCESS_NAME = "map-prefetch"
#: Instances waiting at most; more are not prefetched (their jobs compute them).
QUEUE_SIZE = 10_000
#: Series remembered (the least recently received forgotten first): their files' paths and what was sent.
REMEMBERED_SERIES = 256
#: A series longer than the job takes whole is sampled by the job over all its images, which only its end decides:
#: its sampled images are sent once it has received nothing for this long.
SETTLE_S = 0.5
#: Values longer than this (Pixel Data) are read from the file only when used.
DEFER_SIZE = 1024
#: Seconds between two attempts to reach a server that did not answer.
RECONNECT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class PrefetchRequest:
    path: str
    urgent: bool
    #: time.monotonic() after which the study's job may have started (CLOCK_MONOTONIC is the host's, not the process's).
    deadline: float


class EmbeddingPrefetch:
    """The listener's side: ``offer`` each spooled instance; the prefetch process does the rest."""

    def __init__(self, model_dir: Path, triton_server: str) -> None:
        self.model_dir, self.triton_server = model_dir, triton_server
        self._requests: Any = JOB_CONTEXT.Queue(QUEUE_SIZE)
        # what no prefetch process will read (it stopped, or was killed) must not hold up the listener's exit
        self._requests.cancel_join_thread()
        self._process: Any = None

    def start(self) -> None:
        self._process = JOB_CONTEXT.Process(target=prefetch_process, name=PREFETCH_PROCESS_NAME,
                                            args=(self._requests, self.model_dir, self.triton_server), daemon=True)
        self._process.start()

    def offer(self, path: Path, urgent: bool, quiet_period_s: float) -> None:
        try:
            self._requests.put_nowait(PrefetchRequest(str(path), urgent, time.monotonic() + quiet_period_s))
        except queue.Full:  # its job computes it
            pass

    def stop(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join()


def prefetch_process(requests: Any, model_dir: Path, triton_server: str) -> None:
    from app import logging_policy

    die_with_parent(PREFETCH_PROCESS_NAME)
    os.nice(ROUTINE_NICENESS)  # reception first: a prefetch only saves time
    logging_policy.install_for_listener()
    prefetcher = Prefetcher(model_dir, triton_server)
    while prefetcher.usable:
        for request in _waiting(requests, SETTLE_S if prefetcher.idle else 0.0):
            prefetcher.register(request)
        prefetcher.send_next()


def _waiting(requests: Any, block_s: float) -> list[PrefetchRequest]:
    """Every request in the queue, waiting up to ``block_s`` for the first one."""
    waiting: list[PrefetchRequest] = []
    try:
        waiting.append(requests.get(timeout=block_s) if block_s else requests.get_nowait())
        while True:
            waiting.append(requests.get_nowait())
    except queue.Empty:
        return waiting


@dataclass
class _Series:
    """What the prefetch knows of one series: its admitted instances in arrival order, with their frames, and what
    it sent."""

    urgent: bool
    deadline: float  # its latest instance's: its job may start after it
    last_instance: float = field(default_factory=time.monotonic)
    instances: list[tuple[Path, list[int | None]]] = field(default_factory=list)
    sent: set[tuple[Path, int | None]] = field(default_factory=set)
    #: The images of the job's sampling plan over ``planned_for`` instances (a series longer than the job takes whole).
    planned: list[tuple[Path, int | None]] = field(default_factory=list)
    planned_for: int = 0

    @property
    def images(self) -> int:
        return sum(len(frames) for _, frames in self.instances)


class Prefetcher:
    """Registers each spooled instance as it is queued (its header only) and sends one image at a time, so that
    what it sends is decided by everything that arrived: a series within ``max_images_per_series`` (the job takes
    it whole) image by image; a longer one, which the job samples evenly over all its images, once it has received
    nothing for ``SETTLE_S``: the images the job's ``SamplingPlan`` takes of what arrived. Urgent series first, then
    in arrival order. Connects when first needed."""

    def __init__(self, model_dir: Path, triton_server: str) -> None:
        from app.settings import AppSettings
        from operators.imaging.sampling import SamplingPolicy

        self.model_dir = model_dir
        settings = AppSettings.load()
        self.sampling = SamplingPolicy(settings.max_images_per_series)
        self.accept_burned_in_annotation = settings.deidentification.accept_burned_in_annotation
        self.spec = replace(settings.backend, triton_server=triton_server)
        self.backends: dict[bool, Any] = {}
        self.series: OrderedDict[str, _Series] = OrderedDict()
        self.next_attempt = 0.0
        #: False once prefetch is pointless: the server's model keeps no embeddings.
        self.usable = True
        #: Nothing was left to send at the last ``send_next``.
        self.idle = True

    def connect(self) -> bool:
        """Whether the server is usable now (retried at most every ``RECONNECT_INTERVAL_S``)."""
        from operators.inference.backends.base import BackendUnavailable
        from operators.inference.backends.triton import TritonBackend
        from operators.inference.model_package import ModelPackage, ModelPackageError

        if self.backends or time.monotonic() < self.next_attempt:
            return bool(self.backends)
        try:
            package = ModelPackage.load(self.model_dir)
            self.backends = {urgent: TritonBackend.from_package(package, replace(self.spec, urgent=urgent)) for urgent in (False, True)}
        except (BackendUnavailable, ModelPackageError) as exc:
            logger.warning("Prefetch waits: %s", exc)
            self.next_attempt = time.monotonic() + RECONNECT_INTERVAL_S
            return False
        if not self.backends[False].keeps_embeddings:
            logger.info("Prefetch off: the server's model %s keeps no embeddings", self.backends[False].model)
            self.usable = False
        return self.usable

    def register(self, request: PrefetchRequest) -> None:
        """Note an instance whose job may send its images (its header read; pixels only when sent)."""
        from operators.deid.admission import admit
        from operators.imaging.sampling import frame_indices
        from operators.intake.inventory import classify_file

        path = Path(request.path)
        if time.monotonic() >= request.deadline:
            return
        with self._reported(path):
            if classify_file(path).reason:
                return
            ds = _header(path)
            if admit(ds, accept_burned_in_annotation=self.accept_burned_in_annotation):
                return
            uid = str(ds.get("SeriesInstanceUID", ""))
            series = self.series.pop(uid, None) or _Series(request.urgent, request.deadline)
            series.urgent, series.deadline, series.last_instance = request.urgent, request.deadline, time.monotonic()
            series.instances.append((path, frame_indices(ds)))
            self.series[uid] = series  # the most recent last: the oldest are forgotten first
            while len(self.series) > REMEMBERED_SERIES:
                self.series.popitem(last=False)

    def send_next(self) -> None:
        """Send the next image worth sending, if any (``idle`` says whether there was one)."""
        now = time.monotonic()
        live = [series for series in self.series.values() if now < series.deadline]
        for series in sorted(live, key=lambda s: not s.urgent):  # stable: arrival order within a level
            image = next((image for image in self._wanted(series, now) if image not in series.sent), None)
            if image is not None:
                self.idle = not self.connect()  # a server not there yet: wait as if idle, then try again
                if not self.idle:
                    series.sent.add(image)
                    with self._reported(image[0]):
                        self.backends[series.urgent].prefetch(_model_input(*image)[None])
                return
        self.idle = True

    def _wanted(self, series: _Series, now: float) -> list[tuple[Path, int | None]]:
        """The images of ``series`` its job will compute, as far as what arrived tells."""
        if series.images <= self.sampling.max_images_per_series:
            return [(path, frame) for path, frames in series.instances for frame in frames]
        if now - series.last_instance < SETTLE_S:
            return []
        if series.planned_for != len(series.instances):
            with self._reported(series.instances[0][0]):
                series.planned_for = len(series.instances)
                plan = self.sampling.plan([_header(path) for path, _ in series.instances])
                series.planned = [(series.instances[image.instance][0], image.frame) for image in plan.images]
        return series.planned

    @contextmanager
    def _reported(self, path: Path) -> Iterator[None]:
        """A problem costs the prefetch of one instance or series: its job meets it too and says so, naming the
        file; here it is one log line without PHI (the arrival, the kind of error)."""
        from operators.inference.backends.base import BackendUnavailable

        try:
            yield
        except BackendUnavailable as exc:  # a server lost: connect again before the next image
            logger.warning("Prefetch: %s", exc)
            self.backends = {}
        except Exception as exc:
            logger.info("Prefetch: an instance of arrival %s skipped (%s)", path.parent.name, type(exc).__name__)


def _header(path: Path) -> Any:
    """The data set at ``path`` with its Pixel Data (any value over ``DEFER_SIZE``) left in the file until used."""
    from pydicom import dcmread

    return dcmread(path, defer_size=DEFER_SIZE)


def _model_input(path: Path, frame: int | None) -> Any:
    from operators.imaging.preprocessing import model_input

    return model_input(_header(path), frame)
