import Foundation

/// Runs one stage of a bundle: named tensors in, named tensors out, as the stage contract says.
///
/// Every stage call of EdgeTAMKit goes through this protocol, so runners are swappable: the Core ML
/// runner (`.mlpackage`), the ExecuTorch runner (`.pte`, in its own package), or a `ReplayStageRunner`
/// that serves recorded outputs in tests. Implementations copy at their edge into `Tensor`.
public protocol StageRunner: Sendable {
    /// The contract this runner fulfils.
    var spec: StageSpec { get }
    /// Run the stage once; `inputs` holds every input of `spec` (all objects of the call together).
    func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor]
}

#if canImport(os)
import os

private let stageSignposter = OSSignposter(subsystem: "EdgeTAMKit", category: "StageRunner")
#endif

/// One stage over any number of objects: every stage call of the predictor and the tracker goes through here.
/// Inputs with the objects axis are split into chunks of `maxObjects` (an input of one row is shared by every
/// chunk, as one image's embedding is shared by its objects); each call first checks for cancellation, so a
/// cancelled task stops between stage calls, and on Apple platforms is an interval for Instruments' signposts.
public func runBatched(_ runner: any StageRunner, _ inputs: [String: Tensor], maxObjects: Int) async throws -> [String: Tensor] {
    let perObject = Set(runner.spec.inputs.filter(\.hasObjectsAxis).map(\.name))
    let count = inputs.filter { perObject.contains($0.key) }.map(\.value.shape[0]).max() ?? 1
    var parts: [String: [Tensor]] = [:]
    for start in stride(from: 0, to: count, by: maxObjects) {
        let chunk = start ..< min(start + maxObjects, count)
        var sliced = inputs
        for (name, value) in inputs where perObject.contains(name) {
            sliced[name] = value.shape[0] == 1 && count > 1
                ? Tensor.concatenate([Tensor](repeating: value, count: chunk.count)) : value.rows(chunk)
        }
        try Task.checkCancellation()
        #if canImport(os)
        let interval = stageSignposter.beginInterval("stage call", id: stageSignposter.makeSignpostID())
        defer { stageSignposter.endInterval("stage call", interval) }
        #endif
        for (name, value) in try await runner.run(sliced) { parts[name, default: []].append(value) }
    }
    return parts.mapValues(Tensor.concatenate)
}
