"""Bicubic resampling as PyTorch computes it on the CPU, in numpy: ``F.interpolate(image, size, mode="bicubic",
align_corners=False, antialias=...)`` without importing torch (the ``-t`` app loads no model runtime).

The resampling is separable: one weight matrix per axis (output pixels × input pixels), applied as two
matrix products, block by block. Only the output pixels asked for are computed (the centre crop), and each
block covers only the input pixels it reaches, so a very long image is never resized in full.

- ``antialias=False`` (ATen ``upsample_bicubic2d``): Keys' cubic convolution with a = -0.75 at the source
  position ``scale × (i + 0.5) − 0.5``, the four taps clamped to the image's edge.
- ``antialias=True`` (ATen ``_upsample_bicubic2d_aa``, PIL's filter): Keys' kernel with a = -0.5, stretched
  by the scale when shrinking (support 2 × scale), the taps within ``centre ± support`` of the output
  pixel's centre ``scale × (i + 0.5)``, the weights normalised to sum 1 per output pixel.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

F32 = np.float32


def _keys(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` (Keys, IEEE TASSP 1981) at float32 ``x``: ATen's
    ``cubic_convolution1`` (|x| <= 1) and ``cubic_convolution2`` (1 < |x| < 2), whose float32 polynomials
    its x86-64 kernels evaluate with fused multiply-adds; evaluated in float64 and rounded once, they match
    those to float32 rounding where plain float32 steps drift by up to ~1e-4 after the resize."""
    x = np.abs(x.astype(F32)).astype(np.float64)
    inner = ((a + 2) * x - (a + 3)) * x * x + 1
    outer = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, inner, np.where(x < 2, outer, 0.0)).astype(F32)


def _antialiased_taps(in_size: int, out_size: int, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First input pixel and weights of each output pixel, as ATen's ``_compute_indices_min_size_weights_aa``
    computes them for float32 (its mix of float and double steps kept: the positions are rounded alike)."""
    scale = F32(in_size) / F32(out_size)
    support = F32(2.0 * float(scale)) if scale >= 1 else F32(2.0)
    inverse = F32(1.0 / float(scale)) if scale >= 1 else F32(1.0)
    width = int(np.ceil(support)) * 2 + 1
    centres = (np.float64(scale) * (outputs + 0.5)).astype(F32)
    starts = np.maximum(np.trunc((centres - support).astype(np.float64) + 0.5).astype(np.int64), 0)
    stops = np.minimum(np.trunc((centres + support).astype(np.float64) + 0.5).astype(np.int64), in_size)
    sizes = np.clip(stops - starts, 0, width)
    taps = np.arange(width)
    distance = ((taps[None, :] + starts[:, None]).astype(F32) - centres[:, None]).astype(np.float64) + 0.5
    weights = np.where(taps[None, :] < sizes[:, None], _keys(distance * np.float64(inverse), -0.5), F32(0))
    totals = np.zeros(len(outputs), F32)
    for column in weights.T:  # summed in order, in float32, as ATen does
        totals += column
    weights = np.divide(weights, totals[:, None], out=np.zeros_like(weights), where=totals[:, None] != 0)
    return starts, weights


def _cubic_taps(in_size: int, out_size: int, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First input pixel and weights of each output pixel, as ATen's ``upsample_bicubic2d`` computes them
    (``area_pixel_compute_source_index``, ``guard_index_and_lambda``, ``get_cubic_upsample_coefficients``)
    in float32, the source position rounded once as a fused multiply-add does; the first tap is one pixel
    before the source position, taps outside the image are clamped to its edge (``axis_weights`` adds them up)."""
    scale = F32(in_size) / F32(out_size)
    source = (np.float64(scale) * (outputs.astype(F32) + F32(0.5)) - 0.5).astype(F32)
    index = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    fraction = np.clip(source - index.astype(F32), F32(0), F32(1))
    opposite = (1.0 - fraction.astype(np.float64)).astype(F32)
    weights = np.stack([_keys(fraction.astype(np.float64) + 1.0, -0.75), _keys(fraction, -0.75),
                        _keys(opposite, -0.75), _keys(opposite.astype(np.float64) + 1.0, -0.75)], axis=1)
    return index - 1, weights


#: output pixels per block of a weight matrix: each block multiplies only the input pixels it reaches, so a
#: strong shrink (a 2140-pixel axis to 272) costs the taps, not the whole matrix
BLOCK = 16


@lru_cache(maxsize=64)
def axis_weights(in_size: int, out_size: int, first: int, count: int, antialias: bool) -> tuple[tuple[int, np.ndarray], ...]:
    """Output pixels ``first .. first + count - 1`` of an axis resized from ``in_size`` to ``out_size``, by
    blocks of ``BLOCK`` output pixels: (the first input pixel a block reaches, its ``rows × reach`` float32
    weights). Read-only, cached."""
    outputs = np.arange(first, first + count, dtype=np.int64)
    starts, weights = (_antialiased_taps if antialias else _cubic_taps)(in_size, out_size, outputs)
    columns = np.clip(starts[:, None] + np.arange(weights.shape[1])[None, :], 0, in_size - 1)
    blocks = []
    for top in range(0, count, BLOCK):
        block_columns, block_weights = columns[top : top + BLOCK], weights[top : top + BLOCK]
        begin = int(block_columns.min())
        matrix = np.zeros((len(block_columns), int(block_columns.max()) + 1 - begin), F32)
        rows = np.repeat(np.arange(len(block_columns)), block_weights.shape[1])
        np.add.at(matrix, (rows, (block_columns - begin).ravel()), block_weights.ravel())  # clamped taps add up
        matrix.flags.writeable = False
        blocks.append((begin, matrix))
    return tuple(blocks)


def resize_crop(image: np.ndarray, size: tuple[int, int], crop: tuple[int, int, int, int], antialias: bool) -> np.ndarray:
    """``C × H × W`` float32 resized to ``size`` (rows, columns), then cut to ``crop`` = (top, left, rows,
    columns): the same values as ``F.interpolate(...)[..., top:top + rows, left:left + columns]``."""
    top, left, rows, columns = crop
    row_blocks = axis_weights(image.shape[-2], size[0], top, rows, antialias)
    column_blocks = axis_weights(image.shape[-1], size[1], left, columns, antialias)
    reach = min(b for b, _ in column_blocks), max(b + m.shape[1] for b, m in column_blocks)
    image = image[:, :, reach[0] : reach[1]]
    resized_rows = np.concatenate([m @ image[:, b : b + m.shape[1]] for b, m in row_blocks], axis=1)
    blocks = [resized_rows[:, :, b - reach[0] : b - reach[0] + m.shape[1]] @ m.T for b, m in column_blocks]
    return np.concatenate(blocks, axis=2).astype(np.float32, copy=False)
