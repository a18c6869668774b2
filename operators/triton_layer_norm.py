"""Row LayerNorm of ``x + shift`` as one Triton kernel, callable inside ``torch.compile`` graphs.

Used by ``vit_kernels.ResidualStreamBlocks``: the residual stream is stored minus a per-channel
constant (the deferred biases), so each LayerNorm adds ``shift`` as it loads its rows. Several rows per
program (16-byte loads, all in flight at once) because one 768-wide bf16 row is only 1.5 KB.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _shifted_layer_norm(x_ptr, shift_ptr, w_ptr, b_ptr, y_ptr, rows, x_stride, y_stride, eps,
                        WIDTH: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]
    col = tl.arange(0, BLOCK)[None, :]
    in_row, in_col = row < rows, col < WIDTH
    x = tl.load(x_ptr + row * x_stride + col, mask=in_row & in_col, other=0.0).to(tl.float32)
    x += tl.load(shift_ptr + col, mask=in_col, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / WIDTH
    centred = tl.where(in_col, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(centred * centred, axis=1) / WIDTH + eps)
    w = tl.load(w_ptr + col, mask=in_col, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + col, mask=in_col, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * w + b
    tl.store(y_ptr + row * y_stride + col, y.to(y_ptr.dtype.element_ty), mask=in_row & in_col)


@torch.library.triton_op("biomedclip::shifted_layer_norm", mutates_args=())
def shifted_layer_norm(x: torch.Tensor, shift: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                       rows_per_program: int = 4, num_warps: int = 4) -> torch.Tensor:
    """LayerNorm over the last dimension of the 2-D ``x + shift``, in ``x``'s dtype."""
    rows, width = x.shape
    y = torch.empty((rows, width), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(rows, rows_per_program),)
    torch.library.wrap_triton(_shifted_layer_norm)[grid](
        x, shift, weight, bias, y, rows, x.stride(0), y.stride(0), eps,
        WIDTH=width, BLOCK=triton.next_power_of_2(width), ROWS=rows_per_program, num_warps=num_warps)
    return y
