"""Exploration: the compiled bf16 batch of 256 takes ~18.8 ms, its kernels add up to ~17.7 ms. Where is the rest?

Kept as the record of results.txt. Run on the lent GPU from the repository root (open_clip/timm installed):

    python benchmarks/probes/2026-11-27-gaps/probe.py

For the product configuration (compile + CUDA graphs, bf16 and fp16, batch 256) it times the batch with
CUDA events, then traces 3 replays with the PyTorch profiler (CUPTI reports each kernel of a graph) and
splits each replay's span into kernel-busy time and idle gaps: gap count, total, the largest gaps with the
kernels on either side, and the kernels that follow the gaps most often.

Reading results.txt: the split into replays (at host gaps over 1 ms) did not split, because the host
synchronisation between replays left only 0.27-0.34 ms, so "replay 0" is all three (453 = 3 x 151 kernels).
Per replay, bf16: 18.13 ms of kernels (54.38 / 3), about 0.24 ms of small gaps (median 1.8 us, ~150 of
them, a third of the time next to the cuBLAS Memsets before the GEMMs), and 60-110 us from the input copy
(outside the graph) to the graph's first kernel. Against the 18.84 ms timed batch that leaves about 0.4 ms
of event and launch overhead. The kernels are the time; gaps are about 2 % of it.
"""
import collections, statistics, sys
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[3]
from benchmarks.gpu import build_tower, time_gpu
from operators.inference.backends.pytorch import TorchBackend

print("torch", torch.__version__, torch.cuda.get_device_name(), flush=True)


def short(name):
    return name[:90]


for precision in ("bf16", "fp16"):
    backend = TorchBackend(build_tower(), "cuda", precision, compile=True, cuda_graphs=True)
    x = torch.randn(256, 3, 224, 224, device="cuda")
    ms = statistics.median(time_gpu(backend.embed_tensor, x, 40))
    print(f"{precision}: timed batch (events, median of 40) {ms:.3f} ms", flush=True)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            backend.embed_tensor(x)
            torch.cuda.synchronize()
    kernels = sorted(((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                      if e.device_type == torch.autograd.DeviceType.CUDA), key=lambda k: k[0])
    # replays are separated by the host synchronisation: split where the gap exceeds 1 ms
    replays, current = [], [kernels[0]]
    for k in kernels[1:]:
        if k[0] - current[-1][1] > 1000:
            replays.append(current)
            current = []
        current.append(k)
    replays.append(current)
    followers = collections.Counter()
    for i, replay in enumerate(replays):
        span = (replay[-1][1] - replay[0][0]) / 1e3
        busy, gaps, end = 0.0, [], replay[0][0]
        for (start, stop, name), previous in zip(replay, [None] + replay[:-1]):
            if previous is not None and start > end:
                gaps.append(((start - end) / 1e3, previous[2], name))
            busy += max(0, stop - max(start, end)) / 1e3
            end = max(end, stop)
        print(f"{precision} replay {i}: {len(replay)} kernels, span {span:.3f} ms, busy {busy:.3f} ms, "
              f"{len(gaps)} gaps totalling {sum(g[0] for g in gaps):.3f} ms", flush=True)
        if i == len(replays) - 1:
            sizes = sorted(g[0] * 1e3 for g in gaps)
            if sizes:
                print(f"   gap us: median {statistics.median(sizes):.1f}, p90 {sizes[int(0.9 * len(sizes))]:.1f}, max {sizes[-1]:.1f}")
            for gap, before, after in sorted(gaps, reverse=True)[:12]:
                print(f"   {gap * 1e3:7.1f} us  after {short(before)}\n              before {short(after)}")
            for gap, before, after in gaps:
                followers[short(after)] += gap
            print("   gap time by the kernel that follows (ms):")
            for name, total in followers.most_common(8):
                print(f"   {total:7.3f}  {name}")
    del backend
    torch._dynamo.reset()
