import EdgeTAMCore
import ExecuTorch
import Foundation

/// Runs one `.pte` stage of an ExecuTorch bundle through ExecuTorch's `Module` (XNNPACK or Core ML delegate,
/// whichever the program was lowered to). Tensors are copied at this edge: EdgeTAMKit's contiguous `Tensor` in,
/// ExecuTorch tensors' scalars out, in the order of the stage contract.
///
/// An ExecuTorch `Module` runs one call at a time; calls are serialized with a lock, hence `@unchecked Sendable`.
public final class ExecuTorchStageRunner: StageRunner, @unchecked Sendable {
    public let spec: StageSpec
    private let module: Module
    private let lock = NSLock()

    /// Load the `forward` method of one stage of `bundle`.
    public init(bundle: EdgeTAMBundle, stage: String) throws {
        try bundle.requireBackend("executorch", stage: stage, otherwise: "use EdgeTAMCoreML for .mlpackage bundles")
        spec = try bundle.spec(stage)
        module = Module(filePath: try bundle.artifactURL(stage).path)
        do {
            try module.load("forward")
        } catch {
            throw EdgeTAMError.runnerFailed(
                stage: stage,
                reason: "ExecuTorch cannot load it (\(error.localizedDescription)); link the app with -all_load and the backends the recipe uses")
        }
    }

    public func run(_ inputs: [String: EdgeTAMCore.Tensor]) async throws -> [String: EdgeTAMCore.Tensor] {
        _ = try spec.checkInputs(inputs)
        let values: [Value] = spec.inputs.map { input in
            let tensor = inputs[input.name]!
            switch tensor.storage {
            case let .float32(scalars): return Value(ExecuTorch.Tensor<Float>(scalars, shape: tensor.shape))
            case let .int32(scalars): return Value(ExecuTorch.Tensor<Int32>(scalars, shape: tensor.shape))
            }
        }
        let outputs: [Value]
        do {
            outputs = try lock.withLock { try module.forward(values) }
        } catch {
            throw EdgeTAMError.runnerFailed(stage: spec.name, reason: error.localizedDescription)
        }
        guard outputs.count == spec.outputs.count else {
            throw EdgeTAMError.runnerFailed(stage: spec.name,
                                            reason: "the program returned \(outputs.count) outputs, the contract \(spec.outputs.count); re-export the bundle")
        }
        var result: [String: EdgeTAMCore.Tensor] = [:]
        for (output, value) in zip(spec.outputs, outputs) {
            guard let floats: ExecuTorch.Tensor<Float> = value.tensor() else {
                throw EdgeTAMError.runnerFailed(stage: spec.name, reason: "output '\(output.name)' is not a float tensor; re-export the bundle")
            }
            result[output.name] = EdgeTAMCore.Tensor(shape: floats.shape, floats: floats.scalars())
        }
        return result
    }
}

/// Every stage of an ExecuTorch bundle, wired into EdgeTAMKit's predictor and tracker.
public struct ExecuTorchBundle: LoadedBundle {
    public let bundle: EdgeTAMBundle
    public let runners: [String: ExecuTorchStageRunner]

    public init(_ bundle: EdgeTAMBundle) throws {
        self.bundle = bundle
        var runners: [String: ExecuTorchStageRunner] = [:]
        for stage in bundle.manifest.stageNames { runners[stage] = try ExecuTorchStageRunner(bundle: bundle, stage: stage) }
        self.runners = runners
    }
}
