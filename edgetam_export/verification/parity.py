"""Parity metrics and the ParityReport: names, then shapes, then values, every failure collected."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgetam_export.recipes import ParityThresholds
from edgetam_export.safe_output import REPORT_MARKER, write_text_atomic

#: Outputs whose values are mask logits: they also get a mask IoU (logits > 0).
MASK_OUTPUTS = {("prompt_decoder", "mask_logits")}
#: A reference output with a smaller standard deviation than this is degenerate: matching it proves nothing.
MIN_REFERENCE_STD = 1e-3
#: Outputs with fewer values than this (one score per object) may be constant by nature; not judged by std.
MIN_VALUES_FOR_STD = 16


@dataclass
class OutputParity:
    """Agreement of one output of one stage case with the reference."""

    stage: str
    case: str
    output: str
    reference_shape: list[int]
    shape: list[int]
    max_abs: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None
    psnr_db: float | None = None
    mask_iou: float | None = None
    reference_std: float | None = None
    max_abs_activation: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def psnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Peak signal-to-noise ratio with the reference's largest magnitude as the peak."""
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    peak = float(np.max(np.abs(reference)))
    if mse == 0.0:
        return math.inf
    if peak == 0.0:
        return -math.inf
    return 10.0 * math.log10(peak**2 / mse)


def mask_iou(reference: np.ndarray, candidate: np.ndarray) -> float:
    """IoU of the masks (logits > 0), over every mask in the tensor together; 1.0 when both are empty."""
    ref, cand = reference > 0, candidate > 0
    union = np.logical_or(ref, cand).sum()
    return 1.0 if union == 0 else float(np.logical_and(ref, cand).sum() / union)


def compare_output(
    stage: str,
    case: str,
    output: str,
    reference: np.ndarray,
    candidate: np.ndarray | None,
    thresholds: ParityThresholds,
) -> OutputParity:
    """Compare one output; a missing output or a shape mismatch is recorded, values are not compared then."""
    result = OutputParity(stage, case, output, list(reference.shape), [] if candidate is None else list(candidate.shape))
    if candidate is None:
        result.failures.append("output missing")
        return result
    if tuple(candidate.shape) != tuple(reference.shape):
        result.failures.append(f"shape {tuple(candidate.shape)} != reference {tuple(reference.shape)}")
        return result
    ref = reference.astype(np.float64).ravel()
    cand = candidate.astype(np.float64).ravel()
    if not np.all(np.isfinite(cand)):
        result.failures.append("non-finite values")
        return result
    diff = np.abs(ref - cand)
    result.max_abs = float(diff.max())
    result.mean_abs = float(diff.mean())
    norms = np.linalg.norm(ref) * np.linalg.norm(cand)
    result.cosine = float(ref @ cand / norms) if norms > 0 else float(np.array_equal(ref, cand))
    result.psnr_db = psnr_db(reference, candidate)
    result.reference_std = float(ref.std())
    result.max_abs_activation = float(np.abs(cand).max())
    if ref.size >= MIN_VALUES_FOR_STD and result.reference_std < MIN_REFERENCE_STD:
        result.failures.append(
            f"reference is degenerate (std {result.reference_std:.2e} < {MIN_REFERENCE_STD}): matching it proves "
            "nothing; use weights with realistic activations"
        )
    if thresholds.min_psnr_db and result.psnr_db < thresholds.min_psnr_db:
        result.failures.append(f"PSNR {result.psnr_db:.1f} dB < {thresholds.min_psnr_db} dB")
    if thresholds.min_cosine is not None and result.cosine < thresholds.min_cosine:
        result.failures.append(f"cosine {result.cosine:.5f} < {thresholds.min_cosine}")
    if (stage, output) in MASK_OUTPUTS:
        result.mask_iou = mask_iou(reference, candidate)
        if result.mask_iou < thresholds.min_mask_iou:
            result.failures.append(f"mask IoU {result.mask_iou:.4f} < {thresholds.min_mask_iou}")
    return result


@dataclass
class ParityReport:
    """Every output of every case; passes only when all do."""

    bundle: str
    recipe: str
    backend: str
    runtime: str
    thresholds: ParityThresholds
    results: list[OutputParity] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Whole-use gates (`gates.py`): documentation examples ({name, min_mask_iou, passed}) and a tracking session.
    examples: list[dict] = field(default_factory=list)
    tracking: dict | None = None

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.failures

    @property
    def failures(self) -> list[str]:
        failures = [f"{r.stage}/{r.output} [{r.case}]: {'; '.join(r.failures)}" for r in self.results if r.failures]
        failures += [f"documentation example '{e['name']}': mask IoU {e['mask_iou']:.4f} < "
                     f"{self.thresholds.min_example_iou}" for e in self.examples if not e["passed"]]
        if self.tracking is not None:
            failures += [f"tracking gate: {failure}" for failure in self.tracking["failures"]]
        return failures

    def gates_json(self) -> dict:
        """The whole-use gates for the manifest (empty when the recipe declares none)."""
        gates = {"examples": self.examples} if self.examples else {}
        return gates | ({"tracking": self.tracking} if self.tracking is not None else {})

    def worst_by_stage(self) -> dict[str, dict]:
        """Per stage: lowest PSNR, lowest cosine, lowest mask IoU and largest max-abs error over its cases
        (the error budget: which stage loses what)."""
        summary: dict[str, dict] = {}
        for r in self.results:
            entry = summary.setdefault(
                r.stage, {"min_psnr_db": math.inf, "min_cosine": 1.0, "max_abs": 0.0, "min_mask_iou": None}
            )
            if r.psnr_db is not None:
                entry["min_psnr_db"] = min(entry["min_psnr_db"], r.psnr_db)
                entry["min_cosine"] = min(entry["min_cosine"], r.cosine)
                entry["max_abs"] = max(entry["max_abs"], r.max_abs)
            if r.mask_iou is not None:
                current = entry["min_mask_iou"]
                entry["min_mask_iou"] = r.mask_iou if current is None else min(current, r.mask_iou)
            entry["passed"] = entry.get("passed", True) and r.passed
        return summary

    def to_json(self) -> dict:
        def clean(value):
            if isinstance(value, float) and math.isinf(value):
                return "inf" if value > 0 else "-inf"
            return value

        return {
            REPORT_MARKER: "edgetam-export verify",
            "bundle": self.bundle,
            "recipe": self.recipe,
            "backend": self.backend,
            "runtime": self.runtime,
            "passed": self.passed,
            "thresholds": asdict(self.thresholds),
            "notes": self.notes,
            "failures": self.failures,
            "summary": {s: {k: clean(v) for k, v in e.items()} for s, e in self.worst_by_stage().items()},
            **self.gates_json(),
            "results": [{k: clean(v) for k, v in asdict(r).items()} | {"passed": r.passed} for r in self.results],
        }

    def write(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

    def table(self) -> str:
        """A fixed-width table a person reads in a terminal."""
        stage_width = max([len("stage"), *(len(r.stage) for r in self.results)]) + 2
        output_width = max([len("output"), *(len(r.output) for r in self.results)]) + 2
        header = (f"{'stage':<{stage_width}}{'output':<{output_width}}{'case':<40}{'max-abs':>10}{'cosine':>10}"
                  f"{'PSNR dB':>9}{'IoU':>8}  ok")
        lines = [header, "-" * len(header)]
        for r in self.results:
            def fmt(value, spec):
                return format(value, spec) if value is not None else "-"

            lines.append(
                f"{r.stage:<{stage_width}}{r.output:<{output_width}}{r.case[:39]:<40}{fmt(r.max_abs, '10.2e'):>10}"
                f"{fmt(r.cosine, '10.6f'):>10}{fmt(r.psnr_db, '9.1f'):>9}{fmt(r.mask_iou, '8.4f'):>8}  "
                f"{'yes' if r.passed else 'NO'}"
            )
        for example in self.examples:
            lines.append(f"documentation example {example['name']!r}: mask IoU {example['mask_iou']:.4f} (worst "
                         f"single mask {example['worst_single_mask_iou']:.4f})  "
                         f"{'yes' if example['passed'] else 'NO'}")
        if self.tracking is not None:
            t = self.tracking
            lines.append(f"tracking {t['objects']} objects x {t['frames']} frames: mean IoU {t['mean_iou']:.4f}, "
                         f"min IoU {t['min_iou']:.4f}, presence agreement {t['presence_agreement']:.2%}  "
                         f"{'yes' if t['passed'] else 'NO'}")
        return "\n".join(lines)
