#!/usr/bin/env python3
"""Decode + preprocess benchmark: images/s per transfer syntax, and peak RSS for the largest image.

Images/s: one image = ``preprocess_series`` of one single-frame instance: header check, decode,
grey pipeline or colour scaling, resize to the 3 x 224 x 224 model input, on the CPU threads given
(default 2, as ``torch.set_num_threads``). The same 512 x 512 CT slice (pydicom-data ``693_UNCR``)
is encoded by pydicom into every transfer syntax it can write, into big endian (pixels swapped here),
into HTJ2K by imagecodecs and, windowed to 8 bits, into JPEG baseline by Pillow; JPEG extended and lossless and a colour JPEG
come from pydicom's test files (their sizes are in the table). Runs are interleaved
over syntaxes, ``--repeats`` times; medians are reported.

Peak RSS: a fresh process per case decodes and preprocesses one generated 4096 x 4096 16-bit
MONOCHROME1 image (a CR/MG-sized frame) stored native and as JPEG 2000 lossless, and reports the peak
RSS (VmHWM, reset just before) above the same process's RSS before decoding.

    .venv/bin/python -m benchmarks.decode     # writes benchmarks/decode.json and BENCHMARKS.md's decode section
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from PIL import Image
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from benchmarks.common import cpu_name, write_section

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- decode:begin -->", "<!-- decode:end -->"
LARGE_SIDE = 4096
#: pydicom test files for the syntaxes pydicom cannot encode
CORPUS_SAMPLES = {
    "JPEG Baseline (Process 1), colour": "examples_ybr_color.dcm",
    "JPEG Extended (Process 2 and 4)": "JPGExtended.dcm",
    "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])": "JPEG-LL.dcm",
}


def read_back(ds: Dataset, **write_options: bool) -> Dataset:
    """``ds`` written to a file and read again, as the app would meet it."""
    with tempfile.TemporaryFile() as fp:
        enforce = not write_options.get("force_encoding", False)  # pydicom allows one or the other
        pydicom.dcmwrite(fp, ds, enforce_file_format=enforce, **write_options)
        fp.seek(0)
        return pydicom.dcmread(fp)


def encoded(source: Dataset, syntax: UID) -> Dataset:
    """``source`` in a transfer syntax that pydicom can encode."""
    ds = copy.deepcopy(source)
    if syntax.is_compressed:
        kwargs = {"jls_error": 2} if syntax == JPEGLSNearLossless else {"j2k_cr": [20]} if syntax == JPEG2000 else {}
        ds.compress(syntax, **kwargs)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    return read_back(ds, implicit_vr=syntax == ImplicitVRLittleEndian)


def big_endian(source: Dataset) -> Dataset:
    """``source`` (16-bit) in Explicit VR Big Endian: pydicom writes the header, the pixels are swapped here."""
    ds = copy.deepcopy(source)
    ds.PixelData = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder(">")).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    return read_back(ds, implicit_vr=False, little_endian=False, force_encoding=True)


def jpeg_baseline(source: Dataset) -> Dataset:
    """``source`` windowed to 8 bits and encoded as JPEG baseline by Pillow (quality 90)."""
    from operators.imaging.grey_levels import frame_to_unit

    ds = copy.deepcopy(source)
    pixels = np.rint(frame_to_unit(ds, ds.pixel_array, None) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 1, 0, 127.5, 256
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return read_back(ds)


def htj2k(source: Dataset, syntax: UID, reversible: bool) -> Dataset:
    """``source`` encoded in HTJ2K by imagecodecs (OpenJPH): pydicom has no HTJ2K encoder."""
    ds = copy.deepcopy(source)
    ds.PixelData = encapsulate([imagecodecs.htj2k_encode(ds.pixel_array, reversible=reversible)])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.file_meta.TransferSyntaxUID = syntax
    return read_back(ds)


def samples() -> dict[str, Dataset]:
    ct = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    syntaxes = (
        ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless,
        JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000,
    )
    result = {syntax.name: encoded(ct, syntax) for syntax in syntaxes}
    result[ExplicitVRBigEndian.name] = big_endian(ct)
    result[JPEGBaseline8Bit.name] = jpeg_baseline(ct)
    result[HTJ2KLossless.name] = htj2k(ct, HTJ2KLossless, reversible=True)
    result[HTJ2K.name] = htj2k(ct, HTJ2K, reversible=False)
    for name, file in CORPUS_SAMPLES.items():
        result[name] = pydicom.dcmread(get_testdata_file(file))
    return result


def rate(work: Callable[[], object], seconds: float) -> float:
    """Calls of ``work`` per second over at least ``seconds``."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or count == 0:
        work()
        count += 1
    return count / elapsed


def images_per_second(datasets: dict[str, Dataset], repeats: int, seconds: float) -> dict[str, dict]:
    """Decode + preprocess (``preprocess_series`` of one single-frame instance), and decode alone."""
    from operators.imaging.preprocessing import decode_frame, preprocess_series
    from operators.imaging.sampling import SamplingPolicy
    from operators.intake.image_header import number_of_frames

    policy = SamplingPolicy(1)

    def preprocess(ds: Dataset) -> None:
        series = preprocess_series("1", "2", [ds], policy.plan([ds]))
        if not series.images:
            raise RuntimeError(f"refused: {series.refused}")

    full: dict[str, list[float]] = {name: [] for name in datasets}
    decode: dict[str, list[float]] = {name: [] for name in datasets}
    for _ in range(repeats):  # interleaved: every syntax sees the same machine state
        for name, ds in datasets.items():
            full[name].append(rate(lambda ds=ds: preprocess(ds), seconds))
            frames = number_of_frames(ds)  # multi-frame: the frame the policy samples, as preprocess does
            index = None if frames == 1 else policy.select(frames)[0]
            decode[name].append(rate(lambda ds=ds, index=index: decode_frame(ds, index), seconds))
    return {
        name: {
            "images_per_s": round(statistics.median(full[name]), 1),
            "decode_only_images_per_s": round(statistics.median(decode[name]), 1),
            "image": f"{ds.Rows}x{ds.Columns}x{ds.SamplesPerPixel} {ds.BitsStored}-bit {ds.PhotometricInterpretation}",
            "pixel_data_bytes": len(ds.PixelData),
            "runs": [round(r, 1) for r in full[name]],
        }
        for name, ds in datasets.items()
    }


def large_image(path: Path, syntax: UID) -> Path:
    """A 4096 x 4096 16-bit (12 stored) MONOCHROME1 radiograph-like image with a VOI window."""
    y, x = np.mgrid[0:LARGE_SIDE, 0:LARGE_SIDE].astype(np.float32) / LARGE_SIDE
    pixels = (2000 + 1500 * np.sin(6 * x) * np.cos(4 * y) + 400 * np.sin(40 * x * y)).astype(np.uint16)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PhotometricInterpretation = "CR", "MONOCHROME1"
    ds.Rows = ds.Columns = LARGE_SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth, ds.RescaleSlope, ds.RescaleIntercept = 2000, 3000, 1, 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if syntax.is_compressed:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


RSS_PROBE = """
import sys
import pydicom, torch
from operators.imaging.preprocessing import preprocess_series
from operators.imaging.sampling import SamplingPolicy
torch.set_num_threads(2)
ds = pydicom.dcmread(sys.argv[1])
_ = ds.PixelData
def status_kib(field):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1])
before = status_kib("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
plan = SamplingPolicy(16).plan([ds])
series = preprocess_series("1", "2", plan.pick([ds]), plan)
assert series.pixel_values.shape == (1, 3, 224, 224), series.refused
print(before, status_kib("VmHWM:"))
"""


def peak_rss(work: Path, repeats: int) -> list[dict]:
    results = []
    for syntax in (ExplicitVRLittleEndian, JPEG2000Lossless):
        image = large_image(work / f"large_{syntax.keyword}.dcm", syntax)
        rows = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(image)], capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                raise RuntimeError(f"RSS probe failed: {out.stderr[-2000:]}")
            before, peak = map(int, out.stdout.split()[-2:])
            rows.append((peak - before) / 1024)
        results.append(
            {
                "image": f"{LARGE_SIDE}x{LARGE_SIDE} 16-bit MONOCHROME1",
                "transfer_syntax": syntax.name,
                "file_bytes": image.stat().st_size,
                "peak_rss_above_loaded_mib": round(statistics.median(rows), 1),
            }
        )
    return results


def markdown(result: dict) -> str:
    lines = [
        BEGIN,
        "## Decode + preprocess per transfer syntax",
        "",
        f"`benchmarks/decode.py` on {result['cpu']}, {result['threads']} threads, load before the run: "
        f"`{result['load']}`; median of {result['repeats']} interleaved runs of {result['seconds']} s each. "
        "One image = header check + decode of one frame + grey/colour pipeline + resize to 3×224×224; "
        "the last column times the decode alone. The difference is the grey pipeline (a lookup table) and "
        "torch's antialiased bicubic resize on the same threads: the same work for every 512 × 512 grey image.",
        "",
        "| transfer syntax | image | Pixel Data bytes | decode + preprocess, images/s | decode only, images/s |",
        "|---|---|---:|---:|---:|",
    ]
    for name, row in result["throughput"].items():
        lines.append(
            f"| {name} | {row['image']} | {row['pixel_data_bytes']:,} | {row['images_per_s']} | {row['decode_only_images_per_s']} |"
        )
    lines += [
        "",
        "Peak RSS of one process decoding and preprocessing one large image (VmHWM above its RSS with the "
        "file loaded; median of runs):",
        "",
        "| image | transfer syntax | file bytes | peak RSS above loaded (MiB) |",
        "|---|---|---:|---:|",
    ]
    for row in result["peak_rss"]:
        lines.append(
            f"| {row['image']} | {row['transfer_syntax']} | {row['file_bytes']:,} | {row['peak_rss_above_loaded_mib']} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed run per syntax")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "decode.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        result = {
            "cpu": cpu_name(),
            "threads": args.threads,
            "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            "repeats": args.repeats,
            "seconds": args.seconds,
            "throughput": images_per_second(samples(), args.repeats, args.seconds),
            "peak_rss": peak_rss(Path(work), args.repeats),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_section(markdown(result), BEGIN, END, args.markdown)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
