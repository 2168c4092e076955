import EdgeTAMCore
import Foundation

/// A recorded session of the Python runtime (`tests/recording.py`): every stage call in order,
/// with its inputs and outputs. Runners built on it serve the recorded outputs and check that EdgeTAMKit asks
/// for the same stage with the same inputs, call after call: the proof, without a model, that the Swift
/// runtime drives the stages exactly as the Python one does.
public actor ReplaySession {
    /// One recorded stage call.
    public struct Call: Sendable {
        public let stage: String
        public let inputs: [String: Tensor]
        public let outputs: [String: Tensor]

        public init(stage: String, inputs: [String: Tensor], outputs: [String: Tensor]) {
            self.stage = stage; self.inputs = inputs; self.outputs = outputs
        }
    }

    public nonisolated let calls: [Call]
    /// Float inputs may differ from the recording by this much (integers must be equal).
    public nonisolated let tolerance: Float
    /// Calls served so far.
    public private(set) var served = 0
    /// The largest difference found between a float input and its recording.
    public private(set) var largestFloatDifference: Float = 0

    public init(calls: [Call], tolerance: Float = 1e-6) {
        self.calls = calls
        self.tolerance = tolerance
    }

    /// Read a recording folder (`calls.json` and `tensors/`).
    public static func load(from folder: URL, tolerance: Float = 1e-6) throws -> ReplaySession {
        struct Entry: Decodable { let shape: [Int]; let dtype: String; let file: String }
        struct Recorded: Decodable { let stage: String; let inputs: [String: Entry]; let outputs: [String: Entry] }
        let index = folder.appendingPathComponent("calls.json")
        let recorded: [Recorded]
        do {
            recorded = try JSONDecoder().decode([Recorded].self, from: Data(contentsOf: index))
        } catch {
            throw EdgeTAMError.manifestUnreadable(path: index.path, reason: "not a recording of edgetam-export")
        }
        func tensors(_ entries: [String: Entry]) throws -> [String: Tensor] {
            try entries.mapValues { entry in
                let data = try Data(contentsOf: folder.appendingPathComponent(entry.file))
                switch entry.dtype {
                case "float32": return Tensor(shape: entry.shape, floats: data.littleEndianValues(of: Float.self))
                case "int32": return Tensor(shape: entry.shape, ints: data.littleEndianValues(of: Int32.self))
                default: throw EdgeTAMError.manifestUnreadable(path: entry.file, reason: "dtype \(entry.dtype)")
                }
            }
        }
        return ReplaySession(calls: try recorded.map { Call(stage: $0.stage, inputs: try tensors($0.inputs), outputs: try tensors($0.outputs)) },
                             tolerance: tolerance)
    }

    /// Calls recorded but not asked for yet.
    public var remaining: Int { calls.count - served }

    /// The next recorded call's outputs, after checking that it is a call of `stage` with these inputs.
    func serve(stage: String, inputs: [String: Tensor]) throws -> [String: Tensor] {
        guard served < calls.count else {
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "call \(served + 1) of a recording of \(calls.count) calls")
        }
        let call = calls[served]
        guard call.stage == stage else {
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "call \(served + 1) was of '\(call.stage)' in the recording")
        }
        guard Set(inputs.keys) == Set(call.inputs.keys) else {
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "call \(served + 1) inputs \(inputs.keys.sorted()), recorded \(call.inputs.keys.sorted())")
        }
        for (name, recorded) in call.inputs {
            let given = inputs[name]!
            guard given.shape == recorded.shape, given.dtype == recorded.dtype else {
                throw EdgeTAMError.runnerFailed(stage: stage, reason: "call \(served + 1) input '\(name)' is \(given.dtype) \(given.shape), recorded \(recorded.dtype) \(recorded.shape)")
            }
            switch (given.storage, recorded.storage) {
            case let (.int32(a), .int32(b)):
                if let index = a.indices.first(where: { a[$0] != b[$0] }) {
                    throw EdgeTAMError.runnerFailed(stage: stage, reason: "call \(served + 1) input '\(name)'[\(index)] is \(a[index]), recorded \(b[index])")
                }
            case let (.float32(a), .float32(b)):
                // A NaN on either side is a difference (`abs(NaN) > worst` is false and would pass it by).
                var worst: Float = 0, at = 0
                for index in a.indices {
                    let difference = a[index].isNaN != b[index].isNaN ? Float.infinity : a[index].isNaN ? 0 : abs(a[index] - b[index])
                    if difference > worst { worst = difference; at = index }
                }
                largestFloatDifference = max(largestFloatDifference, worst)
                if worst > tolerance {
                    throw EdgeTAMError.runnerFailed(stage: stage, reason: "call \(served + 1) input '\(name)'[\(at)] is \(a[at]), recorded \(b[at])")
                }
            default:
                break  // dtypes are equal (checked above)
            }
        }
        served += 1
        return call.outputs
    }
}

/// A `StageRunner` that serves one stage of a `ReplaySession`.
public struct ReplayStageRunner: StageRunner {
    public let spec: StageSpec
    let session: ReplaySession

    public init(spec: StageSpec, session: ReplaySession) {
        self.spec = spec
        self.session = session
    }

    public func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor] {
        _ = try spec.checkInputs(inputs)
        return try await session.serve(stage: spec.name, inputs: inputs)
    }
}

extension Data {
    /// The bytes read as little-endian values (as NumPy writes `<f4` and `<i4`).
    func littleEndianValues<T: FixedWidthInteger>(of type: T.Type) -> [T] {
        let count = self.count / MemoryLayout<T>.size
        return withUnsafeBytes { raw in (0 ..< count).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) } }
    }

    func littleEndianValues(of type: Float.Type) -> [Float] {
        littleEndianValues(of: UInt32.self).map(Float.init(bitPattern:))
    }
}
