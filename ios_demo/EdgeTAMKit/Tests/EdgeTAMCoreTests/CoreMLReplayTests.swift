#if canImport(CoreML)
import EdgeTAMCoreML
import Foundation
import Testing
@testable import EdgeTAMCore
import EdgeTAMTestSupport

/// The recorded Python sessions played through the real Core ML runner on the tiny `coreml-fp16` bundle exported
/// from the same weights (macOS only; `.github/workflows/apple.yml`). fp16 on Core ML is not bit-exact with the
/// fp32 ONNX bundle Python ran, so masks are compared by IoU: at least 0.98 on every step and frame.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] != nil,
                "run through tests/test_swift_kit.py or the macOS workflow, which record the sessions first"))
struct CoreMLReplayTests {
    static let minimumIoU = 0.98
    let root = URL(fileURLWithPath: ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] ?? "/")
    let units = try! ComputeUnitsChoice(manifestValue: ProcessInfo.processInfo.environment["EDGETAM_COMPUTE_UNITS"] ?? "CPU_ONLY")

    func loaded() async throws -> CoreMLBundle {
        let bundle = try EdgeTAMBundle.open(at: root.appendingPathComponent("coreml/bundle"))
        let cache = CompiledModelCache(directory: FileManager.default.temporaryDirectory.appendingPathComponent("edgetam-tests-\(UUID())"))
        return try await CoreMLBundle.load(bundle, computeUnits: units, cache: cache)
    }

    static func iou(_ a: some Sequence<UInt8>, _ b: some Sequence<UInt8>) -> Double {
        var inter = 0, union = 0
        for (x, y) in zip(a, b) { inter += (x != 0 && y != 0) ? 1 : 0; union += (x != 0 || y != 0) ? 1 : 0 }
        return union == 0 ? 1 : Double(inter) / Double(union)
    }

    @Test func imageSessionMatchesPythonThroughCoreML() async throws {
        let coreml = try await loaded()
        var worst = 1.0
        _ = try await ImageReplayTests.play(root.appendingPathComponent("image_session"), predictor: try coreml.predictor()) {
            number, _, prediction, expected in
            let iou = Self.iou(prediction.masks, expected)
            worst = min(worst, iou)
            #expect(iou >= Self.minimumIoU, "step \(number): mask IoU \(iou)")
        }
        print("Core ML (\(units.rawValue)) image session: worst mask IoU \(worst)")
    }

    @Test func trackingSessionMatchesPythonThroughCoreML() async throws {
        let coreml = try await loaded()
        let folder = root.appendingPathComponent("tracking_session")
        let (session, results) = try await TrackingReplayTests.play(folder, bundle: coreml.bundle,
                                                                    runners: coreml.stageRunners)
        #expect(results.map(\.frameIndex) == session.results.map(\.frame))
        var worst = 1.0
        for (result, expected) in zip(results, session.results) {
            let masks = [UInt8](try Data(contentsOf: folder.appendingPathComponent(expected.file)))
            let iou = Self.iou((0 ..< result.objectIds.count).flatMap { result.mask(object: $0) }, masks)
            worst = min(worst, iou)
            #expect(iou >= Self.minimumIoU, "frame \(expected.frame): mask IoU \(iou)")
        }
        print("Core ML (\(units.rawValue)) tracking session: \(results.count) frame results, worst mask IoU \(worst)")
    }
}
#endif
