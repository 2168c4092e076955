import CExecuTorchModule
import EdgeTAMCore
import Foundation

/// Runs one `.pte` stage through ExecuTorch's C++ `Module` (via the C shim `CExecuTorchModule`), the runtime the
/// executorch wheel ships: the same program, kernels and XNNPACK delegate an Android or iOS app links, run by the
/// same EdgeTAMKit code the app runs. Tensors are copied at this edge, in the order of the stage contract.
///
/// A `Module` runs one call at a time; calls are serialized with a lock, hence `@unchecked Sendable`.
public final class ExecuTorchModuleRunner: StageRunner, @unchecked Sendable {
    public let spec: StageSpec
    private let module: OpaquePointer
    private let lock = NSLock()

    /// Load the `forward` method of one stage of `bundle` and check its declared tensors against the contract.
    public init(bundle: EdgeTAMBundle, stage: String) throws {
        try bundle.requireBackend("executorch", stage: stage, otherwise: "export an executorch-xnnpack recipe")
        guard bundle.manifest.recipe.delegate != "coreml" else {  // the wheel's runtime has no Core ML backend
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "'\(bundle.manifest.recipe.name)' delegates to Core ML, which runs on Apple platforms only; export an executorch-xnnpack recipe")
        }
        guard bundle.manifest.recipe.delegate != "openvino" else {  // an Intel CPU backend, not in the phone runtimes
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "'\(bundle.manifest.recipe.name)' delegates to OpenVINO, which edgetam-kit does not link; export an executorch-xnnpack recipe")
        }
        guard bundle.manifest.recipe.attention != "fused" else {  // llama::custom_sdpa lives in the LLM kernels
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "'\(bundle.manifest.recipe.name)' computes attention with ExecuTorch's LLM kernel llama::custom_sdpa, which edgetam-kit does not link; export it with attention = \"matmul\"")
        }
        spec = try bundle.spec(stage)
        let path = try bundle.artifactURL(stage).path
        var error = [CChar](repeating: 0, count: 512)
        guard let loaded = etm_module_load(path, &error, error.count) else {
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "\(Self.text(error)); re-export the bundle with this executorch version")
        }
        module = loaded
        try checkDeclaredTensors()  // on a throw, deinit frees the module
    }

    deinit { etm_module_free(module) }

    /// ExecuTorch's process-wide threadpool size (XNNPACK's kernels run on it), resized when `threads` is given and
    /// no program is loaded yet (XNNPACK keeps the pool it was set up with, so a later resize is refused).
    @discardableResult
    public static func threadpoolSize(_ threads: Int? = nil) -> Int { Int(etm_threadpool_size(UInt32(threads ?? 0))) }

    public func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor] {
        _ = try spec.checkInputs(inputs)
        let ordered = spec.inputs.map { inputs[$0.name]! }
        return try lock.withLock {
            var result: [String: Tensor] = [:]
            try Self.withBuffers(ordered) { tensors in
                var error = [CChar](repeating: 0, count: 512)
                guard etm_module_run(module, tensors, tensors.count, &error, error.count) == 0 else {
                    throw EdgeTAMError.runnerFailed(stage: spec.name, reason: Self.text(error))
                }
                // Copied while the inputs are still alive: an output may share memory with an input.
                for (index, output) in spec.outputs.enumerated() {
                    var tensor = etm_tensor()
                    guard etm_module_output(module, index, &tensor) == 0, tensor.dtype == ETM_FLOAT32, let data = tensor.data else {
                        throw EdgeTAMError.runnerFailed(stage: spec.name, reason: "output '\(output.name)' is not a float tensor; re-export the bundle")
                    }
                    let shape = Self.shape(tensor)
                    let floats = data.assumingMemoryBound(to: Float.self)
                    result[output.name] = Tensor(shape: shape, floats: Array(UnsafeBufferPointer(start: floats, count: shape.reduce(1, *))))
                }
            }
            return result
        }
    }

    /// The program's declared inputs and outputs against the contract (count, dtype, shape at `max_objects`): a
    /// swapped or stale artifact is refused at load, naming the tensor, instead of failing inside a kernel.
    private func checkDeclaredTensors() throws {
        let declaredInputs = etm_module_input_count(module), declaredOutputs = etm_module_output_count(module)
        guard declaredInputs == spec.inputs.count, declaredOutputs == spec.outputs.count else {
            throw EdgeTAMError.runnerFailed(stage: spec.name, reason: "the program has \(declaredInputs) inputs and \(declaredOutputs) outputs, the contract \(spec.inputs.count) and \(spec.outputs.count); re-export the bundle")
        }
        let declared: [(String, [TensorSpec], (OpaquePointer, Int, UnsafeMutablePointer<etm_tensor>) -> Int32)] = [
            ("input", spec.inputs, { etm_module_input_info($0, $1, $2) }),
            ("output", spec.outputs, { etm_module_output_info($0, $1, $2) }),
        ]
        for (role, contracts, read) in declared {
            for (index, contract) in contracts.enumerated() {
                var info = etm_tensor()
                _ = read(module, index, &info)
                try check(contract, info, role: role)
            }
        }
    }

    private func check(_ contract: TensorSpec, _ info: etm_tensor, role: String) throws {
        let dtype: Int32 = contract.dtype == .float32 ? Int32(ETM_FLOAT32) : Int32(ETM_INT32)
        let expected = contract.shape(objects: spec.maxObjects)
        guard info.dtype == dtype, Self.shape(info) == expected else {
            throw EdgeTAMError.runnerFailed(stage: spec.name, reason: "\(role) '\(contract.name)' is declared \(Self.shape(info)) (ScalarType \(info.dtype)), the contract \(expected) \(contract.dtype); re-export the bundle")
        }
    }

    /// `body` with the tensors as C descriptors pointing at their scalars, valid for the call only.
    private static func withBuffers(_ tensors: [Tensor], _ body: ([etm_tensor]) throws -> Void) throws {
        var described: [etm_tensor] = []
        func next(_ index: Int) throws {
            guard index < tensors.count else { return try body(described) }
            let tensor = tensors[index]
            var info = etm_tensor()
            info.rank = Int32(tensor.shape.count)
            withUnsafeMutableBytes(of: &info.shape) { raw in
                let sizes = raw.bindMemory(to: Int64.self)
                for (axis, size) in tensor.shape.enumerated() { sizes[axis] = Int64(size) }
            }
            func pass<Scalar>(_ scalars: [Scalar], as dtype: Int32) throws {
                try scalars.withUnsafeBufferPointer { buffer in
                    info.dtype = dtype
                    info.data = UnsafeRawPointer(buffer.baseAddress)
                    described.append(info)
                    try next(index + 1)
                }
            }
            switch tensor.storage {
            case let .float32(scalars): try pass(scalars, as: Int32(ETM_FLOAT32))
            case let .int32(scalars): try pass(scalars, as: Int32(ETM_INT32))
            }
        }
        try next(0)
    }

    private static func shape(_ tensor: etm_tensor) -> [Int] {
        withUnsafeBytes(of: tensor.shape) { raw in Array(raw.bindMemory(to: Int64.self).prefix(Int(tensor.rank)).map { Int($0) }) }
    }

    private static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Every stage of an ExecuTorch bundle on the C++ runtime, wired into EdgeTAMKit's predictor and tracker.
public struct ExecuTorchModuleBundle: LoadedBundle {
    public let bundle: EdgeTAMBundle
    public let runners: [String: ExecuTorchModuleRunner]

    public init(_ bundle: EdgeTAMBundle, stages: [String]? = nil) throws {
        self.bundle = bundle
        var runners: [String: ExecuTorchModuleRunner] = [:]
        for stage in stages ?? bundle.manifest.stageNames { runners[stage] = try ExecuTorchModuleRunner(bundle: bundle, stage: stage) }
        self.runners = runners
    }
}
