"""Stage 2, `prompt_decoder`: prompt encoder + mask decoder + object-pointer head, for a batch of objects.

Prompts arrive as a fixed number of point slots per object. Label meanings follow SAM:
1 positive click, 0 negative click, 2 / 3 the top-left / bottom-right corner of a box,
-1 SAM's "not a point" token (appended after clicks when there is no box), -10 transformers'
zero padding token. Slots labelled `EMPTY_SLOT_LABEL` are removed from attention by an additive
bias, so the stage gives exactly what transformers gives for the unpadded prompt. Every prompt
ends with one not-a-point token, as transformers' prompt encoder appends it (two for a mask alone).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import EdgeTamVideoModel

from edgetam_export.stages.common import MASKED_LOGIT_BIAS, StageForm, attend, contiguous_buffer
from edgetam_export.stages.spec import (
    EMPTY_SLOT_LABEL,
    NOT_A_POINT_LABEL,
    OBJECTS,
    PADDING_POINT_LABEL,
    StageShapes,
    StageSpec,
    TensorSpec,
)

NAME = "prompt_decoder"
#: The decoder's output tokens before the prompt tokens: object score, IoU, and 4 mask tokens.
NUM_OUTPUT_TOKENS = 6
NUM_MASKS = 4


def spec(shapes: StageShapes) -> StageSpec:
    c, e, m, p = shapes.hidden_size, shapes.embed_size, shapes.low_res_mask_size, shapes.point_slots
    s = shapes.image_size
    return StageSpec(
        name=NAME,
        description="Prompt encoder, two-way mask decoder and object-pointer head for a batch of objects on "
        "one image; all four mask tokens are returned and the host picks single or multimask.",
        inputs=(
            TensorSpec(
                "image_embeddings",
                (OBJECTS, c, e, e),
                "float32",
                "Per object: image_encoder.image_embeddings on a still image (repeated per object), or "
                "memory_attention.conditioned_features on a tracked video frame.",
            ),
            TensorSpec("high_res_features_0", (1, c // 8, 4 * e, 4 * e), "float32", "From image_encoder."),
            TensorSpec("high_res_features_1", (1, c // 4, 2 * e, 2 * e), "float32", "From image_encoder."),
            TensorSpec(
                "point_coords",
                (OBJECTS, p, 2),
                "float32",
                f"(x, y) in model input pixels (0..{s}): original coordinates times {s}/width and "
                f"{s}/height. A box is two slots: top-left then bottom-right corner.",
            ),
            TensorSpec(
                "point_labels",
                (OBJECTS, p),
                "int32",
                f"1 positive, 0 negative, 2/3 box corners, {NOT_A_POINT_LABEL} not-a-point (one after the "
                f"clicks and box corners, as SAM appends it), {PADDING_POINT_LABEL} transformers padding, "
                f"{EMPTY_SLOT_LABEL} empty slot (ignored).",
            ),
            TensorSpec(
                "mask_input",
                (OBJECTS, 1, m, m),
                "float32",
                f"Previous low-resolution mask logits ({m}x{m}) used as a dense prompt; ignored where "
                "has_mask_input is 0.",
            ),
            TensorSpec("has_mask_input", (OBJECTS,), "float32", "1.0 to use mask_input, 0.0 for none."),
        ),
        outputs=(
            TensorSpec(
                "mask_logits",
                (OBJECTS, NUM_MASKS, m, m),
                "float32",
                "Low-resolution mask logits of the 4 mask tokens: index 0 is the single-mask output, "
                "1..3 the multimask outputs. Threshold at 0 after upsampling.",
            ),
            TensorSpec("iou_scores", (OBJECTS, NUM_MASKS), "float32", "Predicted IoU of each of the 4 masks."),
            TensorSpec(
                "object_score_logits",
                (OBJECTS, 1),
                "float32",
                "Object presence logit; > 0 means the object is visible (video occlusion handling).",
            ),
            TensorSpec(
                "object_pointers",
                (OBJECTS, NUM_MASKS, c),
                "float32",
                "Object pointer of each mask token (the no-object pointer where object_score_logits <= 0); "
                "the host keeps the one of the mask it selects.",
            ),
        ),
        max_objects=shapes.max_objects,
    )


class GridFourierFeatures(nn.Module):
    """SAM's image-wide positional embedding, (E*E, C), rebuilt per call from per-axis sines and cosines.

    The Fourier phase of a grid cell is a column term plus a row term, so sin and cos of the sum follow
    from (E, C/2) tables by the angle-addition identities: a few broadcast multiply-adds per call (no
    sine over E*E*C/2 phases, which ONNX Runtime evaluates one scalar at a time) instead of baking the
    4 MB full-size table into the artifact. Equal to transformers' table to float rounding (~1e-6).
    """

    def __init__(self, gaussian_matrix: torch.Tensor, size: int) -> None:
        super().__init__()
        centres = 2.0 * ((torch.arange(size, dtype=torch.float64) + 0.5) / size) - 1.0
        column_phase = 2.0 * math.pi * centres[:, None] * gaussian_matrix[0].double()  # (E, C/2)
        row_phase = 2.0 * math.pi * centres[:, None] * gaussian_matrix[1].double()
        for name, table in (("column_sin", column_phase.sin()[None]), ("column_cos", column_phase.cos()[None]),
                            ("row_sin", row_phase.sin()[:, None]), ("row_cos", row_phase.cos()[:, None])):
            contiguous_buffer(self, name, table.float())

    def forward(self) -> torch.Tensor:
        sin = self.column_sin * self.row_cos + self.column_cos * self.row_sin  # (E, E, C/2)
        cos = self.column_cos * self.row_cos - self.column_sin * self.row_sin
        return torch.cat([sin, cos], dim=-1).flatten(0, 1)


class PromptDecoderStage(nn.Module):
    """Prompt encoder + two-way transformer + mask/IoU/object-score heads + object pointers.

    Shapes:
        image_embeddings: (N, 256, E, E); high_res_features_0: (1, 32, 4E, 4E); high_res_features_1: (1, 64, 2E, 2E)
        point_coords: (N, P, 2) float32; point_labels: (N, P) int32
        mask_input: (N, 1, 4E, 4E); has_mask_input: (N,)
        -> mask_logits (N, 4, 4E, 4E), iou_scores (N, 4), object_score_logits (N, 1), object_pointers (N, 4, 256)
    """

    def __init__(
        self, model: EdgeTamVideoModel, shapes: StageShapes, form: StageForm = StageForm()
    ) -> None:
        super().__init__()
        self.kernel = form.attention
        prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.mask_embed = prompt_encoder.mask_embed
        self.object_pointer_proj = model.object_pointer_proj
        self.image_size = float(shapes.image_size)
        decoder = model.mask_decoder
        contiguous_buffer(self, "gaussian_matrix", prompt_encoder.shared_embedding.positional_embedding)
        contiguous_buffer(self, "point_embed", prompt_encoder.point_embed.weight)
        contiguous_buffer(self, "not_a_point_embed", prompt_encoder.not_a_point_embed.weight.reshape(1, 1, -1))
        contiguous_buffer(self, "no_mask_embed", prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1))
        contiguous_buffer(
            self,
            "output_tokens",
            torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight, decoder.mask_tokens.weight])[None],
        )
        # transformers' image-wide encoding reads the model's own matrix, not the prompt encoder's: the
        # released checkpoint stores one matrix in both, other checkpoints need not.
        self.image_pe = GridFourierFeatures(model.shared_image_embedding.positional_embedding, shapes.embed_size)
        contiguous_buffer(self, "no_object_pointer", model.no_object_pointer.reshape(1, 1, -1))

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' `_embed_points` (without its implicit padding point), in export-friendly ops."""
        normalized = 2.0 * ((coords + 0.5) / self.image_size) - 1.0
        projected = 2.0 * math.pi * torch.matmul(normalized, self.gaussian_matrix)
        embedding = torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)
        labels = labels.unsqueeze(-1)
        embedding = torch.where(labels == NOT_A_POINT_LABEL, self.not_a_point_embed, embedding)
        embedding = torch.where(labels == PADDING_POINT_LABEL, torch.zeros_like(embedding), embedding)
        # One-hot matmul instead of an embedding lookup: labels < 0 select nothing.
        one_hot = (labels == torch.arange(self.point_embed.shape[0], device=labels.device)).to(embedding.dtype)
        return embedding + torch.matmul(one_hot, self.point_embed)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        high_res_features_0: torch.Tensor,
        high_res_features_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        decoder = self.mask_decoder
        transformer = decoder.transformer
        num_objects, channels, height, width = image_embeddings.shape

        sparse = self.embed_points(point_coords, point_labels)
        tokens = torch.cat([self.output_tokens.expand(num_objects, -1, -1), sparse], dim=1)
        prompt_bias = (point_labels == EMPTY_SLOT_LABEL).to(sparse.dtype) * MASKED_LOGIT_BIAS
        token_bias = torch.cat(
            [torch.zeros_like(prompt_bias[:, :1]).expand(-1, NUM_OUTPUT_TOKENS), prompt_bias], dim=1
        )[:, None, None, :]

        use_mask = has_mask_input.reshape(-1, 1, 1, 1)
        dense = use_mask * self.mask_embed(mask_input) + (1.0 - use_mask) * self.no_mask_embed
        keys = (image_embeddings + dense).flatten(2).transpose(1, 2)
        key_pe = self.image_pe().expand(num_objects, -1, -1)

        queries = tokens
        for layer in transformer.layers:
            if layer.skip_first_layer_pe:
                queries = attend(layer.self_attn, queries, queries, queries, token_bias, kernel=self.kernel)
            else:
                q = queries + tokens
                queries = queries + attend(layer.self_attn, q, q, queries, token_bias, kernel=self.kernel)
            queries = layer.layer_norm1(queries)
            q, k = queries + tokens, keys + key_pe
            queries = layer.layer_norm2(queries + attend(layer.cross_attn_token_to_image, q, k, keys, kernel=self.kernel))
            queries = layer.layer_norm3(queries + layer.mlp(queries))
            q, k = queries + tokens, keys + key_pe
            keys = layer.layer_norm4(keys + attend(
                layer.cross_attn_image_to_token, k, q, queries, token_bias, kernel=self.kernel
            ))
        q, k = queries + tokens, keys + key_pe
        queries = transformer.layer_norm_final_attn(
            queries + attend(transformer.final_attn_token_to_image, q, k, keys, kernel=self.kernel)
        )

        mask_tokens = queries[:, 2 : 2 + NUM_MASKS, :]
        image = keys.transpose(1, 2).reshape(num_objects, channels, height, width)
        upscaled = decoder.upscale_conv1(image) + high_res_features_1
        upscaled = decoder.activation(decoder.upscale_layer_norm(upscaled))
        upscaled = decoder.activation(decoder.upscale_conv2(upscaled) + high_res_features_0)
        hyper_in = torch.stack(
            [mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )
        up_channels, up_h, up_w = upscaled.shape[1:]
        mask_logits = torch.matmul(hyper_in, upscaled.reshape(num_objects, up_channels, up_h * up_w))
        mask_logits = mask_logits.reshape(num_objects, NUM_MASKS, up_h, up_w)

        iou_scores = decoder.iou_prediction_head(queries[:, 1, :])
        object_score_logits = decoder.pred_obj_score_head(queries[:, 0, :])
        appearing = (object_score_logits > 0).to(queries.dtype).unsqueeze(-1)
        pointers = self.object_pointer_proj(mask_tokens)
        pointers = appearing * pointers + (1.0 - appearing) * self.no_object_pointer
        return mask_logits, iou_scores, object_score_logits, pointers


@torch.no_grad()
def upstream(model: EdgeTamVideoModel, shapes: StageShapes, inputs: dict[str, torch.Tensor]) -> dict:
    """transformers' prompt encoder + mask decoder, one object at a time on its non-empty slots.

    The decoder is asked for multimask (tokens 1..3) and single-mask output (token 0, with the
    stability fallback off) so all four masks can be compared.
    """
    decoder = model.mask_decoder
    image_pe = model.get_image_wide_positional_embeddings()
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in spec(shapes).output_names}
    for i in range(inputs["image_embeddings"].shape[0]):
        keep = inputs["point_labels"][i] != EMPTY_SLOT_LABEL
        coords = inputs["point_coords"][i][keep][None, None]
        labels = inputs["point_labels"][i][keep][None, None].long()
        sparse = model.prompt_encoder._embed_points(coords, labels, pad=False)
        if inputs["has_mask_input"][i] > 0.5:
            dense = model.prompt_encoder.mask_embed(inputs["mask_input"][i : i + 1])
        else:
            dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                1, -1, *model.prompt_encoder.image_embedding_size
            )
        common = dict(
            image_embeddings=inputs["image_embeddings"][i : i + 1],
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            high_resolution_features=[inputs["high_res_features_0"], inputs["high_res_features_1"]],
        )
        multi = decoder(multimask_output=True, **common)
        stability_fallback = decoder.dynamic_multimask_via_stability
        decoder.dynamic_multimask_via_stability = False
        try:
            single = decoder(multimask_output=False, **common)
        finally:
            decoder.dynamic_multimask_via_stability = stability_fallback
        masks = torch.cat([single[0], multi[0]], dim=2)[0, 0]
        ious = torch.cat([single[1], multi[1]], dim=2)[0, 0]
        tokens = torch.cat([single[2], multi[2]], dim=2)[0, 0]
        score = multi[3][0, 0]
        appearing = (score > 0).float()
        pointers = appearing * model.object_pointer_proj(tokens) + (1 - appearing) * model.no_object_pointer
        for name, value in zip(outputs, (masks, ious, score, pointers)):
            outputs[name].append(value)
    return {name: torch.stack(values) for name, values in outputs.items()}
