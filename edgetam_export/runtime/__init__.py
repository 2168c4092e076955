"""Host-side runtime: runs exported stages without transformers (image segmentation, video tracking)."""

from edgetam_export.runtime.predictor import EdgeTamPredictor, ImageEmbedding, Prediction

__all__ = ["EdgeTamPredictor", "ImageEmbedding", "Prediction"]
