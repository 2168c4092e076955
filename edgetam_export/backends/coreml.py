"""Core ML backend: one ML Program `.mlpackage` per stage, converted from the same torch.export program.

Running the packages is the runtime's job (`edgetam_export.runtime.runners.coreml`: `MLModel` on macOS,
the NumPy MIL interpreter elsewhere).
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from edgetam_export.backends.base import Backend
from edgetam_export.quantization import StageQuantization
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.common import AttentionKernel
from edgetam_export.stages.spec import IMAGE_INPUT, OBJECTS, StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DEPLOYMENT_TARGETS = ("iOS17", "iOS18", "macOS14", "macOS15")


def coreml_target(recipe: Recipe):
    """The recipe's minimum deployment target as a coremltools target, refusing unsupported ones."""
    import coremltools as ct

    target = recipe.deployment_target or "iOS17"
    if target not in DEPLOYMENT_TARGETS:
        raise EdgeTamExportError(
            f"recipe '{recipe.name}': deployment target '{target}' is not supported; use one of "
            f"{', '.join(DEPLOYMENT_TARGETS)}"
        )
    return getattr(ct.target, target)


#: Deployment targets whose ML Programs have the fused `scaled_dot_product_attention` op.
FUSED_ATTENTION_TARGETS = ("iOS18", "macOS15")


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_bias: torch.Tensor | None
) -> torch.Tensor:
    """An `AttentionKernel` coremltools converts to iOS 18's fused `scaled_dot_product_attention`.

    coremltools fuses torch's SDPA only at its default scale, 1/sqrt(D): the query carries the rest.
    The key bias is the op's additive mask.
    """
    return F.scaled_dot_product_attention(q * (scale * q.shape[-1] ** 0.5), k, v, attn_mask=key_bias)


def fused_attention_for(recipe: Recipe) -> AttentionKernel:
    """Core ML's fused attention, for a recipe whose target has it."""
    if (recipe.deployment_target or "iOS17") not in FUSED_ATTENTION_TARGETS:
        raise EdgeTamExportError(
            f"recipe '{recipe.name}': fused attention needs deployment_target {' or '.join(FUSED_ATTENTION_TARGETS)} "
            "(Core ML's scaled_dot_product_attention); set one or attention = \"matmul\""
        )
    return scaled_dot_product_attention


#: Weights per palette of the 6-bit palettization (per-grouped-channel LUTs need iOS 18 / macOS 15).
PALETTE_GROUP = 16


class CoreMLBackend(Backend):
    name = "coreml"
    suffix = ".mlpackage"
    schemes = frozenset({"int8-weights", "palettized-6bit"})

    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path,
              quantization: StageQuantization | None = None) -> dict:
        import coremltools as ct

        target = coreml_target(recipe)
        precision = {"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32}[recipe.precision]
        inputs = []
        for tensor in spec.inputs:
            if tensor.name == IMAGE_INPUT:  # 0..255 RGB; the normalization is inside the stage
                inputs.append(ct.ImageType(name=tensor.name, shape=tensor.shape, color_layout=ct.colorlayout.RGB))
                continue
            shape = [
                ct.RangeDim(1, spec.max_objects, 1) if d == OBJECTS and spec.max_objects > 1 else (1 if d == OBJECTS else d)
                for d in tensor.shape
            ]
            inputs.append(ct.TensorType(name=tensor.name, shape=ct.Shape(shape), dtype=tensor.numpy_dtype.type))
        model = ct.convert(
            program.run_decompositions({}),
            inputs=inputs,
            outputs=[ct.TensorType(name=name) for name in spec.output_names],
            convert_to="mlprogram",
            compute_precision=precision,
            compute_units=getattr(ct.ComputeUnit, recipe.compute_units or "ALL"),
            minimum_deployment_target=target,
            skip_model_load=True,
        )
        facts = {}
        if quantization is not None:
            model = compress_weights(model, quantization.scheme, recipe)
            facts["quantization"] = quantization.scheme
        model.author = "edgetam-export"
        model.license = "Apache-2.0 (EdgeTAM: facebookresearch/EdgeTAM; export: edgetam-export)"
        model.version = version("edgetam-export")
        model.short_description = f"EdgeTAM {spec.name}: {spec.description}"
        for tensor in spec.inputs:
            model.input_description[tensor.name] = f"{tensor.dtype} {list(tensor.shape)}: {tensor.description}"
        for tensor in spec.outputs:
            model.output_description[tensor.name] = f"{tensor.dtype} {list(tensor.shape)}: {tensor.description}"
        model.save(str(artifact))
        return facts | {
            "precision": recipe.precision,
            "deployment_target": recipe.deployment_target or "iOS17",
            "compute_units": recipe.compute_units or "ALL",
        }

    def fused_attention(self, recipe: Recipe) -> AttentionKernel:
        return fused_attention_for(recipe)

    def versions(self) -> dict[str, str]:
        return {"coremltools": version("coremltools")}


def compress_weights(model, scheme: str, recipe: Recipe):
    """coremltools weight compression of a converted ML Program; compute stays at the recipe's precision.

    int8-weights: symmetric per-output-channel int8 (`constexpr_affine_dequantize` on iOS 17,
    `constexpr_blockwise_shift_scale` on iOS 18). palettized-6bit: k-means 64-entry lookup tables per group
    of 16 output channels (`constexpr_lut_to_dense`, iOS 18). Small tensors (under 2048 values: biases,
    norms) stay in fp16.
    """
    import coremltools.optimize.coreml as cto

    if scheme == "int8-weights":
        config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=config))
    if (recipe.deployment_target or "iOS17") in ("iOS17", "macOS14"):
        raise EdgeTamExportError(
            f"recipe '{recipe.name}': per-grouped-channel palettization needs deployment_target iOS18 or macOS15"
        )
    config = cto.OpPalettizerConfig(nbits=6, mode="kmeans", granularity="per_grouped_channel", group_size=PALETTE_GROUP)
    return cto.palettize_weights(model, cto.OptimizationConfig(global_config=config))
