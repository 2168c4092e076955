"""Export-friendly building blocks shared by the stage wrappers.

Attention goes through an `AttentionKernel`, the backend's choice: `matmul_attention` writes it out
as matmul + softmax with an additive, finite bias (no SDPA decomposition guards in ExecuTorch, no -inf
that would overflow in fp16); a backend's fused kernel hands the whole product to one runtime op.
RoPE is real arithmetic on cos/sin tables precomputed as contiguous buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

#: Added to the attention logits of masked keys: exp(-1e4) is exactly 0 in fp32 and fp16,
#: and -1e4 stays far inside the fp16 range.
MASKED_LOGIT_BIAS = -1.0e4


#: softmax(scale * q @ k^T + key_bias) @ v for (B, H, L, D) heads, key_bias (B, 1, 1, Lk) or None.
AttentionKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, "torch.Tensor | None"], torch.Tensor]


def matmul_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_bias: torch.Tensor | None
) -> torch.Tensor:
    """The attention every backend lowers: two matmuls around a softmax (the recipes' `matmul` form).

    Nothing runs over the (queries x keys) logits but the matmuls and the softmax: the scale multiplies the
    queries, and a key bias rides in the first matmul as one more channel ([q, 1] . [k, bias], `fold_key_bias`).
    Scaling and biasing the logits instead took two passes over memory attention's 64 MB matrices per layer
    (full size, ExecuTorch's profile: multiplies and adds 37.2 -> 14.4 ms of ~352 ms a call).

    One head (memory attention) runs as 3D `bmm`: a 4D `matmul` broadcasts its operands with `expand`, which
    ExecuTorch copies outside XNNPACK's delegate (the 64 MB attention weights of a full-size frame, twice a
    layer: 45 of memory attention's 454 ms). Several heads (the decoder) keep the 4D form: the 3D one makes a
    partition of the full-size int8-weights decoder return one permuted tensor twice, which the XNNPACK
    delegate of ExecuTorch 1.5.1 refuses ("pass through arguments").
    """
    batch, heads = v.shape[:2]
    if key_bias is None:
        q = q * scale
    else:
        q, k, v, _ = fold_key_bias(q, k, v, scale, key_bias, extend_values=False)
    if heads > 1:
        return torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)), dim=-1), v)
    q, k, v = (x.flatten(0, 1) for x in (q, k, v))
    return torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1), v).unflatten(0, (batch, heads))


def fold_key_bias(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_bias: torch.Tensor | None,
    extend_values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The same attention with no bias: one more channel per head ([scale * q, 1] . [k, bias]) and scale 1.

    Fused kernels take at most one mask for the whole batch, and ONNX Runtime's flash path none; the
    key bias here differs per object. With `extend_values`, v gets a zero channel so every head keeps one
    size; a kernel drops it after (`[..., :head_dim]`). Without a bias, the inputs come back as they are.
    """
    if key_bias is None:
        return q, k, v, scale
    heads, keys = k.shape[1], k.shape[2]
    q = torch.cat([q * scale, torch.ones_like(q[..., :1])], dim=-1)
    k = torch.cat([k, key_bias.transpose(-1, -2).expand(-1, heads, keys, 1)], dim=-1)
    if extend_values:
        v = torch.cat([v, torch.zeros_like(v[..., :1])], dim=-1)
    return q, k, v, 1.0


def attend(
    attention: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_bias: torch.Tensor | None = None,
    rope: RotaryTables | None = None,
    kernel: AttentionKernel = matmul_attention,
) -> torch.Tensor:
    """Multi-head attention through a transformers attention module's projections.

    Shapes:
        query: (B, Lq, C); key, value: (B, Lk, Ckv)
        key_bias: (B, 1, 1, Lk) additive logits bias, or None
        rope: the query's and key's cos/sin tables, each (L, head_dim), or None
        returns: (B, Lq, C)
    """
    heads = attention.num_attention_heads
    q, k, v = (split_heads(projection(x), heads) for projection, x in
               ((attention.q_proj, query), (attention.k_proj, key), (attention.v_proj, value)))
    if rope is not None:
        q = q * rope.cos_q + rope.rotation(q) * rope.sin_q
        k = k * rope.cos_k + rope.rotation(k) * rope.sin_k
    return attention.o_proj(merge_heads(kernel(q, k, v, attention.scaling, key_bias)))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H * D) -> (B, H, L, D); one head is a reshape (XNNPACK's, not an ExecuTorch unsqueeze_copy),
    not a transpose the runtimes would copy."""
    batch, length, channels = x.shape
    return x.reshape(batch, 1, length, channels) if heads == 1 else x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D) -> (B, L, H * D), the inverse of `split_heads`."""
    batch, heads, length, head_dim = x.shape
    return x.reshape(batch, length, head_dim) if heads == 1 else x.transpose(1, 2).flatten(2)


class PairRotation(nn.Module):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the pairwise rotation of 2D axial RoPE.

    A linear layer of weight [[0, -1], [1, 0]] on the pairs (exact: each output is one input times +-1 plus
    zeros), kept as a buffer: XNNPACK takes a linear only when its weight is a parameter or buffer of the
    program. Indexing the pairs was an ExecuTorch select_copy outside the delegate (20 of memory attention's
    454 ms at full size). A module of its own so that int8 schemes leave it in float (`quantization`).
    """

    def __init__(self) -> None:
        super().__init__()
        contiguous_buffer(self, "weight", torch.tensor([[0.0, -1.0], [1.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x.unflatten(-1, (-1, 2)), self.weight).flatten(-2)


class BilinearUpsample(nn.Module):
    """`F.interpolate(x, size=(out, out), mode="bilinear", align_corners=False)` of square maps, as two linear
    layers whose weights hold the interpolation: each output is the same two-tap sum per axis (equal to
    PyTorch's to fp32 rounding).

    ExecuTorch keeps `upsample_bilinear2d` outside XNNPACK when the objects axis makes its output dynamic (8.6 ms of
    the full-size memory encoder on a portable kernel), and its OpenVINO partitioner refuses the op; a linear
    every delegate takes. The weights are buffers, so int8 schemes leave them in float (`quantization`).
    """

    def __init__(self, size_in: int, size_out: int) -> None:
        super().__init__()
        # PyTorch's source index for align_corners=False: (dst + 0.5) * in / out - 0.5, clamped at 0.
        source = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5).clamp_min(0)
        low = source.floor().long().clamp_max(size_in - 1)
        high = (low + 1).clamp_max(size_in - 1)
        weight = torch.zeros(size_out, size_in, dtype=torch.float64)
        rows = torch.arange(size_out)
        weight.index_put_((rows, low), 1 - (source - low), accumulate=True)
        weight.index_put_((rows, high), source - low, accumulate=True)
        contiguous_buffer(self, "weight", weight.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = nn.functional.linear(x, self.weight)  # (..., in, out)
        return nn.functional.linear(columns.transpose(-1, -2), self.weight).transpose(-1, -2)


class AveragingChannelNorm(nn.Module):
    """transformers' channels-first LayerNorm of (N, C, H, W) maps, with the channel means as 1x1 convolutions
    of fixed weight 1/C: the map stays in one layout, in operators XNNPACK delegates.

    XNNPACK has no LayerNorm, and its partitioner takes a mean over spatial axes only; transformers' form
    (permute, LayerNorm, permute) left the full-size memory encoder's norms on portable kernels behind layout
    copies and transposes. The weight 1/C is a buffer, so int8 schemes leave the norm in float (`quantization`).
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        if getattr(norm, "data_format", None) != "channels_first":
            raise ValueError(f"AveragingChannelNorm takes a channels-first LayerNorm (LayerNorm2d), not {norm}")
        (channels,) = norm.normalized_shape
        self.eps = norm.eps
        contiguous_buffer(self, "average", torch.full((1, channels, 1, 1), 1.0 / channels))
        self.weight = nn.Parameter(norm.weight.detach().reshape(1, channels, 1, 1))
        self.bias = nn.Parameter(norm.bias.detach().reshape(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - nn.functional.conv2d(x, self.average)
        variance = nn.functional.conv2d(centred * centred, self.average)
        return centred * torch.rsqrt(variance + self.eps) * self.weight + self.bias


class BandedDepthwiseConv(nn.Module):
    """A depthwise convolution ('same' padding, stride 1, odd kernel) as a sum of convolutions of at most `taps`
    taps each: a centred band of rows, then each pair of rows mirrored about the centre as a two-row convolution
    dilated to their distance. Every part is centred, so each keeps 'same' padding: no slicing of the map (slices
    of a map with an objects axis stay outside XNNPACK's delegate).

    XNNPACK's depthwise kernels take up to 25 taps; it runs a 7x7 one (49 taps) as a grouped IGEMM instead, 26 ms
    against 2 ms for a 5x5 on the memory fuser's 64x64x256 map. A 7x7 kernel becomes rows 2-4 (3x7), rows 1 and 5
    (dilation 4) and rows 0 and 6 (dilation 6).
    """

    def __init__(self, conv: nn.Conv2d, taps: int) -> None:
        super().__init__()
        height, width = conv.kernel_size
        if (conv.groups != conv.in_channels or conv.stride != (1, 1) or conv.dilation != (1, 1) or height % 2 == 0
                or conv.padding != (height // 2, width // 2) or conv.padding_mode != "zeros" or conv.bias is None
                or taps < 2 * width):
            raise ValueError(f"BandedDepthwiseConv takes a 'same' odd depthwise convolution of stride 1 with a bias "
                             f"and zero padding, and at least two rows of taps, not {conv} with {taps}")
        centre = height // 2
        half = min((taps // width - 1) // 2, centre)  # the centred band: rows centre - half .. centre + half
        weight = conv.weight.detach()
        parts = [(weight[:, :, centre - half:centre + half + 1], 1)]
        mirrored_rows = range(centre - half - 1, -1, -1)  # each with its mirror row: a two-row kernel, dilated
        parts += [(weight[:, :, [row, height - 1 - row]], height - 1 - 2 * row) for row in mirrored_rows]
        self.groups, self.columns_padding = conv.groups, width // 2
        self.weights = nn.ParameterList(nn.Parameter(part.contiguous()) for part, _ in parts)
        self.dilations = [dilation for _, dilation in parts]
        self.bias = nn.Parameter(conv.bias.detach().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bias
        for weight, dilation in zip(self.weights, self.dilations):
            rows_padding = (weight.shape[-2] - 1) * dilation // 2
            out = out + nn.functional.conv2d(x, weight, padding=(rows_padding, self.columns_padding),
                                             dilation=(dilation, 1), groups=self.groups)
        return out


def positive(x: torch.Tensor) -> torch.Tensor:
    """1.0 where x > 0, else 0.0, as relu(sign(x)) (exact but for NaN, which stays NaN): a comparison's
    bool-to-float conversion of a full-size mask ran as an 11.9 ms portable copy in ExecuTorch; sign is one
    1.0 ms kernel, relu stays in XNNPACK."""
    return torch.relu(torch.sign(x))


def pointwise_conv(linear: nn.Linear) -> nn.Conv2d:
    """The 1x1 convolution equal to `linear` on the channels of a (N, C, H, W) map (its weights, viewed)."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, kernel_size=1, bias=linear.bias is not None)
    conv.weight = nn.Parameter(linear.weight.detach().reshape(linear.out_features, linear.in_features, 1, 1))
    if linear.bias is not None:
        conv.bias = nn.Parameter(linear.bias.detach())
    return conv


@dataclass(frozen=True)
class StageForm:
    """How a backend wants the stages written (`Backend.stage_form`): the same arithmetic, in the operators its
    kernels run well. Parity with transformers is checked on whatever form a bundle is exported in."""

    #: The attention every stage calls (the recipe's `attention` form, in the backend's kernel).
    attention: AttentionKernel = matmul_attention
    #: The memory encoder in convolutions and elementwise operators only, in one layout: channels-first
    #: LayerNorms as `AveragingChannelNorm`, the fuser's pointwise linears as 1x1 convolutions (no permutes).
    convolutional_memory_encoder: bool = False
    #: The most taps one depthwise convolution of the memory fuser may have; a larger kernel becomes
    #: `BandedDepthwiseConv` (None: any).
    depthwise_taps: int | None = None


#: Fixed operators with buffer weights (linear layers, averaging convolutions): int8 schemes leave them in float
#: (int8 would only add error and time to an exact rotation, an interpolation or a normalization).
FIXED_OPERATORS = (PairRotation, BilinearUpsample, AveragingChannelNorm)


class RotaryTables(NamedTuple):
    """2D axial RoPE of one attention: cos/sin tables (L, head_dim) of queries and keys, and the pair rotation."""

    cos_q: torch.Tensor
    sin_q: torch.Tensor
    cos_k: torch.Tensor
    sin_k: torch.Tensor
    rotation: PairRotation


def contiguous_buffer(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Register a constant as a contiguous, non-persistent buffer.

    ExecuTorch copies a channels_last constant's raw bytes as if it were contiguous (a silent
    ~1e-2 error in the decoder's masks), so every constant is made contiguous here.
    """
    module.register_buffer(name, tensor.detach().clone().contiguous(), persistent=False)


def assert_all_contiguous(module: nn.Module) -> None:
    """Fail loudly if any parameter or buffer would reach an exporter with a non-contiguous layout."""
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if not tensor.is_contiguous():
            raise AssertionError(f"{type(module).__name__}.{name} is not contiguous")


class AxialTable(nn.Module):
    """A (H*W, C) position table stored as its row and column factors: H + W rows instead of H * W.

    2D sine encodings and axial RoPE tables give half their channels to the row and half to the column
    of a token, so a stage rebuilds them exactly (expand + concatenate, no arithmetic) on every call
    instead of baking megabytes of constants into each artifact.
    """

    def __init__(self, table: torch.Tensor, height: int, width: int) -> None:
        super().__init__()
        grid = table.reshape(height, width, -1)
        half = grid.shape[-1] // 2
        self.height, self.width = height, width
        for name, part in (("first", grid[..., :half]), ("second", grid[..., half:])):
            if torch.equal(part, part[:, :1].expand_as(part)):
                factor = part[:, :1]  # (H, 1, C/2): depends on the row only
            elif torch.equal(part, part[:1].expand_as(part)):
                factor = part[:1]  # (1, W, C/2): depends on the column only
            else:
                raise ValueError(f"the {name} half of a {tuple(table.shape)} position table depends on both axes")
            contiguous_buffer(self, name, factor)

    def forward(self) -> torch.Tensor:
        # Broadcast by multiplying with ones, not `expand`: ExecuTorch runs expand_copy outside XNNPACK's
        # delegate (41.8 of memory attention's 412 ms at full size), a broadcasting multiply inside it.
        ones = torch.ones(self.height, self.width, 1, dtype=self.first.dtype)
        return torch.cat([self.first * ones, self.second * ones], dim=-1).flatten(0, 1)
