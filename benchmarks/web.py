#!/usr/bin/env python3
"""Web benchmark: ``python -m app.web`` as a user runs it (a subprocess on a loopback port).

1. ``POST /api/v1/classify`` latency, p50 and p95, at concurrency 1, 4 and 16 (``--requests`` per
   level, after 3 warm-up requests), with pydicom's CT_small (39 KB, 128 x 128) as the upload; the
   client is httpx (asyncio) in this process, the server has the model warm.
2. STOW-RS of the sample study (2 CT series, 7 instances) to the SR retrievable by WADO-RS, end to
   end: the quiet period (2 s), the app run as a job (from the journal) and the rest.

    .venv/bin/python -m benchmarks.web -m models/biomedclip   # writes benchmarks/web.json and the BENCHMARKS.md section
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file

from benchmarks.common import machine, write_section
from scripts.make_sample_study import make_sample_study
from tests.support.web import free_loopback_port

HERE = Path(__file__).resolve().parent
BEGIN, END = "## Web: JSON API and DICOMweb (`benchmarks/web.py`)", "<!-- end web -->"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def classify_level(base: str, headers: dict[str, str], image: bytes, concurrency: int, requests: int) -> dict:
    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one() -> None:
            async with limit:
                started = time.perf_counter()
                response = await client.post("/api/v1/classify", files={"file": ("ct.dcm", image)})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        wall = time.perf_counter() - began
    return {"concurrency": concurrency, "requests": requests, "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "p95_ms": round(percentile(latencies, 0.95) * 1000, 1), "throughput_per_s": round(requests / wall, 2)}


def stow_to_sr(base: str, headers: dict[str, str], state: Path) -> dict:
    client = DICOMwebClient(f"{base}/dicomweb", headers=headers)
    with tempfile.TemporaryDirectory() as folder:
        files = make_sample_study(Path(folder))
        study = [pydicom.dcmread(p) for p in files]
    uid = str(study[0].StudyInstanceUID)
    started = time.perf_counter()
    client.store_instances(study)
    stored = time.perf_counter() - started
    while not (found := client.search_for_instances(study_instance_uid=uid)):
        time.sleep(0.2)
        if time.perf_counter() - started > 900:
            raise TimeoutError("no SR within 900 s")
    match = pydicom.Dataset.from_json(found[0])
    client.retrieve_instance(uid, match.SeriesInstanceUID, match.SOPInstanceUID)
    total = time.perf_counter() - started
    records = [json.loads(line) for line in (state / "spool" / "journal.jsonl").read_text().splitlines()]
    job = next(r["seconds"] for r in records if r["event"] == "job_finished")
    return {"instances": len(study), "stow_s": round(stored, 3), "stow_to_sr_retrieved_s": round(total, 2), "app_job_s": job,
            "quiet_period_s": 2.0, "rest_s": round(total - job - 2.0, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--out", type=Path, default=HERE / "web.json")
    args = parser.parse_args()
    token = secrets.token_hex(16)
    headers = {"Authorization": f"Bearer {token}"}
    port = free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as state_dir:
        state = Path(state_dir)
        server = subprocess.Popen([sys.executable, "-m", "app.web", "--port", str(port), "-m", str(args.model), "--state", str(state),
                                   "--no-demo"], env={**os.environ, "BIOMEDCLIP_WEB_TOKENS": f"bench:{token}"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None:
                    raise RuntimeError("the server exited")
                time.sleep(0.2)
            image = Path(get_testdata_file("CT_small.dcm")).read_bytes()
            asyncio.run(classify_level(base, headers, image, 1, 3))  # warm-up
            load_before = os.getloadavg()[0]
            levels = [asyncio.run(classify_level(base, headers, image, c, max(args.requests, 2 * c))) for c in (1, 4, 16)]
            end_to_end = stow_to_sr(base, headers, state)
            load_after = os.getloadavg()[0]
        finally:
            server.terminate()
            server.wait(30)
    result = {"machine": machine(), "load_average_1min": [round(load_before, 2), round(load_after, 2)], "classify": levels,
              "stow_to_sr": end_to_end, "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(f"| {r['concurrency']} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | {r['throughput_per_s']} |" for r in levels)
    e = end_to_end
    write_section(f"""{BEGIN}

{result['date']}, {result['machine']}, 1-min load average {load_before:.1f} before / {load_after:.1f} after (the 2 cores
are shared by server and client; a load well above 2 means other work too: read the numbers as an upper bound then). `python -m app.web` with the model warm (the app's
backend: ONNX Runtime fp32 on the CPU) runs as a subprocess; the client is httpx (asyncio)
in the benchmark's process; CT_small (39 KB) per request; seeded random-weight package (fp32 graph).

| concurrency | requests | p50 ms | p95 ms | requests/s |
|---|---|---|---|---|
{rows}

STOW-RS of the sample study ({e['instances']} instances) to its SR retrieved by WADO-RS: {e['stow_to_sr_retrieved_s']} s end to end
(STOW response {e['stow_s']} s; quiet period {e['quiet_period_s']} s; the app run as a job {e['app_job_s']} s; the rest
{e['rest_s']} s: completion tick, job start, QIDO polling every 0.2 s). Raw: `benchmarks/web.json`.
{END}""", BEGIN, END)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
