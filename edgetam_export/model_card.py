"""A bundle's `README.md`: the model card an app developer reads first, written from the manifest alone.

Like the model cards of Core ML repositories on the Hugging Face Hub, it says where the weights came
from, what each artifact is, how well it matched the reference and how to run it (Python and Swift).
"""

from __future__ import annotations

from edgetam_export.bundle import Manifest

#: File name of the model card inside a bundle (not an artifact: not checksummed, rewritten with the bundle).
MODEL_CARD = "README.md"


def _shape(shape: tuple) -> str:
    return "x".join(str(d) for d in shape)


def model_card(manifest: Manifest) -> str:
    """Markdown describing the bundle whose manifest this is."""
    model, recipe, shapes = manifest.model, manifest.recipe, manifest.shapes
    notice = model.random_weights_notice()
    lines = [
        f"# EdgeTAM bundle: {recipe.name}",
        "",
        f"{recipe.description}",
        "",
        "EdgeTAM (on-device Track Anything: SAM 2 with a RepViT image encoder and a 2D Spatial Perceiver memory), "
        "cut into static-shape stages and exported by edgetam-export "
        f"{manifest.tools.get('edgetam-export', '')} on {manifest.created or 'an unrecorded date'}.",
        "",
    ]
    if notice:
        lines += [f"> **Warning:** {notice}.", ""]
    lines += [
        "## Model",
        "",
        f"- Weights: `{model.source}`" + (f" (seed {model.seed})" if model.seed is not None else "")
        + f", size {model.size or 'full'}, sha256 `{model.weights_sha256[:16]}`",
        f"- Backend: {recipe.backend}" + (f" with the {recipe.delegate} delegate" if recipe.delegate else "")
        + f", {recipe.precision}" + (f", deployment target {recipe.deployment_target}" if recipe.deployment_target else ""),
        f"- Input size {shapes.image_size}x{shapes.image_size}; up to {shapes.max_objects} objects per call, "
        f"{shapes.point_slots} prompt slots per object, {shapes.memory_slots} memory slots, "
        f"{shapes.pointer_slots} object-pointer slots",
        "",
        "## Stages",
        "",
        "| stage | artifact | MB | inputs | outputs | min PSNR dB | min cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = (manifest.parity or {}).get("summary", {})
    for name, record in manifest.stages.items():
        entry = summary.get(name, {})
        inputs = ", ".join(f"`{t.name}` {_shape(t.shape)}" for t in record.spec.inputs)
        outputs = ", ".join(f"`{t.name}` {_shape(t.shape)}" for t in record.spec.outputs)
        psnr = entry.get("min_psnr_db")
        cosine = entry.get("min_cosine")
        lines.append(
            f"| {name} | `{record.artifact}` | {record.size_bytes / 1e6:.1f} | {inputs} | {outputs} | "
            f"{'-' if psnr is None else f'{float(psnr):.1f}'} | {'-' if cosine is None else f'{float(cosine):.5f}'} |"
        )
    lines += ["", "`objects` is the number of objects in a call (1 to max_objects).", ""]
    if manifest.parity:
        parity = manifest.parity
        lines += [
            "## Parity with the PyTorch reference",
            "",
            f"{'Passed' if parity.get('passed') else 'FAILED'} on {parity.get('pictures', 'sample data')}, run by "
            f"{parity.get('runtime', 'an unrecorded runtime')}; floors: {recipe.parity.describe()}.",
            "",
        ]
    lines += [
        "## Run it",
        "",
        "```bash",
        "edgetam-export info BUNDLE                      # contracts, checksums, parity",
        "edgetam-export segment photo.jpg --bundle BUNDLE --point 500,375 --out out/photo",
        "edgetam-export track frames/ --bundle BUNDLE --point 0:1:210,350 --out out/clip",
        "```",
        "",
        "```python",
        "from edgetam_export.runtime import EdgeTamPredictor",
        "predictor = EdgeTamPredictor.from_bundle(\"BUNDLE\")",
        "prediction = predictor.predict(predictor.set_image(\"photo.jpg\"), points=[[[500, 375]]])",
        "```",
        "",
        "```swift",
        "let bundle = try EdgeTAMBundle.open(at: bundleURL)   // EdgeTAMKit: checks every checksum",
        "```",
        "",
        "Every artifact's sha256 is in `manifest.json`; `edgetam-export verify BUNDLE` re-checks parity.",
    ]
    return "\n".join(lines) + "\n"
