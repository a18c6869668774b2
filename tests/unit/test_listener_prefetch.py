"""The listener's prefetch (``app/listener/prefetch.py``) without a server: which images of the spooled instances
it sends (those the job computes, never a refused instance's), when, and in which order."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from app.listener import prefetch
from app.listener.prefetch import Prefetcher, PrefetchRequest, _waiting
from app.settings import AppSettings
from operators.imaging.preprocessing import model_input
from operators.imaging.sampling import SamplingPolicy
from operators.inference.backends.triton import TritonBackend
from operators.inference.model_package import ModelPackage
from tests.support.listener_peers import make_ct_studies, make_dose_report, make_non_image_instances, make_truncated_copy


class Server:
    """Stands in for the Triton backends: records the images sent."""

    keeps_embeddings, model = True, "recorder"

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def prefetch(self, pixel_values: np.ndarray) -> None:
        self.images.append(pixel_values[0])


def _prefetcher(tmp_path: Path) -> tuple[Prefetcher, Server]:
    prefetcher, server = Prefetcher(tmp_path / "models", "127.0.0.1:1"), Server()
    prefetcher.backends = {False: server, True: server}
    return prefetcher, server


def _series(tmp_path: Path, instances: int) -> list[Path]:
    """One CT series whose slices differ (CT_small with slice i's pixels raised by i)."""
    (files,) = make_ct_studies(tmp_path, studies=1, series_per_study=1, instances_per_series=instances).values()
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.PixelData = (ds.pixel_array + 7 * i).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(path)
    return files


def _request(path: Path, urgent: bool = False, quiet_period_s: float = 60) -> PrefetchRequest:
    return PrefetchRequest(str(path), urgent, time.monotonic() + quiet_period_s)


def _sent(server: Server) -> set[bytes]:
    return {image.tobytes() for image in server.images}


def _send_all(prefetcher: Prefetcher) -> None:
    """What the prefetch process does between two arrivals: send until nothing is left worth sending."""
    prefetcher.send_next()
    while not prefetcher.idle:
        prefetcher.send_next()


def test_a_short_series_is_sent_image_by_image_as_it_arrives_as_the_job_computes_it(tmp_path: Path) -> None:
    files = _series(tmp_path, 5)
    prefetcher, server = _prefetcher(tmp_path)
    for count, path in enumerate(files, 1):
        prefetcher.register(_request(path))
        _send_all(prefetcher)
        assert len(server.images) == count
    assert _sent(server) == {model_input(pydicom.dcmread(path), None).tobytes() for path in files}


def test_a_long_series_is_sent_as_the_jobs_sampling_plan_takes_it_once_it_settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``max_images_per_series`` only the series' end decides what the job samples: the images of its plan
    over what arrived are sent once nothing came for ``SETTLE_S``. Images sent before the series grew longer are
    the waste: none where it arrived faster than the prefetch sends."""
    limit = AppSettings.load().max_images_per_series
    files = _series(tmp_path, 3 * limit)
    prefetcher, server = _prefetcher(tmp_path)
    prefetcher.register(_request(files[0]))
    _send_all(prefetcher)
    for path in files[1:]:  # registered together: the prefetch was busy with the first image meanwhile
        prefetcher.register(_request(path))
    _send_all(prefetcher)
    assert len(server.images) == 1, "nothing more before the series settled"

    monkeypatch.setattr(prefetch, "SETTLE_S", 0.0)
    _send_all(prefetcher)
    headers = [pydicom.dcmread(path) for path in files]
    plan = SamplingPolicy(limit).plan(headers)
    job = {model_input(headers[image.instance], image.frame).tobytes() for image in plan.images}
    assert job == _sent(server), "the images the job computes (the first one among them)"
    assert len(server.images) == len(job), "each once"


def test_a_series_whose_job_may_have_started_is_left_to_the_job(tmp_path: Path) -> None:
    prefetcher, server = _prefetcher(tmp_path)
    for path in _series(tmp_path, 3):
        prefetcher.register(_request(path, quiet_period_s=0.0))
    _send_all(prefetcher)
    assert server.images == []


def test_nothing_of_an_instance_the_job_refuses_is_sent(tmp_path: Path) -> None:
    """A dose report with burned-in annotation (its pixels may carry PHI), a truncated file, non-image instances."""
    (like,) = _series(tmp_path / "ct", 1)
    refused = [make_dose_report(like, tmp_path / "dose"), make_truncated_copy(like, tmp_path / "cut"),
               *make_non_image_instances(tmp_path / "others", like=like)]
    prefetcher, server = _prefetcher(tmp_path)
    for path in refused:
        prefetcher.register(_request(path))
    _send_all(prefetcher)
    assert server.images == [] and prefetcher.series == {}


def test_urgent_series_go_first_each_level_in_arrival_order(tmp_path: Path) -> None:
    (routine, urgent) = (_series(tmp_path / name, 2) for name in ("routine", "urgent"))
    prefetcher, server = _prefetcher(tmp_path)
    for path in routine:
        prefetcher.register(_request(path))
    for path in urgent:
        prefetcher.register(_request(path, urgent=True))
    _send_all(prefetcher)
    assert [image.tobytes() for image in server.images] == [model_input(pydicom.dcmread(p), None).tobytes() for p in urgent + routine]


def test_prefetch_stops_where_the_servers_model_keeps_no_embeddings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU model: there inference costs less than the prefetch itself."""
    (path,) = _series(tmp_path, 1)
    server = Server()
    server.keeps_embeddings = False
    monkeypatch.setattr(ModelPackage, "load", lambda folder: None)
    monkeypatch.setattr(TritonBackend, "from_package", lambda package, spec: server)
    prefetcher = Prefetcher(tmp_path / "models", "127.0.0.1:1")
    prefetcher.register(_request(path))
    prefetcher.send_next()
    assert not prefetcher.usable and server.images == []


def test_the_queue_is_read_whole_waiting_only_for_the_first() -> None:
    requests: queue.Queue[PrefetchRequest] = queue.Queue()
    assert _waiting(requests, 0.01) == [] and _waiting(requests, 0.0) == []
    for name in ("a", "b", "c"):
        requests.put(PrefetchRequest(name, False, 0.0))
    assert [r.path for r in _waiting(requests, 0.0)] == ["a", "b", "c"]
