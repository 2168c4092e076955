import Foundation

/// A dense tensor that runners fill and stages read: a shape, row-major strides, and Float or Int32 values.
///
/// Runners copy into it at their edge (Core ML may pad rows, so they copy with the source strides); everything
/// inside EdgeTAMKit works on contiguous tensors.
public struct Tensor: Sendable, Equatable {
    /// The values, in row-major order.
    public enum Storage: Sendable, Equatable {
        case float32([Float])
        case int32([Int32])
    }

    public let shape: [Int]
    public private(set) var storage: Storage

    /// Row-major strides of `shape`, in elements.
    public var strides: [Int] { Tensor.contiguousStrides(shape) }
    public var dtype: DType {
        switch storage {
        case .float32: .float32
        case .int32: .int32
        }
    }
    public var count: Int { shape.reduce(1, *) }

    public init(shape: [Int], floats: [Float]) {
        precondition(shape.reduce(1, *) == floats.count, "\(floats.count) values do not fill shape \(shape)")
        self.shape = shape
        storage = .float32(floats)
    }

    public init(shape: [Int], ints: [Int32]) {
        precondition(shape.reduce(1, *) == ints.count, "\(ints.count) values do not fill shape \(shape)")
        self.shape = shape
        storage = .int32(ints)
    }

    /// A tensor of zeros (or of `value`).
    public static func filled(_ shape: [Int], dtype: DType = .float32, value: Double = 0) -> Tensor {
        let count = shape.reduce(1, *)
        switch dtype {
        case .float32: return Tensor(shape: shape, floats: [Float](repeating: Float(value), count: count))
        case .int32: return Tensor(shape: shape, ints: [Int32](repeating: Int32(value), count: count))
        }
    }

    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        for axis in stride(from: shape.count - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * shape[axis + 1] }
        return strides
    }

    /// Values as Float (Int32 values converted).
    public var floats: [Float] {
        switch storage {
        case let .float32(values): values
        case let .int32(values): values.map(Float.init)
        }
    }

    /// Values as Int32 (Float values truncated).
    public var ints: [Int32] {
        switch storage {
        case let .float32(values): values.map { Int32($0) }
        case let .int32(values): values
        }
    }

    /// The element at a multi-index, as Float.
    public subscript(_ index: Int...) -> Float {
        let offset = zip(index, strides).reduce(0) { $0 + $1.0 * $1.1 }
        switch storage {
        case let .float32(values): return values[offset]
        case let .int32(values): return Float(values[offset])
        }
    }

    /// Rows `range` of the first axis (the objects axis of stage tensors).
    public func rows(_ range: Range<Int>) -> Tensor {
        if range == 0 ..< (shape.first ?? 0) { return self }  // all rows: share the storage (copy on write)
        let inner = shape.dropFirst().reduce(1, *)
        let bounds = range.lowerBound * inner ..< range.upperBound * inner
        let newShape = [range.count] + shape.dropFirst()
        switch storage {
        case let .float32(values): return Tensor(shape: newShape, floats: Array(values[bounds]))
        case let .int32(values): return Tensor(shape: newShape, ints: Array(values[bounds]))
        }
    }

    /// Overwrite row `row` (everything under the first axis) with row `sourceRow` of `source`: the writes the
    /// tracker does when it gathers per-object results from several stage calls into one tensor.
    public mutating func setRow(_ row: Int, from source: Tensor, row sourceRow: Int = 0) {
        let inner = shape.dropFirst().reduce(1, *)
        precondition(source.shape.dropFirst().reduce(1, *) == inner, "rows of \(source.shape) do not fit rows of \(shape)")
        let target = row * inner ..< (row + 1) * inner, origin = sourceRow * inner ..< (sourceRow + 1) * inner
        switch (storage, source.storage) {
        case (.float32(var values), let .float32(other)):
            storage = .float32([])  // hand the buffer over, so the write does not copy it
            values.replaceSubrange(target, with: other[origin])
            storage = .float32(values)
        case (.int32(var values), let .int32(other)):
            storage = .int32([])
            values.replaceSubrange(target, with: other[origin])
            storage = .int32(values)
        default:
            preconditionFailure("setRow between \(dtype) and \(source.dtype) tensors")
        }
    }

    /// Tensors of the same trailing shape stacked along the first axis (one part: that tensor, storage shared).
    public static func concatenate(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty, "nothing to concatenate")
        if parts.count == 1 { return parts[0] }
        let shape = [parts.map { $0.shape[0] }.reduce(0, +)] + parts[0].shape.dropFirst()
        switch parts[0].storage {
        case .float32: return Tensor(shape: shape, floats: parts.flatMap(\.floats))
        case .int32: return Tensor(shape: shape, ints: parts.flatMap(\.ints))
        }
    }

    /// The same values under another shape of the same size.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        switch storage {
        case let .float32(values): return Tensor(shape: newShape, floats: values)
        case let .int32(values): return Tensor(shape: newShape, ints: values)
        }
    }

    /// Copy a strided source (for example a Core ML output with padded rows) into a contiguous tensor.
    public static func copying(shape: [Int], strides: [Int], from source: UnsafeBufferPointer<Float>) -> Tensor {
        let count = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        let outer = contiguousStrides(shape)
        for flat in 0 ..< count {
            var rest = flat, offset = 0
            for axis in 0 ..< shape.count {
                offset += rest / outer[axis] * strides[axis]
                rest %= outer[axis]
            }
            values[flat] = source[offset]
        }
        return Tensor(shape: shape, floats: values)
    }
}
