"""Runners: one stage artifact of a bundle, loaded to run on NumPy arrays, one module per artifact format.

Backends (`edgetam_export.backends`) lower stages on the export side; runners only run them, so
the runtime needs neither transformers nor the export stack. The ONNX runner needs ONNX Runtime
alone (no torch); ExecuTorch needs its Python runtime (which brings torch); Core ML runs through
`MLModel` on macOS and through the NumPy MIL interpreter elsewhere.
"""

from __future__ import annotations

from edgetam_export.bundle import Bundle
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime.runners.base import StageRunner, ordered_inputs

#: Backend names (as in manifests) that a runner exists for.
RUNTIMES = ("executorch", "onnx", "coreml")


def load_runner(bundle: Bundle, stage: str, coreml_runtime: str | None = None, threads: int | None = None) -> StageRunner:
    """Load one stage of a bundle for this machine (raise EdgeTamExportError if it cannot run here).

    `coreml_runtime` picks what runs Core ML programs: compute units of the real runtime (macOS) or
    'mil-interpreter'; by default the manifest's compute units on macOS and the interpreter elsewhere.
    `threads` sets ONNX Runtime's intra-op threads of this session, or the size of ExecuTorch's
    process-wide XNNPACK threadpool; by default each runtime picks (one thread per core).
    """
    artifact, spec, facts = bundle.artifact(stage), bundle.spec(stage), bundle.manifest.stages[stage].backend
    backend = bundle.backend
    if backend == "onnx":
        from edgetam_export.runtime.runners.onnx import load_onnx

        return load_onnx(artifact, spec, threads)
    if backend == "executorch":
        from edgetam_export.runtime.runners.executorch import load_executorch

        return load_executorch(artifact, spec, facts, coreml_runtime, threads)
    if backend == "coreml":
        from edgetam_export.runtime.runners.coreml import load_coreml

        return load_coreml(artifact, spec, facts, coreml_runtime)
    raise EdgeTamExportError(
        f"bundle '{bundle.path}' needs a '{backend}' runtime; this edgetam-export runs {', '.join(RUNTIMES)}"
    )


def load_runners(
    bundle: Bundle, stages: list[str] | tuple[str, ...], coreml_runtime: str | None = None, threads: int | None = None
) -> dict:
    """{stage: runner} for the given stages of a bundle."""
    return {name: load_runner(bundle, name, coreml_runtime, threads) for name in stages}


def check_artifacts(bundle: Bundle) -> str:
    """Load every stage where its runtime is installed, which checks its own inputs and outputs against the contract
    (`StageSpec.check_artifact`); return what was checked, in words."""
    try:
        load_runners(bundle, bundle.stage_names)
    except ModuleNotFoundError as exc:
        return f"not loaded ({exc.name} is not installed): inputs and outputs unchecked"
    return "loaded: every stage's inputs and outputs match its contract"


__all__ = ["RUNTIMES", "check_artifacts", "StageRunner", "load_runner", "load_runners", "ordered_inputs"]
