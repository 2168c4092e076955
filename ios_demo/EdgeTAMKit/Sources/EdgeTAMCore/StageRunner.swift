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

/// Loading and releasing a stage's model (ml-stable-diffusion's `ResourceManaging`): an app releases stages on a
/// memory warning, and the next call loads them again.
public protocol ResourceManaging: Sendable {
    func loadResources() async throws
    func unloadResources() async
}

/// A stage whose engine (a Core ML model, an ExecuTorch module) is created on first use and can be released:
/// `unloadResources()` drops it, the next `run` loads it again through `load`.
public actor ManagedStageRunner: StageRunner, ResourceManaging {
    public nonisolated let spec: StageSpec
    private let load: @Sendable () async throws -> any StageRunner
    private var loaded: (any StageRunner)?
    /// How many times the engine was loaded (after each release, once more).
    public private(set) var loads = 0

    public init(spec: StageSpec, load: @escaping @Sendable () async throws -> any StageRunner) {
        self.spec = spec
        self.load = load
    }

    public var isLoaded: Bool { loaded != nil }

    public func loadResources() async throws { _ = try await engine() }

    public func unloadResources() { loaded = nil }

    public func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor] {
        try await engine().run(inputs)
    }

    private func engine() async throws -> any StageRunner {
        if let loaded { return loaded }
        let runner = try await load()
        loaded = runner
        loads += 1
        return runner
    }
}
