"""A NumPy interpreter of Core ML ML Programs, to check converted models where Core ML cannot predict (Linux).

It reads the MIL program stored inside a saved `.mlpackage` (not the PyTorch graph it came from),
runs its operations one by one, and rounds every fp16 result to fp16, as the program specifies.
It is not the Core ML runtime: kernels, fusions and accumulation order on a device differ. An
operation it does not know stops it with the operation's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.runtime.processing import bilinear_weights

FP16_MAX = 65504.0


def load_program(mlpackage: Path):
    """The pymil Program of a saved .mlpackage, with its weights."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    try:
        spec = ct.utils.load_spec(str(mlpackage))
    except Exception as exc:  # coremltools raises bare Exceptions for unreadable packages
        raise EdgeTamExportError(f"cannot read Core ML package '{mlpackage}' ({short_reason(exc)}); re-export it") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise EdgeTamExportError(f"'{mlpackage}' is not an ML Program; re-export it with a coreml recipe")
    weights = mlpackage / "Data" / "com.apple.CoreML" / "weights"
    return load(spec, spec.specificationVersion, str(weights))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, -136 dB)."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray, mode: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    if mode == "EXACT":
        return 0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x64 / (1.0 + np.exp(-1.702 * x64))
    raise EdgeTamExportError(f"MIL interpreter: gelu mode '{mode}' is not supported")


def _pad_amounts(op, x: np.ndarray, kernel: tuple[int, int], strides, dilations) -> list[int]:
    pad_type = str(op.inputs["pad_type"].val)
    if pad_type == "valid":
        return [0, 0, 0, 0]
    if pad_type == "custom":
        return [int(v) for v in op.inputs["pad"].val]
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            low = total // 2 if pad_type == "same" else total - total // 2
            pads += [low, total - low]
        return pads
    raise EdgeTamExportError(f"MIL interpreter: conv pad_type '{pad_type}' is not supported")


def _conv(op, get) -> np.ndarray:
    x, weight = get("x").astype(np.float32), get("weight").astype(np.float32)
    bias = get("bias")
    strides = [int(v) for v in get("strides", [1, 1])]
    dilations = [int(v) for v in get("dilations", [1, 1])]
    groups = int(get("groups", 1))
    kh, kw = weight.shape[2:]
    top, bottom, left, right = _pad_amounts(op, x, (kh, kw), strides, dilations)
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    span_h, span_w = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, :: strides[0], :: strides[1], :: dilations[0], :: dilations[1]]
    n, c, ho, wo = windows.shape[:4]
    windows = windows.reshape(n, groups, c // groups, ho, wo, kh, kw)
    grouped = weight.reshape(groups, weight.shape[0] // groups, c // groups, kh, kw)
    out = np.einsum("ngchwij,gocij->ngohw", windows, grouped, optimize=True).reshape(n, -1, ho, wo)
    return out + bias.reshape(1, -1, 1, 1) if bias is not None else out


def _conv_transpose(op, get) -> np.ndarray:
    x, weight = get("x").astype(np.float32), get("weight").astype(np.float32)
    strides = [int(v) for v in get("strides", [1, 1])]
    kh, kw = weight.shape[2:]
    pads = get("pad")
    if int(get("groups", 1)) != 1 or [kh, kw] != strides or (pads is not None and any(int(p) for p in pads)):
        raise EdgeTamExportError(f"MIL interpreter: conv_transpose '{op.name}' needs kernel == stride, no padding")
    n, _, h, w = x.shape
    out = np.einsum("nchw,coab->nohawb", x, weight, optimize=True).reshape(n, weight.shape[1], h * kh, w * kw)
    bias = get("bias")
    return out + bias.reshape(1, -1, 1, 1) if bias is not None else out


def _slice_by_index(op, get) -> np.ndarray:
    x = get("x")
    begin, end = get("begin"), get("end")
    stride = get("stride", np.ones(x.ndim, np.int32))
    begin_mask = get("begin_mask", np.zeros(x.ndim, bool))
    end_mask = get("end_mask", np.zeros(x.ndim, bool))
    squeeze = get("squeeze_mask", np.zeros(x.ndim, bool))
    # A squeezed axis takes the one element at `begin` (its `end` is ignored, often written as `begin`).
    index = tuple(
        int(begin[i]) if squeeze[i] else
        slice(None if begin_mask[i] else int(begin[i]), None if end_mask[i] else int(end[i]), int(stride[i]))
        for i in range(x.ndim)
    )
    return x[index]


def _upsample_bilinear(op, get) -> np.ndarray:
    x = get("x").astype(np.float32)
    if bool(get("align_corners", False)) or not bool(get("half_pixel_centers", True)):
        raise EdgeTamExportError(f"MIL interpreter: upsample_bilinear '{op.name}' needs half-pixel centers")
    height = int(round(x.shape[-2] * float(get("scale_factor_height", 1))))
    width = int(round(x.shape[-1] * float(get("scale_factor_width", 1))))
    rows, cols = bilinear_weights(x.shape[-2], height), bilinear_weights(x.shape[-1], width)
    return np.matmul(np.matmul(rows, x), cols.T)


def _layer_norm(op, get) -> np.ndarray:
    x = get("x").astype(np.float32)
    axes = tuple(int(a) for a in get("axes"))
    mean = x.mean(axis=axes, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(variance + float(get("epsilon", 1e-5)))
    gamma, beta = get("gamma"), get("beta")
    return out * gamma + beta if gamma is not None else out


def _batch_norm(op, get) -> np.ndarray:
    """Per-channel (axis 1) normalization; coremltools folds a per-channel multiply-add into it."""
    x = get("x").astype(np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)

    def channel(key: str, default: float) -> np.ndarray:
        value = get(key)
        return np.full(1, default, np.float32) if value is None else np.asarray(value, np.float32).reshape(shape)

    scale = channel("gamma", 1.0) / np.sqrt(channel("variance", 1.0) + float(get("epsilon", 1e-5)))
    return (x - channel("mean", 0.0)) * scale + channel("beta", 0.0)


def _matmul(op, get) -> np.ndarray:
    x, y = get("x").astype(np.float32), get("y").astype(np.float32)
    if bool(get("transpose_x", False)):
        x = np.swapaxes(x, -1, -2)
    if bool(get("transpose_y", False)):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _gather(op, get) -> np.ndarray:
    if int(get("batch_dims", 0)) != 0:
        raise EdgeTamExportError(f"MIL interpreter: gather '{op.name}' with batch_dims is not supported")
    return np.take(get("x"), get("indices").astype(np.int64), axis=int(get("axis", 0)))


def _cast(op, get) -> np.ndarray:
    dtypes = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int16": np.int16, "int8": np.int8,
              "uint8": np.uint8, "bool": bool}
    return get("x").astype(dtypes[str(get("dtype"))])


def _softmax(op, get) -> np.ndarray:
    x = get("x").astype(np.float32)
    axis = int(get("axis", -1))
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _scaled_dot_product_attention(op, get) -> np.ndarray:
    """iOS 18's fused attention: softmax(q k^T / sqrt(E) + mask) v; a bool mask keeps the keys that are True."""
    q, k, v = (_f(get(name)).astype(np.float32) for name in ("query", "key", "value"))
    logits = np.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1])
    mask = get("attn_mask")
    if mask is not None:
        logits = np.where(mask, logits, -np.inf) if mask.dtype == bool else logits + _f(mask)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.matmul(weights / weights.sum(axis=-1, keepdims=True), v)


def _blocks(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast per-block parameters (one per block of each axis) to a weight of `shape`."""
    values = np.asarray(values).reshape((1,) * (len(shape) - np.ndim(values)) + np.shape(values))
    for axis, (size, blocks) in enumerate(zip(shape, values.shape)):
        values = np.repeat(values, size // blocks, axis=axis)
    return values


def _affine_dequantize(op, get) -> np.ndarray:
    """iOS 16 weight quantization: (q - zero_point) * scale, per channel along `axis`."""
    data = get("quantized_data").astype(np.float32)
    shape = [1] * data.ndim
    shape[int(get("axis"))] = -1

    def channel(key: str) -> np.ndarray:
        value = np.asarray(get(key), np.float32)
        return value.reshape(shape) if value.ndim else value

    return (data - channel("zero_point")) * channel("scale")


def _blockwise_shift_scale(op, get) -> np.ndarray:
    """iOS 18 weight quantization: (data - offset) * scale, each parameter shared by a block of weights."""
    data = get("data").astype(np.float32)
    offset = get("offset")
    if offset is not None:
        data = data - _blocks(np.asarray(offset, np.float32), data.shape)
    return data * _blocks(np.asarray(get("scale"), np.float32), data.shape)


def _lut_to_dense(op, get) -> np.ndarray:
    """Palettized weights: each weight an index into a lookup table (iOS 16: one table for the tensor;
    iOS 18: one table per block of channels, `lut` shaped (blocks per axis..., entries, 1))."""
    indices, lut = np.asarray(get("indices")), np.asarray(get("lut"))
    if get("shape") is not None:  # iOS 16: indices packed into bytes, least significant bit first
        shape = [int(v) for v in get("shape")]
        nbits, count = int(np.log2(lut.size)), math.prod(shape)
        bits = np.unpackbits(indices.astype(np.uint8), bitorder="little")[: count * nbits].reshape(count, nbits)
        return lut[bits.astype(np.int64) @ (1 << np.arange(nbits))].reshape(shape)
    indices = indices.astype(np.int64)
    if lut.shape[-1] != 1:
        raise EdgeTamExportError(f"MIL interpreter: vector palettization in '{op.name}' is not supported")
    table = lut[..., 0]
    groups = tuple(
        (np.arange(size) // (size // blocks)).reshape([-1 if i == axis else 1 for i in range(indices.ndim)])
        for axis, (size, blocks) in enumerate(zip(indices.shape, table.shape[:-1]))
    )
    return table[groups + (indices,)]


def _f(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) if x.dtype == np.float16 else x


OPS: dict[str, Callable] = {
    "add": lambda op, get: _f(get("x")) + _f(get("y")),
    "sub": lambda op, get: _f(get("x")) - _f(get("y")),
    "mul": lambda op, get: _f(get("x")) * _f(get("y")),
    "real_div": lambda op, get: _f(get("x")) / _f(get("y")),
    "equal": lambda op, get: get("x") == get("y"),
    "not_equal": lambda op, get: get("x") != get("y"),
    "greater": lambda op, get: get("x") > get("y"),
    "greater_equal": lambda op, get: get("x") >= get("y"),
    "less": lambda op, get: get("x") < get("y"),
    "less_equal": lambda op, get: get("x") <= get("y"),
    "logical_and": lambda op, get: np.logical_and(get("x"), get("y")),
    "logical_or": lambda op, get: np.logical_or(get("x"), get("y")),
    "logical_not": lambda op, get: np.logical_not(get("x")),
    "maximum": lambda op, get: np.maximum(_f(get("x")), _f(get("y"))),
    "minimum": lambda op, get: np.minimum(_f(get("x")), _f(get("y"))),
    "pow": lambda op, get: np.power(_f(get("x")), _f(get("y"))),
    "floor_div": lambda op, get: np.floor_divide(get("x"), get("y")),
    "abs": lambda op, get: np.abs(get("x")),
    "sign": lambda op, get: np.sign(_f(get("x"))),
    "exp": lambda op, get: np.exp(_f(get("x")).astype(np.float64)),
    "sqrt": lambda op, get: np.sqrt(_f(get("x"))),
    "rsqrt": lambda op, get: 1.0 / np.sqrt(_f(get("x")) + float(get("epsilon", 1e-12))),
    "tanh": lambda op, get: np.tanh(_f(get("x"))),
    "clip": lambda op, get: np.clip(_f(get("x")), _f(get("alpha")), _f(get("beta"))),
    "select": lambda op, get: np.where(get("cond"), _f(get("a")), _f(get("b"))),
    "cast": _cast,
    "identity": lambda op, get: get("x"),
    "relu": lambda op, get: np.maximum(_f(get("x")), 0),
    "sigmoid": lambda op, get: 1.0 / (1.0 + np.exp(-_f(get("x")).astype(np.float64))),
    "gelu": lambda op, get: _gelu(get("x"), str(get("mode", "EXACT"))),
    "sin": lambda op, get: np.sin(_f(get("x"))),
    "cos": lambda op, get: np.cos(_f(get("x"))),
    "softmax": _softmax,
    "scaled_dot_product_attention": _scaled_dot_product_attention,
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "reduce_mean": lambda op, get: _f(get("x")).mean(
        axis=tuple(int(a) for a in get("axes")), keepdims=bool(get("keep_dims", False))
    ),
    "reduce_max": lambda op, get: _f(get("x")).max(
        axis=tuple(int(a) for a in get("axes")), keepdims=bool(get("keep_dims", False))
    ),
    "linear": lambda op, get: _f(get("x")) @ _f(get("weight")).T + (
        _f(get("bias")) if get("bias") is not None else 0.0
    ),
    "matmul": _matmul,
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "upsample_bilinear": _upsample_bilinear,
    "upsample_nearest_neighbor": lambda op, get: get("x").repeat(int(get("scale_factor_height", 1)), axis=-2).repeat(
        int(get("scale_factor_width", 1)), axis=-1
    ),
    "reshape": lambda op, get: get("x").reshape([int(v) for v in get("shape")]),
    "transpose": lambda op, get: np.transpose(get("x"), [int(v) for v in get("perm")]),
    "expand_dims": lambda op, get: np.expand_dims(get("x"), tuple(int(a) for a in get("axes"))),
    "squeeze": lambda op, get: np.squeeze(get("x"), tuple(int(a) for a in get("axes"))) if get("axes") is not None
    else np.squeeze(get("x")),
    "tile": lambda op, get: np.tile(get("x"), [int(v) for v in get("reps")]),
    "concat": lambda op, get: np.concatenate([np.atleast_1d(v) for v in get("values")], axis=int(get("axis"))),
    "stack": lambda op, get: np.stack(get("values"), axis=int(get("axis"))),
    "slice_by_index": _slice_by_index,
    "gather": _gather,
    "shape": lambda op, get: np.array(get("x").shape, dtype=np.int32),
    "fill_like": lambda op, get: np.full(get("ref_tensor").shape, _f(np.asarray(get("value", 0.0)))),
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
    "constexpr_lut_to_dense": _lut_to_dense,
}


class MILInterpreter:
    """Runs the `main` function of an ML Program on NumPy arrays."""

    def __init__(self, mlpackage: Path) -> None:
        from coremltools.converters.mil.mil import types

        self.program = load_program(Path(mlpackage))
        self.function = self.program.functions["main"]
        self._types = types
        unknown = sorted({op.op_type for op in self.function.operations if op.op_type not in OPS and op.op_type != "const"})
        if unknown:
            raise EdgeTamExportError(
                f"the MIL interpreter does not know the operation(s) {', '.join(unknown)} used by '{mlpackage}'"
            )
        #: Largest magnitude of any fp16 value computed in the last run (inf means an fp16 overflow).
        self.max_abs_fp16 = 0.0

    def _numpy_dtype(self, var):
        return self._types.nptype_from_builtin(var.dtype)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = {}
        for name, var in self.function.inputs.items():
            env[name] = np.asarray(inputs[name]).astype(self._numpy_dtype(var))
        self.max_abs_fp16 = 0.0
        for op in self.function.operations:
            if op.op_type == "const":
                env[op.outputs[0].name] = np.asarray(op.outputs[0].val)
                continue

            def get(key, default=None, op=op):
                var = op.inputs.get(key)
                if var is None:
                    return default
                if isinstance(var, (list, tuple)):
                    return [v.val if v.val is not None and v.name not in env else env[v.name] for v in var]
                if var.name in env:
                    return env[var.name]
                return var.val if var.val is not None else default

            result = OPS[op.op_type](op, get)
            results = result if isinstance(result, tuple) else (result,)
            for var, value in zip(op.outputs, results):
                dtype = self._numpy_dtype(var)
                with np.errstate(over="ignore"):
                    value = np.asarray(value).astype(dtype)
                if dtype == np.float16 and value.size:
                    self.max_abs_fp16 = max(self.max_abs_fp16, float(np.abs(value.astype(np.float32)).max()))
                env[var.name] = value
        return {var.name: env[var.name] for var in self.function.outputs}
