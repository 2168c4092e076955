"""Loading the reference from every source, on seeded random weights and checkpoints the tests write."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.reference import (
    build_video_config,
    load_reference,
    random_reference,
)
from tests.checkpoint_layout import to_original_layout


#: The released checkpoint stores one matrix for both (its conversion copies it into the second).
TIED_IN_CHECKPOINT = "shared_image_embedding.positional_embedding"


def _same_weights(a, b, skip: tuple[str, ...] = ()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if key not in skip:
            assert torch.equal(sa[key], sb[key]), key


def test_random_weights_tie_nothing(tiny_reference):
    """Every float parameter and buffer is drawn on its own: no two tensors are equal and none is a constant,
    so a stage that reads the wrong one of two tensors a checkpoint may keep apart fails parity."""
    tensors = {k: v for k, v in tiny_reference.video_model.state_dict().items() if v.is_floating_point()}
    assert len(tensors) > 500
    by_shape: dict[tuple, list[str]] = {}
    for name, value in tensors.items():
        assert value.numel() == 1 or not bool((value == value.flatten()[0]).all()), f"{name} is a constant"
        by_shape.setdefault(tuple(value.shape), []).append(name)
    for names in by_shape.values():
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                assert not torch.equal(tensors[first], tensors[second]), (first, second)


def test_config_builds_repvit_not_the_broken_default():
    config = build_video_config("full")
    assert config.vision_config.backbone_config.architecture == "repvit_m1"
    assert config.image_size == 1024
    assert config.vision_config.backbone_feature_sizes == [[256, 256], [128, 128], [64, 64]]
    assert config.enable_temporal_pos_encoding_for_object_pointers is False


def test_random_weights_are_seeded_and_non_degenerate(tiny_reference):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the mask-area calibration runs the model: its result must not depend on threads
    try:
        again = random_reference(seed=0, size="tiny")
    finally:
        torch.set_num_threads(threads)
    _same_weights(tiny_reference.video_model, again.video_model)
    assert again.weights_hash() == tiny_reference.weights_hash()
    other = random_reference(seed=1, size="tiny")
    assert tiny_reference.weights_hash() != other.weights_hash()
    size = tiny_reference.image_size
    pixels = torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = tiny_reference.image_model(
            pixel_values=pixels, input_points=torch.tensor([[[[size * 0.4, size * 0.5]]]]), input_labels=torch.tensor([[[1]]])
        )
    embeddings = tiny_reference.image_model.get_image_embeddings(pixels)[-1]
    # transformers' own init gives ~1e-9 here; parity on such outputs would prove nothing.
    assert embeddings.std() > 0.1
    positive = (out.pred_masks > 0).float().mean()
    assert 0.05 < positive < 0.95, "reference masks must be neither empty nor full"


def test_image_model_shares_the_video_model_weights(tiny_reference):
    video = tiny_reference.video_model.state_dict()
    for key, value in tiny_reference.image_model.state_dict().items():
        assert torch.equal(value, video[key]), key


def test_hugging_face_folder_loads_the_same_weights(tiny_reference, tmp_path):
    tiny_reference.video_model.save_pretrained(tmp_path / "edgetam-hf")
    loaded = load_reference(str(tmp_path / "edgetam-hf"))
    _same_weights(loaded.video_model, tiny_reference.video_model)
    assert loaded.weights_hash() == tiny_reference.weights_hash()


def test_original_checkpoint_is_converted_to_the_same_weights(tiny_reference, tmp_path):
    layers = len(tiny_reference.video_model.memory_encoder.mask_downsampler.layers)
    original = to_original_layout(tiny_reference.video_model.state_dict(), layers)
    assert any(k.startswith("sam_mask_decoder.") for k in original)
    path = tmp_path / "edgetam.pt"
    torch.save({"model": original}, path)
    loaded = load_reference(str(path), size="tiny")
    _same_weights(loaded.video_model, tiny_reference.video_model, skip=(TIED_IN_CHECKPOINT,))
    model = loaded.video_model  # the checkpoint's one matrix serves both, as in the released weights
    assert torch.equal(model.shared_image_embedding.positional_embedding,
                       model.prompt_encoder.shared_embedding.positional_embedding)


def test_checkpoint_with_a_missing_tensor_is_refused(tiny_reference, tmp_path):
    layers = len(tiny_reference.video_model.memory_encoder.mask_downsampler.layers)
    original = to_original_layout(tiny_reference.video_model.state_dict(), layers)
    original.pop("no_mem_embed")
    torch.save({"model": original}, tmp_path / "edgetam.pt")
    with pytest.raises(EdgeTamExportError, match="does not match EdgeTAM.*no_memory_embedding"):
        load_reference(str(tmp_path / "edgetam.pt"), size="tiny")


def test_checkpoint_of_another_size_names_the_fix(tiny_reference, tmp_path):
    layers = len(tiny_reference.video_model.memory_encoder.mask_downsampler.layers)
    torch.save({"model": to_original_layout(tiny_reference.video_model.state_dict(), layers)}, tmp_path / "e.pt")
    with pytest.raises(EdgeTamExportError, match="wrong shape.*--size"):
        load_reference(str(tmp_path / "e.pt"), size="full")


def test_corrupt_and_missing_checkpoints_give_one_clear_error(tmp_path):
    corrupt = tmp_path / "edgetam.pt"
    corrupt.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(EdgeTamExportError, match="corrupt or not a PyTorch checkpoint"):
        load_reference(str(corrupt))
    corrupt.write_bytes(b"plain text")
    with pytest.raises(EdgeTamExportError, match="corrupt or not a PyTorch checkpoint"):
        load_reference(str(corrupt))
    with pytest.raises(EdgeTamExportError, match="does not exist"):
        load_reference(str(tmp_path / "missing.pt"))


class _RunsCode:
    """A pickle payload that would create a marker file if it were ever unpickled with code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "edgetam.pt"
    torch.save({"model": {"weight": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(EdgeTamExportError, match="refusing to load"):
        load_reference(str(path))
    assert not marker.exists()


def test_hub_id_without_network_fails_with_one_line():
    with pytest.raises(EdgeTamExportError, match="could not fetch 'yonigozlan/edgetam-1'.*download it"):
        load_reference("yonigozlan/edgetam-1")


def test_unknown_source_names_the_accepted_forms(tmp_path):
    with pytest.raises(EdgeTamExportError, match="pass 'random', a folder"):
        load_reference("no-such-model")
    with pytest.raises(EdgeTamExportError, match="unknown model size"):
        load_reference("random", size="huge")
