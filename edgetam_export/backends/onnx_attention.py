"""ONNX Runtime's fused attention for the stages: `com.microsoft.MultiHeadAttention`.

The stages are traced with `edgetam::multi_head_attention`, a torch op (SDPA underneath, so the traced
program still runs in PyTorch) that the exporter's translation table writes as the contrib op. Without
a mask the CPU kernel takes its flash-attention path: measured here on the memory attention's 4096 x 4096
x 256 self-attention, 50.6 ms against 77.4 ms for MatMul + Softmax + MatMul (2 threads).
"""

from __future__ import annotations

import onnx
import onnxscript
import torch
import torch.nn.functional as F

from edgetam_export.stages.common import fold_key_bias, merge_heads, split_heads



def _contrib_schema() -> onnx.defs.OpSchema:
    """The part of ONNX Runtime's MultiHeadAttention schema the stages use (the onnx package has none)."""
    Parameter, Attribute = onnx.defs.OpSchema.FormalParameter, onnx.defs.OpSchema.Attribute
    return onnx.defs.OpSchema(
        "MultiHeadAttention", "com.microsoft", 1,
        inputs=[Parameter(name, "T") for name in ("query", "key", "value")],
        outputs=[Parameter("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
        attributes=[Attribute("num_heads", onnx.defs.OpSchema.AttrType.INT, ""),
                    Attribute("scale", onnx.defs.OpSchema.AttrType.FLOAT, "")],
    )


MULTI_HEAD_ATTENTION = onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), "MultiHeadAttention",
                                            _contrib_schema())


@torch.library.custom_op("edgetam::multi_head_attention", mutates_args=())
def multi_head_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int,
                         scale: float) -> torch.Tensor:
    """softmax(scale * q k^T) v over (B, L, H * D) tensors, heads side by side (the contrib op's layout)."""
    heads = [x.unflatten(-1, (num_heads, -1)).transpose(1, 2) for x in (query, key, value)]
    return F.scaled_dot_product_attention(*heads, scale=scale).transpose(1, 2).flatten(2)


@multi_head_attention.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    return query.new_empty((*query.shape[:2], value.shape[-1]))


def onnx_multi_head_attention(query, key, value, num_heads: int, scale: float):
    """The translation of `edgetam::multi_head_attention` for `torch.onnx.export`."""
    return MULTI_HEAD_ATTENTION(query, key, value, num_heads=num_heads, scale=scale)


TRANSLATIONS = {torch.ops.edgetam.multi_head_attention.default: onnx_multi_head_attention}


def multi_head_attention_kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_bias: torch.Tensor | None
) -> torch.Tensor:
    """An `AttentionKernel` through `edgetam::multi_head_attention`; a key bias is folded into the heads
    (a mask would take the kernel off its flash path)."""
    head_dim, heads = v.shape[-1], q.shape[1]
    q, k, v, scale = fold_key_bias(q, k, v, scale, key_bias)
    out = torch.ops.edgetam.multi_head_attention(*(merge_heads(x) for x in (q, k, v)), heads, scale)
    return split_heads(out, heads)[..., :head_dim]
