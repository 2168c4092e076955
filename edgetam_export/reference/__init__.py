"""Load the PyTorch reference: transformers' EdgeTAM, from a hub id, a folder, an original checkpoint or seeds.

Every source ends in the same place, an `EdgeTamVideoModel` (which holds every stage) plus the
`EdgeTamModel` image model on the very same weights and the matching `Sam2Processor`, so the
export, parity and benchmark code never care where the weights came from. `model.py` holds the model and
its processors, `random_weights.py` the seeded weights, `checkpoint.py` the original checkpoint layout and
`sources.py` the dispatch over sources (and the hub).
"""

from edgetam_export.reference.checkpoint import convert_original_state_dict, load_original_checkpoint
from edgetam_export.reference.model import (
    MODEL_SIZES,
    ModelSize,
    Reference,
    build_processor,
    build_video_config,
    build_video_processor,
    image_config_from_video,
)
from edgetam_export.reference.random_weights import init_random_weights, random_reference, tie_like_released_checkpoint
from edgetam_export.reference.sources import HUB_IDS, load_pretrained, load_reference

__all__ = [
    "HUB_IDS", "MODEL_SIZES", "ModelSize", "Reference", "build_processor", "build_video_config", "build_video_processor",
    "convert_original_state_dict", "image_config_from_video", "init_random_weights", "load_original_checkpoint",
    "load_pretrained", "load_reference", "random_reference", "tie_like_released_checkpoint",
]
