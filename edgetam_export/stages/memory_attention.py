"""Stage 4, `memory_attention`: condition the current frame on a fixed-capacity memory bank.

The bank has `memory_slots` slots of perceiver tokens (conditioning frames and recent frames) and
`pointer_slots` object pointers. Empty slots are switched off by a finite additive bias on the
attention logits, so a partly filled bank gives what transformers gives for the slots it holds.
RoPE is applied with cos/sin tables in real arithmetic, rebuilt per call from their row and column
factors; tokens that carry no RoPE (global latents, object pointers) get cos = 1, sin = 0, an exact
identity.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import EdgeTamVideoModel
from transformers.models.edgetam_video.modeling_edgetam_video import get_1d_sine_pe

from edgetam_export.stages.common import (
    MASKED_LOGIT_BIAS,
    AxialTable,
    PairRotation,
    RotaryTables,
    StageForm,
    attend,
    contiguous_buffer,
)
from edgetam_export.stages.spec import OBJECTS, StageShapes, StageSpec, TensorSpec

NAME = "memory_attention"


def spec(shapes: StageShapes) -> StageSpec:
    c, e, d = shapes.hidden_size, shapes.embed_size, shapes.memory_dim
    slots, tokens, pointers = shapes.memory_slots, shapes.memory_tokens, shapes.pointer_slots
    return StageSpec(
        name=NAME,
        description="Memory attention (2 RoPE transformer layers) over a fixed-capacity bank of perceiver "
        "memories and object pointers, batched over objects.",
        inputs=(
            TensorSpec("vision_features", (1, c, e, e), "float32", "image_encoder.vision_features of the frame."),
            TensorSpec(
                "memory_features",
                (OBJECTS, slots * tokens, d),
                "float32",
                f"{slots} slots of {tokens} memory_encoder.memory_features each, slot after slot; any order.",
            ),
            TensorSpec(
                "memory_positions",
                (OBJECTS, slots * tokens, d),
                "float32",
                "memory_encoder.memory_positions of the same slots.",
            ),
            TensorSpec(
                "memory_time_index",
                (OBJECTS, slots),
                "int32",
                f"Row of the temporal encoding for each slot: (frame distance - 1) for a recent frame "
                f"(0..{shapes.temporal_encodings - 2}), {shapes.temporal_encodings - 1} for a conditioning "
                "(prompted) frame.",
            ),
            TensorSpec("memory_valid", (OBJECTS, slots), "float32", "1.0 for a filled slot, 0.0 for an empty one."),
            TensorSpec(
                "object_pointers",
                (OBJECTS, pointers, c),
                "float32",
                "Object pointers of the conditioning frames and of the most recent frames.",
            ),
            TensorSpec("pointer_valid", (OBJECTS, pointers), "float32", "1.0 for a filled pointer slot."),
            *(
                (TensorSpec(
                    "pointer_time_offset",
                    (OBJECTS, pointers),
                    "float32",
                    "Frame distance of each pointer (to a conditioning frame: signed by the tracking direction) "
                    "divided by (min(video frames, max_object_pointers) - 1), as transformers normalizes it; only "
                    "for models with temporal encodings for object pointers.",
                ),)
                if shapes.pointer_temporal_encoding
                else ()
            ),
        ),
        outputs=(
            TensorSpec(
                "conditioned_features",
                (OBJECTS, c, e, e),
                "float32",
                "Memory-conditioned frame features: prompt_decoder.image_embeddings on a tracked frame.",
            ),
        ),
        max_objects=shapes.max_objects,
    )


class MemoryAttentionStage(nn.Module):
    """Two memory-attention layers over a padded memory bank.

    The first layer's self-attention reads only the current frame, so it runs once per frame and is
    shared by every object (exactly the same result as running it per object).

    Shapes:
        vision_features: (1, 256, E, E)
        memory_features, memory_positions: (N, M*T, 64); memory_time_index: (N, M) int32; memory_valid: (N, M)
        object_pointers: (N, K, 256); pointer_valid: (N, K)
        -> conditioned_features (N, 256, E, E)
    """

    def __init__(
        self, model: EdgeTamVideoModel, shapes: StageShapes, form: StageForm = StageForm()
    ) -> None:
        super().__init__()
        self.kernel = form.attention
        attention_layers = model.memory_attention
        self.layers = attention_layers.layers
        self.layer_norm = attention_layers.layer_norm
        self.memory_tokens = shapes.memory_tokens
        self.pointer_splits = shapes.hidden_size // shapes.memory_dim
        self.memory_dim = shapes.memory_dim
        #: transformers' projection of the pointers' 1D sine encoding (None: EdgeTAM's checkpoint has none).
        self.pointer_time_projection = (
            model.temporal_positional_encoding_projection_layer if shapes.pointer_temporal_encoding else None
        )
        e, c = shapes.embed_size, shapes.hidden_size
        position = model.vision_encoder.neck.position_encoding((1, c, e, e), torch.device("cpu"), torch.float32)
        self.vision_positions = AxialTable(position.flatten(2).transpose(1, 2)[0], e, e)
        self.pair_rotation = PairRotation()
        contiguous_buffer(self, "temporal_table", model.memory_temporal_positional_encoding.reshape(-1, shapes.memory_dim))

        # Position tables are stored as row / column factors and rebuilt per call (AxialTable): baked whole
        # they were 20 MB of the 32 MB full-size stage. transformers' position ids are (w, h) of an h-major grid.
        cos_q, sin_q = attention_layers.rotary_emb(position, attention_layers.position_ids)
        cos_k, sin_k = attention_layers.rotary_emb(position, attention_layers.position_ids_k)
        query_width, query_height = model.config.memory_attention_rope_feat_sizes
        key_width, key_height = model.config.memory_attention_rope_k_sizes
        self.cos_q, self.sin_q = (AxialTable(table[0], query_height, query_width) for table in (cos_q, sin_q))
        self.cos_k, self.sin_k = (AxialTable(table[0], key_height, key_width) for table in (cos_k, sin_k))
        #: Per slot, the global latents before the 2D latents carry no RoPE (cos 1, sin 0); so do the pointers.
        self.unrotated_tokens = shapes.memory_tokens - cos_k.shape[1]
        self.memory_slots, self.pointer_tokens = shapes.memory_slots, shapes.pointer_tokens

    def _key_rope(self, table: AxialTable, identity: float) -> torch.Tensor:
        """(M*T + pointer tokens, head_dim): `table` for each slot's 2D latents, `identity` for the other tokens."""
        rotated = table()
        head_dim = rotated.shape[-1]
        slot = torch.cat([torch.full((self.unrotated_tokens, head_dim), identity), rotated])
        return torch.cat([slot.repeat(self.memory_slots, 1), torch.full((self.pointer_tokens, head_dim), identity)])

    def forward(
        self,
        vision_features: torch.Tensor,
        memory_features: torch.Tensor,
        memory_positions: torch.Tensor,
        memory_time_index: torch.Tensor,
        memory_valid: torch.Tensor,
        object_pointers: torch.Tensor,
        pointer_valid: torch.Tensor,
        pointer_time_offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        num_objects, num_pointers, channels = object_pointers.shape
        height, width = vision_features.shape[-2:]
        tokens, splits = self.memory_tokens, self.pointer_splits

        one_hot = (memory_time_index.unsqueeze(-1) == torch.arange(self.temporal_table.shape[0])).to(
            memory_features.dtype
        )
        slot_time = torch.matmul(one_hot, self.temporal_table)  # (N, M, d)
        memory_positions = memory_positions + slot_time.repeat_interleave(tokens, dim=1)
        # Each 256-d pointer becomes 4 tokens of 64; EdgeTAM gives pointers no positional encoding.
        pointers = object_pointers.reshape(num_objects, num_pointers * splits, self.memory_dim)
        values = torch.cat([memory_features, pointers], dim=1)
        pointer_keys = pointers
        if self.pointer_time_projection is not None:
            encoding = self.pointer_time_projection(get_1d_sine_pe(pointer_time_offset, dim=channels))  # (N, K, d)
            pointer_keys = pointers + encoding.repeat_interleave(splits, dim=1)
        keys = torch.cat([memory_features + memory_positions, pointer_keys], dim=1)
        valid = torch.cat(
            [memory_valid.repeat_interleave(tokens, dim=1), pointer_valid.repeat_interleave(splits, dim=1)], dim=1
        )
        key_bias = ((1.0 - valid) * MASKED_LOGIT_BIAS)[:, None, None, :]

        cos_q, sin_q = self.cos_q(), self.sin_q()
        self_rope = RotaryTables(cos_q, sin_q, cos_q, sin_q, self.pair_rotation)
        cross_rope = RotaryTables(
            cos_q, sin_q, self._key_rope(self.cos_k, 1.0), self._key_rope(self.sin_k, 0.0), self.pair_rotation
        )
        hidden = vision_features.flatten(2).transpose(1, 2) + 0.1 * self.vision_positions()
        for index, layer in enumerate(self.layers):
            normed = layer.layer_norm1(hidden)
            hidden = hidden + attend(layer.self_attn, normed, normed, normed, rope=self_rope, kernel=self.kernel)
            if index == 0:
                hidden = hidden.expand(num_objects, -1, -1)
            normed = layer.layer_norm2(hidden)
            hidden = hidden + attend(
                layer.cross_attn_image, normed, keys, values, key_bias, rope=cross_rope, kernel=self.kernel
            )
            hidden = hidden + layer.mlp(layer.layer_norm3(hidden))
        hidden = self.layer_norm(hidden)
        return hidden.transpose(1, 2).reshape(num_objects, channels, height, width)


@torch.no_grad()
def upstream(model: EdgeTamVideoModel, shapes: StageShapes, inputs: dict[str, torch.Tensor]) -> dict:
    """transformers' memory attention on each object's filled slots, assembled as the video model does."""
    tokens, c, e = shapes.memory_tokens, shapes.hidden_size, shapes.embed_size
    vision = inputs["vision_features"].flatten(2).permute(2, 0, 1)
    position = model.vision_encoder.neck.position_encoding((1, c, e, e), vision.device, vision.dtype)
    position = position.flatten(2).permute(2, 0, 1)
    outputs = []
    for i in range(inputs["memory_features"].shape[0]):
        memories, memory_positions = [], []
        for slot in torch.nonzero(inputs["memory_valid"][i] > 0.5).flatten().tolist():
            rows = slice(slot * tokens, (slot + 1) * tokens)
            memories.append(inputs["memory_features"][i, rows][:, None])
            time_row = int(inputs["memory_time_index"][i, slot])
            memory_positions.append(
                inputs["memory_positions"][i, rows][:, None] + model.memory_temporal_positional_encoding[time_row]
            )
        pointer_slots = torch.nonzero(inputs["pointer_valid"][i] > 0.5).flatten().tolist()
        # transformers normalizes integer frame distances by (pointers used - 1); the stage takes them normalized.
        most = model.config.max_object_pointers_in_encoder
        offsets = inputs.get("pointer_time_offset")
        pointers, pointer_positions = model._process_object_pointers(
            [float(offsets[i, k]) * (most - 1) if offsets is not None else 1 for k in pointer_slots],
            [inputs["object_pointers"][i, k][None] for k in pointer_slots],
            most,
            1,
            c,
            vision.device,
        )
        num_pointer_tokens = 0
        if pointers is not None:
            memories.append(pointers)
            memory_positions.append(pointer_positions)
            num_pointer_tokens = pointers.shape[0]
        conditioned = model.memory_attention(
            current_vision_features=vision,
            memory=torch.cat(memories),
            current_vision_position_embeddings=position,
            memory_posision_embeddings=torch.cat(memory_positions),
            num_object_pointer_tokens=num_pointer_tokens,
            num_spatial_memory_tokens=len(memories) - (1 if pointers is not None else 0),
        )
        outputs.append(conditioned.squeeze(1).transpose(1, 2).reshape(c, e, e))
    return {"conditioned_features": torch.stack(outputs)}
