import Foundation
import Testing
@testable import EdgeTAMCore
import EdgeTAMTestSupport

/// The Python runtime's tracking session (`record_tracking_session` in tests/test_swift_kit.py), replayed: a click,
/// a box for a second object, a correction, a mask prompt and a reverse pass over 30 frames of videos/bedroom.
/// The replays need the Python fixtures (`EDGETAM_PYTHON_FIXTURES`); the bad-input tests beside them run anywhere, on
/// the model-free stage contracts of `TrackerBankTests`.
@Suite
struct TrackingReplayTests {
    let folder = URL(fileURLWithPath: ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] ?? "/")
        .appendingPathComponent("tracking_session")

    struct Session: Decodable {
        struct Step: Decodable {
            let op: String
            let frame: Int?
            let object: Int?
            let clicks: [[Double]]?
            let box: [Double]?
            let mask_file: String?
            let start: Int?
            let max_frames: Int?
            let reverse: Bool?
        }
        struct Result: Decodable { let frame: Int; let objects: [Int]; let file: String; let object_scores: [Float] }
        let width: Int
        let height: Int
        let frames: Int
        let steps: [Step]
        let results: [Result]
        let calls: Int
    }

    /// Play the recorded steps through a tracker built on `runners`; returns every frame result, in order.
    static func play(_ folder: URL, bundle: EdgeTAMBundle, runners: [String: any StageRunner]) async throws -> (Session, [FrameResult]) {
        let session = try JSONDecoder().decode(Session.self, from: Data(contentsOf: folder.appendingPathComponent("session.json")))
        let frames = try FramesInMemory((0 ..< session.frames).map { index in
            try RGBImage(width: session.width, height: session.height,
                         pixels: [UInt8](try Data(contentsOf: folder.appendingPathComponent("frames/\(index).rgb"))))
        })
        let tracking = try EdgeTAMTracker(shapes: bundle.manifest.shapes, settings: bundle.manifest.tracking, runners: runners)
            .initSession(frames)
        var results: [FrameResult] = []
        for step in session.steps {
            switch step.op {
            case "prompt":
                try await tracking.addPrompt(frame: step.frame!, object: step.object!,
                                             clicks: step.clicks!.map { Click(x: $0[0], y: $0[1], positive: $0[2] == 1) },
                                             box: step.box.map { Box(x0: $0[0], y0: $0[1], x1: $0[2], y1: $0[3]) })
            case "mask":
                try await tracking.addMask(frame: step.frame!, object: step.object!,
                                           mask: [UInt8](try Data(contentsOf: folder.appendingPathComponent(step.mask_file!))))
            case "run":
                results.append(try await tracking.runFrame(step.frame!))
            default:
                try await tracking.propagate(from: step.start, maxFrames: step.max_frames, reverse: step.reverse ?? false) {
                    results.append($0)
                }
            }
        }
        return (session, results)
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] != nil,
                   "run through tests/test_swift_kit.py, which records the session first"))
    func replaysThePythonTrackingSession() async throws {
        let bundle = try EdgeTAMBundle.open(at: folder.deletingLastPathComponent().appendingPathComponent("onnx/bundle"))
        let replay = try ReplaySession.load(from: folder)
        var runners: [String: any StageRunner] = [:]
        for stage in EdgeTAMTracker.trackingStages + [EdgeTAMTracker.maskPromptStage] {
            runners[stage] = ReplayStageRunner(spec: try bundle.spec(stage), session: replay)
        }
        let (session, results) = try await Self.play(folder, bundle: bundle, runners: runners)
        #expect(results.count == session.results.count)
        // The stage outputs are Python's own, bit for bit; only the upsampling to the video's size is Swift's, so
        // a mask pixel may differ only where the upsampled logit sits on the threshold (float rounding decides it).
        var pixels = 0, differing = 0, offThreshold = 0
        for (result, expected) in zip(results, session.results) {
            #expect(result.frameIndex == expected.frame && result.objectIds == expected.objects)
            #expect(result.objectScoreLogits == expected.object_scores, "frame \(expected.frame)")
            let masks = [UInt8](try Data(contentsOf: folder.appendingPathComponent(expected.file)))
            let m = result.maskLogits.shape[1], plane = m * m, values = result.maskLogits.floats
            let logits = (0 ..< result.objectIds.count).flatMap {
                ImageProcessing.resizeLogits(values[$0 * plane ..< ($0 + 1) * plane], inHeight: m, inWidth: m,
                                             height: result.height, width: result.width)
            }
            // The masks the API gives (`FrameResult.mask(object:)`) against Python's; the logits only say whether a
            // differing pixel sits on the threshold.
            let swiftMasks = (0 ..< result.objectIds.count).flatMap { result.mask(object: $0) }
            #expect(swiftMasks.count == masks.count && logits.count == masks.count)
            pixels += masks.count
            for (index, pythonPixel) in masks.enumerated() where swiftMasks[index] != pythonPixel {
                let logit = logits[index]
                differing += 1
                offThreshold += abs(logit) < 1e-4 ? 0 : 1
            }
        }
        #expect(offThreshold == 0 && differing * 1_000_000 <= pixels,
                "\(differing) of \(pixels) mask pixels differ, \(offThreshold) of them with |logit| >= 1e-4")
        #expect(await replay.remaining == 0 && session.calls == replay.calls.count)
        let largest = await replay.largestFloatDifference
        print("replayed \(replay.calls.count) stage calls of \(results.count) frame results; largest float input difference \(largest)")
    }

    /// Bad input gives a typed error and leaves the session as it was: no stage is called, no object added.
    @Test func badInputChangesNothing() async throws {
        let empty = ReplaySession(calls: [])  // any stage call would throw "call 1 of a recording of 0 calls"
        let stages = TrackerBankTests.FrameIndexStages().runners()
        var runners: [String: any StageRunner] = [:]
        for stage in EdgeTAMTracker.trackingStages { runners[stage] = ReplayStageRunner(spec: stages[stage]!.spec, session: empty) }
        let frames = try FramesInMemory([try RGBImage(width: 8, height: 6, pixels: [UInt8](repeating: 9, count: 8 * 6 * 3))])
        let tracking = try EdgeTAMTracker(shapes: TrackerBankTests.shapes, settings: TrackingSettings(), runners: runners).initSession(frames)
        await #expect(throws: EdgeTAMError.promptOutsideImage(x: 9, y: 1, width: 8, height: 6)) {
            try await tracking.addPrompt(frame: 0, object: 1, clicks: [Click(x: 9, y: 1)])
        }
        await #expect(throws: EdgeTAMError.frameOutOfRange(frame: 3, count: 1)) {
            try await tracking.addPrompt(frame: 3, object: 1, clicks: [Click(x: 1, y: 1)])
        }
        await #expect(throws: EdgeTAMError.invalidBox([5, 1, 2, 3])) {
            try await tracking.addPrompt(frame: 0, object: 1, box: Box(x0: 5, y0: 1, x1: 2, y1: 3))
        }
        await #expect(throws: EdgeTAMError.unknownStage(EdgeTAMTracker.maskPromptStage)) {
            try await tracking.addMask(frame: 0, object: 1, mask: [UInt8](repeating: 1, count: 48))
        }
        await #expect(throws: EdgeTAMError.notPrompted(object: nil)) { try await tracking.runFrame(0) }
        #expect(await tracking.objectIds.isEmpty && empty.calls.isEmpty)
        #expect(await empty.served == 0)
    }
}
