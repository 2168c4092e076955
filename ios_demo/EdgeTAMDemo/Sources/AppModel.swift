import EdgeTAMCore
import EdgeTAMCoreML
import EdgeTAMExecuTorch
import Foundation
import Observation

/// The bundle the app runs and the runners for it, shared by every tab.
///
/// The bundle is `Documents/EdgeTAMBundle` when the user copied one there (Finder or the Files app), else the one
/// built into the app (`Bundle/`, copied in by `edgetam-export copy-bundle`). Every artifact's checksum is
/// verified against the manifest on load: a truncated copy is refused with the fix, never run.
@MainActor @Observable
final class AppModel {
    private(set) var bundle: EdgeTAMBundle?
    private(set) var runners: [String: any StageRunner] = [:]
    private(set) var runtime: DeviceRun.Runtime?
    private(set) var status = "loading the bundle…"
    var problem: String?

    static var bundleLocations: [URL] {
        let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
        return [documents.appendingPathComponent("EdgeTAMBundle"), Bundle.main.url(forResource: "Bundle", withExtension: nil)]
            .compactMap { $0 }
    }

    func load(computeUnits: ComputeUnitsChoice? = nil) async {
        guard let url = Self.bundleLocations.first(where: { FileManager.default.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }) else {
            problem = "no bundle: run 'edgetam-export copy-bundle <bundle> ios_demo/EdgeTAMDemo/Bundle' and rebuild, or copy one to Documents/EdgeTAMBundle"
            return
        }
        do {
            let opened = try await Task.detached { try EdgeTAMBundle.open(at: url, verifyChecksums: true) }.value
            switch opened.manifest.recipe.backend {
            case "coreml":
                let loaded = try await CoreMLBundle.load(opened, computeUnits: computeUnits)
                runners = loaded.stageRunners
                let units = try computeUnits ?? ComputeUnitsChoice(manifestValue: opened.manifest.recipe.computeUnits)
                runtime = .init(name: "coreml", version: ProcessInfo.processInfo.operatingSystemVersionString,
                                computeUnits: units.deviceRunName)
            case "executorch":
                let loaded = try await Task.detached { try ExecuTorchBundle(opened) }.value
                runners = loaded.stageRunners
                runtime = .init(name: "executorch", version: "1.5.1")
            default:
                throw EdgeTAMError.runnerFailed(stage: "bundle", reason: "the app runs coreml-* and executorch-* bundles, not \(opened.manifest.recipe.backend)")
            }
            bundle = opened
            status = "\(opened.manifest.recipe.name): \(opened.manifest.stageNames.count) stages, checksums verified"
            problem = nil
        } catch {
            problem = "\(error)"
        }
    }

    func predictor() throws -> EdgeTAMPredictor {
        guard let bundle else { throw EdgeTAMError.bundleNotFound(path: "EdgeTAMBundle") }
        return try bundle.predictor(runners: runners)
    }

    func tracker() throws -> EdgeTAMTracker {
        guard let bundle else { throw EdgeTAMError.bundleNotFound(path: "EdgeTAMBundle") }
        return try bundle.tracker(runners: runners)
    }
}
