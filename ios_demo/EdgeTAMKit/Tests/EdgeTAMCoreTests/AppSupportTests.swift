import Foundation
import Testing
@testable import EdgeTAMCore

/// What the demo app builds on, without a model: the device benchmark (its timings and the JSON `bench import`
/// reads), camera frames held in bounded memory, and mask overlays.
struct AppSupportTests {
    /// A clock that advances 2 ms per reading: timings become exact.
    final class SteppingClock: @unchecked Sendable {
        private let lock = NSLock()
        private var now = 0.0
        func read() -> Double { lock.withLock { now += 0.002; return now } }
    }

    func benchmark() -> DeviceBenchmark {
        var benchmark = DeviceBenchmark(shapes: TrackerBankTests.shapes, runners: TrackerBankTests.FrameIndexStages().runners())
        let clock = SteppingClock()
        benchmark.clock = { clock.read() }
        benchmark.warmup = 1
        benchmark.runs = 3
        return benchmark
    }

    @Test func stagesAreTimedPerObjectCountWithinTheBundleCapacity() async throws {
        let timings = try await benchmark().timeStages(objects: [1, 2, 4, 8])
        let maxObjects = TrackerBankTests.shapes.maxObjects
        let expected = [1, 2, 4, 8].filter { $0 <= maxObjects }
        #expect(timings.filter { $0.stage == "image_encoder" }.map(\.objects) == [1])
        for stage in ["prompt_decoder", "memory_encoder", "memory_attention"] {
            #expect(timings.filter { $0.stage == stage }.map(\.objects) == expected)
        }
        #expect(timings.allSatisfy { $0.runs == 3 && abs($0.p50Ms - 2) < 1e-9 && abs($0.meanMs - 2) < 1e-9 })
    }

    @Test func syntheticInputsFollowTheContract() throws {
        let spec = TrackerBankTests.spec("prompt_decoder", [("point_coords", [.objects, .fixed(8), .fixed(2)], .float32),
                                                           ("point_labels", [.objects, .fixed(8)], .int32)], [("m", [.objects])])
        let inputs = DeviceBenchmark.syntheticInputs(spec, objects: 2)
        #expect(try spec.checkInputs(inputs) == 2)
        #expect(inputs["point_coords"]!.floats.allSatisfy { -1 <= $0 && $0 < 1 })
        #expect(Set(inputs["point_labels"]!.ints) == [1, 0, -10])
    }

    @Test func videoIsTimedAfterWarmUpFramesAndWrittenAsADeviceRun() async throws {
        let bench = benchmark()
        let video = try await bench.timeVideo(frames: try TrackerBankTests.video(20), settings: TrackingSettings(),
                                              objects: [1, 2], warmupFrames: 4)
        // 19 propagated frames, 4 of them warm-up. The clock steps 2 ms per reading: a stage call spans one step
        // (in the runner), and the frame stamp and the step before each call are host time.
        #expect(video.map(\.objects) == [1, 2] && video.allSatisfy { $0.frames == 15 })
        for timing in video {
            let runner = try #require(timing.runnerMsPerFrame), host = try #require(timing.hostMsPerFrame)
            #expect(abs(runner + host - 1000 / timing.fps) < 1e-6 && abs(host - runner - 2) < 1e-6)
        }
        await #expect(throws: EdgeTAMError.self) {
            try await bench.timeVideo(frames: try TrackerBankTests.video(5), settings: TrackingSettings(), objects: [1])
        }
        // The JSON the app shares; tests/test_swift_kit.py validates it and merges it with `bench import`.
        guard let fixtures = ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] else { return }
        let bundle = try EdgeTAMBundle.open(at: URL(fileURLWithPath: fixtures).appendingPathComponent("onnx/bundle"))
        let run = DeviceRun(bundle: bundle, device: .init(model: "Linux-test", os: "swift test"),
                            runtime: .init(name: "coreml", version: "test", computeUnits: ComputeUnitsChoice.all.deviceRunName),
                            stages: try await bench.timeStages(), video: video, peakMemoryMB: 12.5)
        try run.json().write(to: URL(fileURLWithPath: fixtures).appendingPathComponent("device_run.json"))
    }

    @Test func runnersAreWiredByStageName() throws {
        let synthetic = try SyntheticBundle()
        defer { synthetic.remove() }
        let bundle = try EdgeTAMBundle.open(at: synthetic.url)
        let runners = TrackerBankTests.FrameIndexStages().runners()
        #expect(throws: EdgeTAMError.unknownStage("prompt_decoder")) {
            try bundle.predictor(runners: runners.filter { $0.key != "prompt_decoder" })
        }
        #expect(try bundle.predictor(runners: runners).shapes == bundle.manifest.shapes)
        #expect(throws: EdgeTAMError.unknownStage("memory_attention")) {
            try bundle.tracker(runners: runners.filter { $0.key != "memory_attention" })
        }
    }

    @Test func liveFramesKeepOnlyTheNewest() async throws {
        let frames = LiveFrames(width: 2, height: 1, capacity: 3)
        for value in 0 ..< 10 {
            #expect(try frames.append(try RGBImage(width: 2, height: 1, pixels: [UInt8](repeating: UInt8(value), count: 6))) == value)
        }
        #expect(frames.count == 10 && frames.heldFrames == 3)
        let newest = try await frames.frame(9), oldestKept = try await frames.frame(7)
        #expect(newest.pixels[0] == 9 && oldestKept.pixels[0] == 7)
        await #expect(throws: EdgeTAMError.frameOutOfRange(frame: 6, count: 10)) { try await frames.frame(6) }
        #expect(throws: EdgeTAMError.self) { try frames.append(try RGBImage(width: 1, height: 1, pixels: [0, 0, 0])) }
    }

    @Test func overlaysBlendEachObjectInItsColour() throws {
        let picture = try RGBImage(width: 2, height: 1, pixels: [100, 100, 100, 0, 0, 0])
        let rgba = MaskOverlay.rgba(picture: picture, masks: [[1, 0], [1, 1]], colorIndices: [0, 1], alpha: 0.5)
        let second = MaskOverlay.palette[1]
        #expect(rgba.count == 8 && rgba[3] == 255 && rgba[7] == 255)
        // Both masks cover pixel 0: the later object wins; pixel 1 only the second object.
        #expect(Array(rgba[0 ..< 3]) == second.map { UInt8((Float($0) * 0.5 + 50).rounded()) })
        #expect(Array(rgba[4 ..< 7]) == second.map { UInt8((Float($0) * 0.5).rounded()) })
        #expect(Array(MaskOverlay.rgba(picture: picture, masks: [], alpha: 0.5)[0 ..< 3]) == [100, 100, 100])
    }
}
