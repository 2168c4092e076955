#if canImport(CoreML)
import EdgeTAMCore
import Foundation

/// A Core ML bundle's stages loaded as `CoreMLStageRunner`s, wired into EdgeTAMKit's predictor and tracker.
public struct CoreMLBundle: LoadedBundle {
    public let bundle: EdgeTAMBundle
    public let runners: [String: CoreMLStageRunner]

    /// Load every stage of a `coreml-*` bundle (compiled once, then from the cache).
    public static func load(_ bundle: EdgeTAMBundle, computeUnits: ComputeUnitsChoice? = nil,
                            cache: CompiledModelCache = .applicationSupport) async throws -> CoreMLBundle {
        try bundle.requireBackend("coreml", stage: "bundle", otherwise: "use EdgeTAMExecuTorch for .pte bundles or export a coreml-* recipe")
        var runners: [String: CoreMLStageRunner] = [:]
        for stage in bundle.manifest.stageNames {
            runners[stage] = try await CoreMLStageRunner.load(bundle: bundle, stage: stage, computeUnits: computeUnits, cache: cache)
        }
        return CoreMLBundle(bundle: bundle, runners: runners)
    }

    /// Every stage as a `ManagedStageRunner`: compiled and loaded on first use, released by `unloadResources()` (call
    /// it on a memory warning; the next call loads the stage again, from the compiled-model cache).
    public static func managedRunners(_ bundle: EdgeTAMBundle, computeUnits: ComputeUnitsChoice? = nil,
                                      cache: CompiledModelCache = .applicationSupport) throws -> [String: ManagedStageRunner] {
        var runners: [String: ManagedStageRunner] = [:]
        for stage in bundle.manifest.stageNames {
            runners[stage] = ManagedStageRunner(spec: try bundle.spec(stage)) {
                try await CoreMLStageRunner.load(bundle: bundle, stage: stage, computeUnits: computeUnits, cache: cache)
            }
        }
        return runners
    }
}
#endif
