"""Attention is the backend's choice: each fused kernel equals the matmul form, in PyTorch and once lowered.

The fused forms: ExecuTorch's `llama::custom_sdpa`, ONNX Runtime's `com.microsoft.MultiHeadAttention` and
Core ML's iOS 18 `scaled_dot_product_attention`. Each tiny bundle below is exported with it, so the export's
own parity gate (fp32 >= 60 dB against transformers) has passed before the tests look at the artifacts.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from edgetam_export.backends import get_backend
from edgetam_export.backends.coreml import scaled_dot_product_attention
from edgetam_export.backends.onnx_attention import multi_head_attention_kernel
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.recipes import load_recipe, recipe_from_dict
from edgetam_export.stages.common import MASKED_LOGIT_BIAS, StageForm, fold_key_bias, matmul_attention
from edgetam_export.stages.registry import STAGES
from edgetam_export.verification.parity import psnr_db
from tests.conftest import _exported_once

KERNELS = {  # ExecuTorch's through the backend, which registers torch.ops.llama first
    "executorch": get_backend("executorch").attention_kernel(
        dataclasses.replace(load_recipe("executorch-xnnpack-fp32"), attention="fused")),
    "onnx": multi_head_attention_kernel,
    "coreml": scaled_dot_product_attention,
}

#: The tiny bundle of each backend family in each attention form: a shipped recipe's bundle from the session
#: fixtures, or a shipped recipe with another form (Core ML's fused op needs an iOS 18 target).
FORMS = {
    ("executorch", "matmul"): ("executorch-xnnpack-fp32", {}),
    ("executorch", "fused"): ("executorch-xnnpack-fp32", {"attention": "fused"}),
    ("onnx", "matmul"): ("onnx-fp32", {"attention": "matmul"}),
    ("onnx", "fused"): ("onnx-fp32", {}),
    ("coreml", "matmul"): ("coreml-fp32", {}),
    ("coreml", "fused"): ("coreml-fp32", {"attention": "fused", "deployment_target": "iOS18"}),
}


def _heads(batch: int, heads: int, length: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, heads, length, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("queries, keys", [(64, 96), (96, 5)])
def test_fused_kernel_equals_matmul_with_a_per_object_key_bias(backend, queries, keys):
    q, k, v = (_heads(3, 2, length, 8, seed) for seed, length in enumerate((queries, keys, keys)))
    valid = torch.rand(3, keys, generator=torch.Generator().manual_seed(7)) > 0.3
    valid[:, 0] = True
    bias = ((~valid).float() * MASKED_LOGIT_BIAS)[:, None, None, :]
    for key_bias in (None, bias):
        expected = matmul_attention(q, k, v, 0.3, key_bias)
        got = KERNELS[backend](q, k, v, 0.3, key_bias)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("heads", [1, 3])
def test_matmul_attention_is_the_textbook_attention(heads):
    """The matmul form scales the queries and folds the key bias into its first matmul: still
    softmax(scale q k^T + bias) v, with one head (3D bmm) or several (4D matmul)."""
    q, k, v = (_heads(2, heads, length, 8, seed) for seed, length in enumerate((7, 9, 9)))
    bias = torch.where(torch.rand(2, 1, 1, 9, generator=torch.Generator().manual_seed(3)) > 0.3, 0.0, MASKED_LOGIT_BIAS)
    bias[..., 0] = 0.0
    for key_bias in (None, bias):
        logits = 0.3 * q @ k.transpose(-1, -2) + (0.0 if key_bias is None else key_bias)
        torch.testing.assert_close(matmul_attention(q, k, v, 0.3, key_bias), torch.softmax(logits, dim=-1) @ v)


def test_folding_the_key_bias_keeps_the_logits():
    q, k, v = (_heads(2, 3, length, 4, seed) for seed, length in enumerate((5, 6, 6)))
    bias = torch.randn(2, 1, 1, 6)
    fq, fk, fv, scale = fold_key_bias(q, k, v, 0.5, bias)
    assert scale == 1.0 and fold_key_bias(q, k, v, 0.5, None) == (q, k, v, 0.5)
    torch.testing.assert_close(fq @ fk.transpose(-1, -2), 0.5 * q @ k.transpose(-1, -2) + bias)
    assert torch.equal(fv[..., :4], v) and not fv[..., 4].any()


@pytest.mark.parametrize("backend", KERNELS)
def test_stages_with_a_fused_kernel_equal_upstream(backend, tiny_reference, tiny_shapes, tiny_cases):
    """Every stage with attention (decoder, memory attention, and the perceiver inside both memory encoders)."""
    for case in tiny_cases:
        if case.stage == "image_encoder":
            continue
        stage = STAGES[case.stage]
        spec = stage.spec(tiny_shapes)
        wrapper = stage.build(tiny_reference.video_model, tiny_shapes, StageForm(attention=KERNELS[backend]))
        with torch.no_grad():
            got = wrapper(*[case.inputs[name] for name in spec.input_names])
        got = got if isinstance(got, tuple) else (got,)
        expected = stage.upstream(tiny_reference.video_model, tiny_shapes, case.inputs)
        for name, value in zip(spec.output_names, got):
            assert psnr_db(expected[name].numpy(), value.numpy()) > 100, f"{case.stage}/{name} [{case.label}]"


@pytest.fixture(scope="module")
def form_bundles(tiny_reference, data_dir, tmp_path_factory, worker_id, tiny_bundles, coreml_bundles) -> dict:
    """(family, form) -> its tiny bundle, each through the export's parity gate."""
    shipped = tiny_bundles | coreml_bundles
    variants = {key: dataclasses.replace(load_recipe(name), name=f"{name}-{key[1]}", **overrides)
                for key, (name, overrides) in FORMS.items() if overrides}
    exported = _exported_once(tmp_path_factory, worker_id, "attention", tuple(variants.values()), tiny_reference,
                              data_dir)
    return {key: exported[variants[key].name] if key in variants else shipped[name]
            for key, (name, _) in FORMS.items()}


def _fused_ops(bundle, stage: str) -> int:
    """How many attention ops the stage's artifact runs as one fused op."""
    artifact = bundle.artifact(stage)
    if bundle.backend == "onnx":
        import onnx

        nodes = onnx.load(str(artifact), load_external_data=False).graph.node
        return sum(n.op_type == "MultiHeadAttention" and n.domain == "com.microsoft" for n in nodes)
    if bundle.backend == "coreml":
        from edgetam_export.runtime.mil_interpreter import load_program

        ops = load_program(artifact).functions["main"].operations
        return sum(op.op_type == "scaled_dot_product_attention" for op in ops)
    kinds = bundle.manifest.stages[stage].backend["portable_op_kinds"]
    return sum(count for name, count in kinds.items() if "custom_sdpa" in name)


#: Attention ops per stage on the tiny model: the decoder's two-way transformer (2 layers x 3 + the final
#: one), memory attention (2 layers x 2), the perceiver (2 layers x 2, in the global and the windowed pass).
ATTENTION_OPS = {"prompt_decoder": 7, "memory_attention": 4, "memory_encoder": 8, "mask_prompt_encoder": 8}


@pytest.mark.parametrize("family, form", FORMS)
def test_each_attention_form_passes_the_fp32_gate(family, form, form_bundles):
    bundle = form_bundles[(family, form)]
    assert bundle.backend == family and bundle.manifest.recipe.attention == form
    assert bundle.manifest.parity["passed"] and bundle.manifest.recipe.parity.min_psnr_db == 60.0
    fused = {stage: _fused_ops(bundle, stage) for stage in ATTENTION_OPS}
    assert fused == (ATTENTION_OPS if form == "fused" else dict.fromkeys(ATTENTION_OPS, 0))


def test_fused_attention_needs_a_target_that_has_it():
    recipe = dataclasses.replace(load_recipe("coreml-fp16"), attention="fused")
    with pytest.raises(EdgeTamExportError, match="fused attention needs deployment_target iOS18 or macOS15"):
        get_backend("coreml").attention_kernel(recipe)
    assert get_backend("coreml").attention_kernel(dataclasses.replace(recipe, attention="matmul")) is matmul_attention


def test_a_recipe_names_a_known_attention_form():
    data = json.loads(json.dumps(load_recipe("onnx-fp32").to_json()))
    with pytest.raises(EdgeTamExportError, match="attention 'flash' is unknown; use one of matmul, fused"):
        recipe_from_dict(data | {"attention": "flash"}, "'x.toml'")
