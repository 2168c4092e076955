#if canImport(CoreML)
import EdgeTAMCore
import Foundation

/// A Core ML bundle's stages loaded as `CoreMLStageRunner`s, wired into EdgeTAMKit's predictor and tracker.
public struct CoreMLBundle: Sendable {
    public let bundle: EdgeTAMBundle
    public let runners: [String: CoreMLStageRunner]

    /// Load every stage of a `coreml-*` bundle (compiled once, then from the cache).
    public static func load(_ bundle: EdgeTAMBundle, computeUnits: ComputeUnitsChoice? = nil,
                            cache: CompiledModelCache = .applicationSupport) async throws -> CoreMLBundle {
        guard bundle.manifest.recipe.backend == "coreml" else {
            throw EdgeTAMError.runnerFailed(
                stage: "bundle",
                reason: "'\(bundle.manifest.recipe.name)' is a \(bundle.manifest.recipe.backend) bundle; use EdgeTAMExecuTorch for .pte bundles or export a coreml-* recipe")
        }
        var runners: [String: CoreMLStageRunner] = [:]
        for stage in bundle.manifest.stageNames {
            runners[stage] = try await CoreMLStageRunner.load(bundle: bundle, stage: stage, computeUnits: computeUnits, cache: cache)
        }
        return CoreMLBundle(bundle: bundle, runners: runners)
    }

    /// The runners as EdgeTAMKit's protocol type.
    public var stageRunners: [String: any StageRunner] { runners.mapValues { $0 as any StageRunner } }

    public func predictor() throws -> Predictor { try bundle.predictor(runners: stageRunners) }

    public func tracker(maxTrackedObjects: Int = 64) throws -> VideoTracker {
        try bundle.tracker(runners: stageRunners, maxTrackedObjects: maxTrackedObjects)
    }
}
#endif
