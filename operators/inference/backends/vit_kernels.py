"""Kernel-level rewrites of the BiomedCLIP image tower (timm ViT-B/16) for CUDA inference.

Same function, fewer and faster kernels. Measured on a lent H200, batch 256, torch.compile + CUDA
graphs, bf16 (``benchmarks/gpu_ablations.py``, BENCHMARKS.md):

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


def fuse_kernels(tower: nn.Module, gelu_epilogue: bool = True) -> nn.Module:
    """Rewrite the tower in place where its modules have the expected form (others stay as they are).
    ``gelu_epilogue=False`` for FP8, whose ``fc1`` is an FP8 matmul (its GELU fuses into the
    quantisation of ``fc2``'s input instead)."""
    trunk = getattr(tower, "trunk", tower)
    if PatchEmbeddingGemm.applies_to(getattr(trunk, "patch_embed", None)):
        trunk.patch_embed = PatchEmbeddingGemm(trunk.patch_embed)
    if gelu_epilogue:
        for block in getattr(trunk, "blocks", ()):
            if GeluEpilogueMlp.applies_to(getattr(block, "mlp", None)):
                block.mlp = GeluEpilogueMlp(block.mlp)
    return tower
