"""Per-operator stage profiles (ETDump for ExecuTorch, ONNX Runtime's profiler) on the tiny model."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from edgetam_export.benchmarking.profile import profile_stage
from edgetam_export.recipes import load_recipe
from tests.conftest import REPO


@pytest.mark.parametrize("recipe, where, operator_pattern", [
    ("executorch-xnnpack-fp32", {"XNNPACK"}, r"Batch Matrix Multiply \(NC, F32\) GEMM"),
    ("onnx-fp32", {"onnxruntime"}, "MultiHeadAttention"),
    # The recipe's quantization is profiled too: the projections run as dynamically quantized int8 GEMMs (QDU8 on x86
    # with VNNI, QD8 or QP8 elsewhere).
    ("executorch-xnnpack-int8", {"XNNPACK"}, r"Fully Connected \(NC, Q[DP]U?8, F32, QC8W\) GEMM"),
])
def test_a_profile_accounts_for_the_stage_call(tiny_reference, tiny_cases, recipe, where, operator_pattern):
    profile = profile_stage(tiny_reference, load_recipe(recipe).with_shapes(max_objects=4), "memory_attention",
                            tiny_cases, runs=2)
    matching = [op for op in profile.operators if re.fullmatch(operator_pattern, op.name)]
    assert matching and matching[0].calls >= 4  # 2 layers x (self + cross attention)
    assert where <= {op.where for op in profile.operators}
    measured = sum(op.ms for op in profile.operators)
    assert 0 < measured <= profile.total_ms * 1.05  # operators nest in the call; timers may round
    table = profile.markdown(rows=3)
    assert table.splitlines()[0].startswith(f"memory_attention, {recipe} (attention ")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3 + 2  # the header, 3 operators, the rest, the time outside any operator


def test_profile_script_refuses_to_overwrite_its_output(tmp_path):
    out = tmp_path / "profile.md"
    out.write_text("kept")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_stages.py"), "--size", "tiny",
                             "memory_attention:onnx-fp32", "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "exists; name a new file" in result.stderr
    assert out.read_text() == "kept"
