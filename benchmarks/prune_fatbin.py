#!/usr/bin/env python3
"""Keep one GPU architecture's cubins in a CUDA shared library, to carry it under a transfer limit.

    python -m benchmarks.prune_fatbin libonnxruntime_providers_cuda.so 90 pruned.so && xz -6 pruned.so

How onnxruntime-gpu 1.31.1 (255 MB wheel) reached the lent H200 through the device tool's 64 MiB per call
(docs/backends.md): its CUDA provider library holds cubins for sm_75 ... sm_120; with sm_90 alone it
compresses to 52 MB. Each fatbin keeps its offset (the CUDA runtime's wrapper points there); its entries for
the wanted architecture move to the front, its size field shrinks to them, and the freed tail is zeroed.
Fatbins with no entry for that architecture stay whole. Check the result with ``cuobjdump --list-elf``.

Layout (as read by ZLUDA's fatbin parser): fatbin header = magic 0xBA55ED50 (u32), version (u16),
header size (u16), entries' size (u64); entry header = kind (u16; 2 = ELF), version (u16), header size
(u32), padded payload size (u32), ..., SM version (u32 at offset 28).
"""

from __future__ import annotations

import collections
import struct
import sys
from pathlib import Path

MAGIC = struct.pack("<I", 0xBA55ED50)


def prune(data: bytearray, sm: int) -> dict[str, int]:
    stats: collections.Counter[str] = collections.Counter()
    pos = 0
    while (off := data.find(MAGIC, pos)) >= 0:
        version, header_size, size = struct.unpack_from("<HHQ", data, off + 4)
        start, end = off + header_size, off + header_size + size
        if version != 1 or header_size != 16 or not size or end > len(data):  # the magic bytes by chance
            pos = off + 4
            continue
        entries, entry = [], start
        while entry < end:
            kind, _, entry_header, padded = struct.unpack_from("<HHII", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            entries.append((kind, arch, bytes(data[entry : entry + entry_header + padded])))
            entry += entry_header + padded
        if entry != end:
            raise ValueError(f"fatbin at {off:#x}: entries overrun its size")
        kept = [blob for kind, arch, blob in entries if kind == 2 and arch == sm]
        if kept:
            body = b"".join(kept)
            data[start:end] = body + bytes(size - len(body))
            struct.pack_into("<Q", data, off + 8, len(body))
            stats["entries kept"] += len(kept)
            stats["entries dropped"] += len(entries) - len(kept)
            stats["bytes zeroed"] += size - len(body)
        else:
            stats["fatbins left whole"] += 1
        pos = end
    return dict(stats)


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    source, sm, target = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    data = bytearray(source.read_bytes())
    print(prune(data, sm))
    target.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
