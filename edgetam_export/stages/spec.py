"""Declarative stage contracts: the single source of names, shapes, dtypes and meanings.

Backends, bundles, the parity harness and the host runtime read these specs; none of them works a
shape out on its own. A dimension is either a fixed integer or the symbolic ``"objects"`` axis,
which every backend exports as a bounded dynamic dimension (1..max_objects).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

OBJECTS = "objects"

#: Every bundle holds these stages, in pipeline order (`registry.STAGES` defines each; this list needs no torch).
STAGE_NAMES = ("image_encoder", "prompt_decoder", "memory_encoder", "memory_attention", "mask_prompt_encoder")

#: Capacities a recipe, a flag or a manifest may set, as (lowest, highest). Below the lowest, the parity
#: cases do not fit (a box, a click and SAM's not-a-point token take 4 slots); above the highest, a stage's
#: tensors outgrow any phone (64 memory slots of the full model hold 64 x 512 x 64 floats per object).
CAPACITY_BOUNDS: dict[str, tuple[int, int]] = {
    "point_slots": (4, 64),
    "max_objects": (1, 64),
    "memory_slots": (1, 64),
    "pointer_slots": (1, 256),
}


def capacity_problem(name: str, value: object, label: str | None = None) -> str | None:
    """Why `value` is no capacity `name` may take (None when it is fine); `label` names it as the user typed it."""
    low, high = CAPACITY_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{label or name} must be a whole number from {low} to {high}, got {value!r}"
    return None

# The prompt_decoder's point-label vocabulary (SAM's, plus an empty slot removed from attention).
POSITIVE_LABEL = 1
NEGATIVE_LABEL = 0
BOX_CORNER_LABELS = (2, 3)
NOT_A_POINT_LABEL = -1
PADDING_POINT_LABEL = -10
EMPTY_SLOT_LABEL = -100


#: transformers' logits for a mask prompt used as a video frame's output: 20 * mask - 10.
MASK_LOGIT_SCALE = 20.0
MASK_LOGIT_BIAS = -10.0
#: Sam2ImageProcessor's normalization (ImageNet statistics); inside the image encoder for an `image` input.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
#: The image encoder's input name when it takes 0..255 RGB pixels (`image_input`); otherwise `pixel_values`.
IMAGE_INPUT = "image"

@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a stage."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    description: str

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def concrete_shape(self, num_objects: int) -> tuple[int, ...]:
        return tuple(num_objects if d == OBJECTS else int(d) for d in self.shape)

    def has_objects_axis(self) -> bool:
        return OBJECTS in self.shape

    def admits_shape(self, shape: tuple[int | None, ...], max_objects: int) -> bool:
        """Whether an artifact's declared shape fits this contract: the same rank, fixed sizes equal, the objects axis
        at most `max_objects` (ExecuTorch reports its upper bound); a size the artifact leaves open (None: a dynamic
        axis, or one Core ML infers at run time) fits any."""
        return len(shape) == len(self.shape) and all(
            got is None or (1 <= got <= max_objects if want == OBJECTS else got == want)
            for want, got in zip(self.shape, shape)
        )

    def to_json(self) -> dict:
        return asdict(self) | {"shape": list(self.shape)}


@dataclass(frozen=True)
class ArtifactTensor:
    """An input or output as an artifact itself declares it; None where its format does not record a fact."""

    name: str | None
    shape: tuple[int | None, ...] | None
    dtype: str | None


@dataclass(frozen=True)
class StageShapes:
    """Every size a stage contract depends on: the model's, plus the recipe's capacities."""

    image_size: int
    hidden_size: int
    memory_dim: int
    memory_tokens: int
    point_slots: int
    max_objects: int
    memory_slots: int
    pointer_slots: int
    temporal_encodings: int
    #: The image encoder takes 0..255 RGB pixels (`image`, normalization inside; a Core ML image input)
    #: instead of normalized `pixel_values`.
    image_input: bool = False
    #: The model gives object pointers a temporal encoding (transformers' default; EdgeTAM's checkpoint
    #: does not): memory_attention then takes `pointer_time_offset`.
    pointer_temporal_encoding: bool = False

    @property
    def embed_size(self) -> int:
        return self.image_size // 16

    @property
    def low_res_mask_size(self) -> int:
        return self.image_size // 4

    @property
    def pointer_tokens(self) -> int:
        """Each 256-d object pointer enters memory attention as hidden/memory_dim tokens."""
        return self.pointer_slots * (self.hidden_size // self.memory_dim)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrackingSettings:
    """The video model's decisions that happen on the host between stage calls (from its config).

    Defaults are EdgeTAM's (and transformers'), so format-1 manifests, which may lack it, read the same.
    """

    #: Multimask output on a frame needs all three: multimask in the SAM head at all, a prompted
    #: first frame of the object or multimask for tracking, and min <= prompt points <= max.
    multimask_output_in_sam: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    #: Conditioning (prompted) frames attended to per frame, the closest ones first; -1 means all.
    max_cond_frame_num: int = -1
    #: Object pointers gathered per frame (transformers' `max_object_pointers_in_encoder`): the prompted
    #: frames' plus those of the most recent frames up to this count; the bundle's `pointer_slots` must
    #: hold them all (more than this when an object has several prompted frames).
    max_object_pointers: int = 16

    def multimask(self, initial: bool, num_points: int) -> bool:
        """transformers' `_use_multimask` for a frame with `num_points` prompt points (box corners count)."""
        return (
            self.multimask_output_in_sam
            and (initial or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_points <= self.multimask_max_pt_num
        )

    @classmethod
    def from_json(cls, data: dict | None) -> TrackingSettings:
        return cls(**(data or {}))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StageSpec:
    """The contract of one exported stage: ordered inputs and outputs."""

    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_objects: int

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def has_objects_axis(self) -> bool:
        return any(t.has_objects_axis() for t in self.inputs)

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> int:
        """Validate named inputs against the contract; return the number of objects they carry."""
        from edgetam_export.errors import EdgeTamExportError

        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EdgeTamExportError(f"stage '{self.name}' is missing inputs {missing}")
        num_objects = None
        for spec in self.inputs:
            array = inputs[spec.name]
            if spec.has_objects_axis():
                axis = spec.shape.index(OBJECTS)
                num_objects = array.shape[axis] if num_objects is None else num_objects
            expected = spec.concrete_shape(num_objects or 1)
            if tuple(array.shape) != expected:
                raise EdgeTamExportError(
                    f"stage '{self.name}' input '{spec.name}' has shape {tuple(array.shape)}, expected {expected}"
                )
        if num_objects is not None and not 1 <= num_objects <= self.max_objects:
            raise EdgeTamExportError(
                f"stage '{self.name}' got {num_objects} objects; this bundle supports 1 to {self.max_objects} "
                "(re-export with a larger max_objects)"
            )
        return num_objects or 1

    def check_artifact(self, artifact: str, inputs: list[ArtifactTensor], outputs: list[ArtifactTensor]) -> None:
        """Refuse, naming the stage, an artifact whose own inputs and outputs are not this contract's: a file of
        another stage, of other capacities or of another bundle, even when its checksum was rewritten."""
        from edgetam_export.errors import EdgeTamExportError

        problems = []
        for kind, wanted, got in (("inputs", self.inputs, inputs), ("outputs", self.outputs, outputs)):
            if len(got) != len(wanted):
                problems.append(f"{len(got)} {kind}, the contract has {len(wanted)}")
                continue
            for spec, tensor in zip(wanted, got):
                if tensor.name is not None and tensor.name != spec.name:
                    problems.append(f"{kind[:-1]} '{tensor.name}' where the contract has '{spec.name}'")
                elif tensor.shape is not None and not spec.admits_shape(tensor.shape, self.max_objects):
                    problems.append(f"{kind[:-1]} '{spec.name}' of shape {list(tensor.shape)}, the contract's is "
                                    f"{list(spec.shape)}")
                elif tensor.dtype is not None and tensor.dtype != spec.dtype:
                    problems.append(f"{kind[:-1]} '{spec.name}' of {tensor.dtype}, the contract's is {spec.dtype}")
        if problems:
            raise EdgeTamExportError(
                f"stage '{self.name}': artifact '{artifact}' does not match the manifest's contract ({problems[0]}); "
                "it belongs to another stage or bundle: re-export the bundle"
            )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "max_objects": self.max_objects,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }
