"""Image embeddings kept by input: a bounded cache of the image encoder's answers, keyed by the SHA-256 of
each input image's bytes (with its dtype and shape), for the CPU models of a Triton server.

It lets the listener's prefetch (``app/listener/prefetch.py``) do a study's inference while the study is
still arriving: the job's own requests then find their embeddings here. Only what the prefetch sends is
kept (its requests carry ``triton_repository.PREFETCH_PARAMETER``): a client repeating the same images, as
a load generator does, is computed each time. A hit is the answer for exactly the
bytes the model was given, whoever sent them: no request ever gets an answer computed from other pixels (a
cryptographic key, not Triton's response cache, whose 64-bit hash of a whole request would also make a
batch of 7 miss what was computed image by image). Images repeated within one batch are computed once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np


def image_key(image: np.ndarray) -> bytes:
    """SHA-256 of one input image's dtype, shape and bytes (C order)."""
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()


class EmbeddingCache:
    """The last ``capacity`` kept images' embeddings (least recently used first out)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an embedding cache holds at least one entry, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def embed(self, batch: np.ndarray, compute: Callable[[np.ndarray], np.ndarray],
              keep: Sequence[bool] | None = None) -> tuple[np.ndarray, int]:
        """``batch`` (N x ...) → (its embeddings, N x D, and how many of the N were not computed): ``compute`` is
        called once, on the images neither held nor earlier in the batch, or not at all. Only the images
        ``keep`` marks (all, if not given) are held for later batches."""
        if not len(batch):
            return compute(batch), 0
        keys = [image_key(image) for image in batch]
        found = {key: self._entries[key] for key in keys if key in self._entries}
        missing = {key: index for index, key in enumerate(keys) if key not in found}  # the first of repeats
        if missing:
            computed = compute(batch[list(missing.values())])
            found |= {key: np.array(row, dtype=np.float32) for key, row in zip(missing, computed)}
        for key, kept in zip(keys, [True] * len(keys) if keep is None else keep):
            # after the lookups: a batch larger than the cache evicts only older images
            if key in self._entries:
                self._entries.move_to_end(key)
            elif kept:
                self._entries[key] = found[key]
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return np.stack([found[key] for key in keys]), len(keys) - len(missing)
