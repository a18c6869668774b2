"""Peak memory of the listener receiving one large instance (issue 13 item 6: "each data set is
buffered twice before the spool check").

``python -m benchmarks.listener_memory [--megabytes 200]``: the listener's Storage SCP runs in a child
process (127.0.0.1, a free port); this process sends it one CT instance whose pixel data is that
large, by pynetdicom over one association. The child resets its peak RSS once listening (Linux:
``/proc/self/clear_refs``, 5) and reports its RSS then and its peak (VmHWM) after the C-STORE, and
the tracemalloc peak of the C-STORE handler (from the data set pynetdicom assembled to the file in
the spool). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE

from app.listener.config import Destination, ListenerConfig
from app.listener.journal import Journal
from app.listener.scp import StorageSCP
from app.listener.spool import Spool


def large_ct(megabytes: int) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    side = int((megabytes * 2**20 / 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.PixelData = np.random.default_rng(0).integers(0, 4096, side * side, dtype=np.uint16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _scp(folder: str, ports: Any, results: Any) -> None:
    config = ListenerConfig(spool_dir=Path(folder) / "spool", output_dir=Path(folder) / "output", model_dir=Path(folder),
                            allowed_calling_ae_titles=("STORESCU",), destination=Destination.parse("PACS@127.0.0.1:11113"),
                            port=0, quiet_period_s=600, min_free_bytes=0)
    journal = Journal(config.spool_dir / "journal.jsonl")
    scp = StorageSCP(config, Spool(config.spool_dir, journal, config.quiet_period_s, config.max_spool_bytes, 0))
    handle = scp._store
    handler_peak: list[int] = []

    def traced(event: Any) -> int:
        tracemalloc.start()
        try:
            return handle(event)
        finally:
            handler_peak.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    scp._store = traced  # type: ignore[method-assign]
    port = scp.start()
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS (VmHWM) starts again from now
    ports.put((port, _status_bytes("VmRSS")))
    results.get()  # the sender is done
    scp.stop()
    journal.close()
    ports.put({"peak_rss_bytes": _status_bytes("VmHWM"), "handler_tracemalloc_peak_bytes": handler_peak[0]})


def measure(megabytes: int) -> dict[str, Any]:
    ds = large_ct(megabytes)
    context = multiprocessing.get_context("spawn")
    ports, done = context.Queue(), context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        child = context.Process(target=_scp, args=(folder, ports, done))
        child.start()
        port, rss_before = ports.get(timeout=120)
        ae = AE("STORESCU")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="BIOMEDCLIP")
        status = assoc.send_c_store(ds)
        assoc.release()
        done.put(True)
        measured = ports.get(timeout=120)
        child.join(60)
    size = len(ds.PixelData)
    return {
        "instance_bytes": size, "status": f"0x{int(status.Status):04X}", "rss_before_bytes": rss_before, **measured,
        "rss_growth_over_instance": round((measured["peak_rss_bytes"] - rss_before) / size, 2),
        "handler_peak_over_instance": round(measured["handler_tracemalloc_peak_bytes"] / size, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    print(json.dumps(measure(parser.parse_args().megabytes)))


if __name__ == "__main__":
    main()
