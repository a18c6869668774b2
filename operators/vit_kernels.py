"""Kernel-level rewrites of the BiomedCLIP image tower (timm ViT-B/16) for CUDA inference.

Same function, fewer and faster kernels. Measured on a lent H200, batch 256, torch.compile + CUDA
graphs, bf16 (``scripts/gpu_ablations.py``, BENCHMARKS.md):

- The patch embedding is a 16x16 stride-16 convolution; cuDNN runs it as an implicit GEMM between two
  NCHW<->NHWC layout transposes (2.2 ms of a 19 ms batch). As one GEMM over the unfolded patches it
  is ~0.1 ms: the same arithmetic, the patch unfolding fused by Inductor into one copy.
- The MLP's GELU is a separate pass over the largest activation (N x 197 x 3072) after ``fc1``.
  ``torch._addmm_activation`` runs ``fc1`` in cuBLASLt with the bias + GELU epilogue, which Inductor
  keeps as one kernel. cuBLASLt's GELU is the tanh approximation (|difference| < 5e-4 from the exact
  erf GELU, well inside fp16/bf16 rounding); on the CPU PyTorch computes the exact GELU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbeddingGemm(nn.Module):
    """timm ``PatchEmbed`` (conv with kernel == stride, flatten to N x L x C) as one GEMM."""

    def __init__(self, patch_embed: nn.Module) -> None:
        super().__init__()
        conv = patch_embed.proj
        self.patch = conv.kernel_size[0]
        weight = conv.weight.detach()  # C_out x C_in x p x p, flattened in the order the patches unfold
        self.weight = nn.Parameter(weight.reshape(weight.shape[0], -1), requires_grad=False)
        self.bias = conv.bias

    @staticmethod
    def applies_to(patch_embed: nn.Module) -> bool:
        conv = getattr(patch_embed, "proj", None)
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size == conv.stride and conv.kernel_size[0] == conv.kernel_size[1]
                and conv.padding == (0, 0) and conv.groups == 1 and getattr(patch_embed, "flatten", False)
                and isinstance(getattr(patch_embed, "norm", None), nn.Identity) and not getattr(patch_embed, "dynamic_img_pad", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.patch
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the {p}-pixel patch")
        patches = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // p) * (w // p), c * p * p)
        return F.linear(patches, self.weight, self.bias)


class GeluEpilogueMlp(nn.Module):
    """timm ``Mlp`` (fc1 -> GELU -> fc2) with fc1's bias and GELU in the GEMM's epilogue."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.fc1, self.fc2 = mlp.fc1, mlp.fc2

    @staticmethod
    def applies_to(mlp: nn.Module) -> bool:
        return (isinstance(getattr(mlp, "fc1", None), nn.Linear) and mlp.fc1.bias is not None
                and isinstance(getattr(mlp, "act", None), nn.GELU) and isinstance(getattr(mlp, "fc2", None), nn.Linear)
                and isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch._addmm_activation(self.fc1.bias, x.reshape(-1, x.shape[-1]), self.fc1.weight.t(), use_gelu=True)
        return self.fc2(hidden).reshape(*x.shape[:-1], -1)


@torch.library.custom_op("biomedclip::residual_addmm_", mutates_args=("residual",))
def residual_addmm_(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    """residual += x @ weight.T as one GEMM that reads and writes ``residual`` in place (beta = 1).

    A custom op so that Inductor keeps the in-place GEMM: left to itself it would emit ``addmm`` into a
    new buffer, which ATen implements as a copy of ``residual`` followed by the GEMM."""
    residual.addmm_(x, weight.t())


@residual_addmm_.register_fake
def _(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    return None


class ResidualStreamBlocks(nn.Module):
    """timm's pre-norm ``blocks`` + final ``norm`` (token pooling) with the residual adds inside the GEMMs.

    Each block's ``attn.proj`` and ``mlp.fc2`` add their product straight into the residual stream in the
    GEMM epilogue, so the LayerNorm after them reads one tensor and writes one, instead of reading the
    GEMM output and the residual and writing both the new residual and the normalised copy. Their biases
    cannot ride in that epilogue too (ATen's in-place addmm has no bias), so they are deferred: the stored
    stream is x minus the sum of the biases added so far, a constant per position in the network that
    each LayerNorm adds back as it loads its row. The final LayerNorm runs on the class token only
    (LayerNorm is per token, and ``global_pool='token'`` keeps no other)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        # on CUDA the LayerNorms run as one hand-written Triton kernel (operators.triton_layer_norm);
        # False leaves them to Inductor. (rows per program, warps) is the kernel's launch shape.
        self.triton_norm, self.norm_launch = True, (4, 4)
        self.blocks = trunk.blocks
        self.norm = trunk.norm
        pending, shifts = torch.zeros_like(trunk.norm.weight, dtype=torch.float32), []
        for block in self.blocks:
            shifts.append(pending.clone())
            pending += block.attn.proj.bias.detach().float()
            shifts.append(pending.clone())
            pending += block.mlp.fc2.bias.detach().float()
        shifts.append(pending)
        # the LayerNorms' inputs are x = stream + shift[i]: 2 per block, then the final norm
        self.register_buffer("shifts", torch.stack(shifts))

    @staticmethod
    def applies_to(trunk: nn.Module) -> bool:
        blocks = getattr(trunk, "blocks", ())
        return (len(blocks) > 0 and getattr(trunk, "global_pool", None) == "token"
                and isinstance(getattr(trunk, "norm", None), nn.LayerNorm)
                and isinstance(getattr(trunk, "fc_norm", None), nn.Identity)
                and all(ResidualStreamBlocks._plain(block) for block in blocks))

    @staticmethod
    def _plain(block: nn.Module) -> bool:
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        return (all(isinstance(getattr(block, n, None), nn.LayerNorm) for n in ("norm1", "norm2"))
                and all(isinstance(getattr(block, n, None), nn.Identity) for n in ("ls1", "ls2", "drop_path1", "drop_path2"))
                and all(isinstance(getattr(attn, n, None), nn.Identity) for n in ("q_norm", "k_norm", "norm"))
                and getattr(attn, "gate", None) is None and isinstance(getattr(attn, "qkv", None), nn.Linear)
                and isinstance(getattr(attn, "proj", None), nn.Linear) and attn.proj.bias is not None
                and GeluEpilogueMlp.applies_to(mlp) and mlp.fc2.bias is not None)

    def _layer_norm(self, stream: torch.Tensor, index: int, norm: nn.LayerNorm) -> torch.Tensor:
        if self.triton_norm and stream.is_cuda:
            from operators.triton_layer_norm import shifted_layer_norm

            rows = stream.reshape(-1, stream.shape[-1])
            return shifted_layer_norm(rows, self.shifts[index], norm.weight, norm.bias, norm.eps,
                                      *self.norm_launch).reshape(stream.shape)
        x = stream.float() + self.shifts[index].float()
        return F.layer_norm(x, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps).to(stream.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        stream = x.reshape(batch * tokens, width).clone()  # owned by this forward: mutated in place below
        for i, block in enumerate(self.blocks):
            attn = block.attn
            h = self._layer_norm(stream, 2 * i, block.norm1)
            qkv = F.linear(h, attn.qkv.weight, attn.qkv.bias).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch * tokens, width)
            residual_addmm_(stream, a, attn.proj.weight)
            h = self._layer_norm(stream, 2 * i + 1, block.norm2)
            hidden = torch._addmm_activation(block.mlp.fc1.bias, h, block.mlp.fc1.weight.t(), use_gelu=True)
            residual_addmm_(stream, hidden, block.mlp.fc2.weight)
        cls = stream.reshape(batch, tokens, width)[:, :1]
        return self._layer_norm(cls, len(self.shifts) - 1, self.norm)


def fuse_kernels(tower: nn.Module, gelu_epilogue: bool = True, residual_stream: bool = False) -> nn.Module:
    """Rewrite the tower in place where its modules have the expected form (others stay as they are).
    ``gelu_epilogue=False`` for FP8, whose ``fc1`` is an FP8 matmul (its GELU fuses into the
    quantisation of ``fc2``'s input instead)."""
    trunk = getattr(tower, "trunk", tower)
    if PatchEmbeddingGemm.applies_to(getattr(trunk, "patch_embed", None)):
        trunk.patch_embed = PatchEmbeddingGemm(trunk.patch_embed)
    if gelu_epilogue and residual_stream and ResidualStreamBlocks.applies_to(trunk):
        trunk.blocks, trunk.norm = ResidualStreamBlocks(trunk), nn.Identity()
    elif gelu_epilogue:
        for block in getattr(trunk, "blocks", ()):
            if GeluEpilogueMlp.applies_to(getattr(block, "mlp", None)):
                block.mlp = GeluEpilogueMlp(block.mlp)
    return tower
