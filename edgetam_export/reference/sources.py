"""One entry point for every weight source: seeds, a Hugging Face folder, an original checkpoint, a hub id."""

from __future__ import annotations

from pathlib import Path

from transformers import EdgeTamVideoModel

from edgetam_export.bundle import RANDOM_SOURCE
from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.reference.checkpoint import load_original_checkpoint
from edgetam_export.reference.model import Reference, reference_from_model
from edgetam_export.reference.random_weights import random_reference

HUB_IDS = ("yonigozlan/edgetam-1", "facebook/EdgeTAM")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within `timeout` seconds.

    Without this, an offline `from_pretrained` retries for about 23 s, printing a line per retry.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(source: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(source, "config.json"), str)


def load_pretrained(source: str) -> Reference:
    """Load a local Hugging Face model folder or a hub id through `from_pretrained`."""
    local = Path(source).is_dir()
    if not local and not _hub_cached(source) and not _hub_reachable():
        raise EdgeTamExportError(
            f"could not fetch '{source}' from the Hugging Face Hub (no network, and no cached copy); "
            "download it on a connected machine and pass its folder, or pass --model random"
        )
    try:
        model = EdgeTamVideoModel.from_pretrained(source, local_files_only=local)
    except OSError as exc:
        if local:
            raise EdgeTamExportError(
                f"'{source}' is not a usable EdgeTAM model folder ({short_reason(str(exc).splitlines()[0])}); "
                "it needs config.json and model.safetensors written by save_pretrained"
            ) from None
        raise EdgeTamExportError(
            f"could not fetch '{source}' from the Hugging Face Hub (no network, or no such model); "
            "download it on a connected machine and pass its folder, or pass --model random"
        ) from None
    return reference_from_model(model, source)


def load_reference(source: str, *, seed: int = 0, size: str = "full", config_overrides: dict | None = None) -> Reference:
    """One entry point for every weight source: 'random' (a variant with `config_overrides`), a folder, a
    checkpoint file, or a hub id."""
    if source == RANDOM_SOURCE:
        return random_reference(seed, size, **(config_overrides or {}))
    path = Path(source)
    if path.is_dir():
        return load_pretrained(source)
    if path.suffix in (".pt", ".pth", ".ckpt", ".safetensors"):
        if not path.is_file():
            raise EdgeTamExportError(f"checkpoint '{source}' does not exist; check the path given to --model")
        return load_original_checkpoint(path, size)
    if path.exists():
        raise EdgeTamExportError(
            f"'{source}' is neither a model folder nor a checkpoint (.pt, .pth, .ckpt, .safetensors)"
        )
    if "/" in source and not source.startswith((".", "/")) and source.count("/") == 1:
        return load_pretrained(source)
    raise EdgeTamExportError(
        f"model '{source}' not found: pass 'random', a folder, an edgetam.pt checkpoint or a hub id "
        f"such as {HUB_IDS[0]}"
    )
