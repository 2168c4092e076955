"""Export recipes: declarative TOML files in `recipes/`, loaded into frozen dataclasses.

A recipe says which backend lowers the stages, at which precision, with which capacities
(point slots, objects, memory bank) and which parity thresholds the bundle must meet.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import CAPACITY_BOUNDS, capacity_problem

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


@dataclass(frozen=True)
class RecipeShapes:
    """Capacities of the exported stages. Memory sizes default to the model's own."""

    point_slots: int = 8
    max_objects: int = 8
    memory_slots: int | None = None
    pointer_slots: int | None = None
    #: Image encoder input of 0..255 RGB pixels with the normalization inside (a Core ML image input).
    image_input: bool = False


@dataclass(frozen=True)
class ParityThresholds:
    """A bundle passes when every output reaches every floor that is set.

    Float recipes gate on PSNR; reduced-precision ones on the cosine similarity of each output with the
    fp32 reference (their PSNR is reported, not gated: int8 noise lowers it by design).
    """

    #: 0 reports PSNR without gating on it.
    min_psnr_db: float = 60.0
    min_mask_iou: float = 0.99
    min_cosine: float | None = None
    #: Mask IoU floor of every documentation example run through the bundle's predictor (`gates.py`).
    min_example_iou: float | None = None

    def describe(self) -> str:
        floors = [f"PSNR >= {self.min_psnr_db} dB" if self.min_psnr_db else None,
                  f"cosine >= {self.min_cosine}" if self.min_cosine is not None else None,
                  f"decoder mask IoU >= {self.min_mask_iou}",
                  f"documentation examples mask IoU >= {self.min_example_iou}" if self.min_example_iou else None]
        return ", ".join(f for f in floors if f)


@dataclass(frozen=True)
class TrackingGate:
    """A quality gate on a whole tracking session: `objects` objects through `frames` frames of the
    bedroom clip, played through the bundle and the fp32 reference (checked by export and verify)."""

    min_mean_iou: float = 0.95
    min_iou: float = 0.85
    min_presence_agreement: float = 0.99
    frames: int = 200
    objects: int = 2


#: Frames of the bedroom clip, the most a tracking gate can play.
MAX_GATE_FRAMES = 200

#: Reduced-precision schemes a recipe can ask for, per stage (`[quantization]`); each backend takes some.
QUANTIZATION_SCHEMES = {
    "int8-static": "int8 weights (per channel) and int8 activations calibrated on sample pictures",
    "int8-dynamic": "int8 weights (per channel), activations quantized per call: linear layers (MatMul/Gemm in ONNX); "
                    "on ExecuTorch also convolutions that are neither depthwise nor followed by a ReLU",
    "int8-weights": "int8 weights (per channel), dequantized to the compute precision",
    "palettized-6bit": "6-bit lookup tables per group of 16 output channels, fp16 compute",
}


#: How the stages compute attention (`attention` in a recipe): each backend lowers the fused form to its own op.
ATTENTION_FORMS = {
    "matmul": "two matmuls around a softmax, lowered op by op (every backend)",
    "fused": "one attention op of the runtime: ExecuTorch llama::custom_sdpa, ONNX Runtime com.microsoft."
             "MultiHeadAttention, Core ML scaled_dot_product_attention (iOS 18 / macOS 15)",
}


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    backend: str
    precision: str = "fp32"
    delegate: str | None = None
    opset: int | None = None
    deployment_target: str | None = None
    compute_units: str | None = None
    #: A key of ATTENTION_FORMS.
    attention: str = "matmul"
    shapes: RecipeShapes = field(default_factory=RecipeShapes)
    parity: ParityThresholds = field(default_factory=ParityThresholds)
    #: Stage name -> reduced-precision scheme; stages not named keep the recipe's float precision.
    quantization: dict[str, str] = field(default_factory=dict)
    #: Stage name -> module-name patterns: quantize only those modules of the stage (`[quantization_modules]`).
    quantization_modules: dict[str, list[str]] = field(default_factory=dict)
    tracking_gate: TrackingGate | None = None

    def with_shapes(self, **overrides: int | None) -> Recipe:
        """A copy with some capacities overridden (CLI flags); None leaves a field as it is."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        for key, value in changes.items():
            problem = capacity_problem(key, value, f"--{key.replace('_', '-')}")
            if problem:
                raise EdgeTamExportError(problem)
        return dataclasses.replace(self, shapes=dataclasses.replace(self.shapes, **changes))

    def with_gate_frames(self, frames: int | None) -> Recipe:
        """A copy whose tracking gate plays `frames` frames of the clip (None: the recipe's own)."""
        if frames is None:
            return self
        if self.tracking_gate is None:
            raise EdgeTamExportError(f"--gate-frames applies to recipes with a tracking gate; '{self.name}' has none")
        if not 2 <= frames <= MAX_GATE_FRAMES:
            raise EdgeTamExportError(f"--gate-frames must be from 2 to {MAX_GATE_FRAMES} (the clip's frames), got {frames}")
        return dataclasses.replace(self, tracking_gate=dataclasses.replace(self.tracking_gate, frames=frames))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def available_recipes() -> dict[str, Path]:
    """Recipe name -> TOML file, for every recipe shipped in `recipes/`."""
    return {path.stem: path for path in sorted(RECIPES_DIR.glob("*.toml"))}


def recipe_from_dict(data: dict, origin: str) -> Recipe:
    """Build a Recipe from parsed TOML, naming the file and field on any mistake."""
    try:
        shapes = RecipeShapes(**data.pop("shapes", {}))
        parity = ParityThresholds(**data.pop("parity", {}))
        gate = data.pop("tracking_gate", None)
        recipe = Recipe(shapes=shapes, parity=parity, tracking_gate=None if gate is None else TrackingGate(**gate), **data)
    except TypeError as exc:
        raise EdgeTamExportError(f"recipe {origin} has an unknown or missing field ({exc}); see recipes/*.toml") from None
    for capacity in CAPACITY_BOUNDS:
        value = getattr(recipe.shapes, capacity)
        problem = None if value is None else capacity_problem(capacity, value, f"[shapes] {capacity}")
        if problem:
            raise EdgeTamExportError(f"recipe {origin}: {problem}")
    if recipe.attention not in ATTENTION_FORMS:
        raise EdgeTamExportError(
            f"recipe {origin}: attention '{recipe.attention}' is unknown; use one of {', '.join(ATTENTION_FORMS)}"
        )
    for stage, scheme in recipe.quantization.items():
        if scheme not in QUANTIZATION_SCHEMES:
            raise EdgeTamExportError(
                f"recipe {origin}: quantization scheme '{scheme}' for {stage} is unknown; use one of "
                f"{', '.join(QUANTIZATION_SCHEMES)}"
            )
    for stage, patterns in recipe.quantization_modules.items():
        if stage not in recipe.quantization:
            raise EdgeTamExportError(
                f"recipe {origin}: [quantization_modules] scopes {stage}, which [quantization] leaves in float; "
                f"give {stage} a scheme or remove its patterns"
            )
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise EdgeTamExportError(
                f"recipe {origin}: [quantization_modules] {stage} must be a non-empty list of module-name patterns"
            )
    return recipe


def load_recipe(name_or_path: str) -> Recipe:
    """Load a shipped recipe by name, or any recipe TOML file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        recipes = available_recipes()
        if name_or_path not in recipes:
            raise EdgeTamExportError(
                f"unknown recipe '{name_or_path}': choose one of {', '.join(recipes)} or pass a .toml file"
            )
        path = recipes[name_or_path]
    if not path.is_file():
        raise EdgeTamExportError(f"recipe file '{path}' does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EdgeTamExportError(f"recipe file '{path}' is not valid TOML ({exc})") from None
    return recipe_from_dict(data, f"'{path}'")
