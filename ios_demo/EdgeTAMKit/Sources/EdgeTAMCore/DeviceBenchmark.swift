import Foundation

/// The on-device benchmark of the demo app, on whatever runners it is given (Core ML, ExecuTorch): each stage
/// timed alone for 1/2/4/8 objects on inputs of its contract, and video frames per second through the tracker.
/// The results go into a `DeviceRun` (`device_run.schema.json`), which `edgetam-export bench import` merges.
public struct DeviceBenchmark: Sendable {
    public let shapes: StageShapes
    public let runners: [String: any StageRunner]
    /// Untimed calls before the timed ones (Core ML compiles kernels and warms caches on the first calls).
    public var warmup = 3
    public var runs = 20
    /// Seconds on a monotonic clock.
    public var clock: @Sendable () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    public init(shapes: StageShapes, runners: [String: any StageRunner]) {
        self.shapes = shapes
        self.runners = runners
    }

    /// The stages a tracked frame runs, timed alone. The image encoder has no objects axis: one row.
    public static let timedStages = ["image_encoder", "prompt_decoder", "memory_encoder", "memory_attention"]

    /// Inputs of a stage contract for `objects` objects: deterministic values in [-1, 1) (0 to 255 for an image
    /// input), labels cycling through positive, negative and empty slots. Latency does not depend on the values.
    public static func syntheticInputs(_ spec: StageSpec, objects: Int) -> [String: Tensor] {
        var state: UInt32 = 12345
        func next() -> Float {
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(state >> 8) / Float(1 << 24) * 2 - 1
        }
        var inputs: [String: Tensor] = [:]
        for input in spec.inputs {
            let shape = input.shape(objects: objects), count = shape.reduce(1, *)
            switch input.dtype {
            case .int32:
                inputs[input.name] = Tensor(shape: shape, ints: (0 ..< count).map { [1, 0, -10][$0 % 3] })
            case .float32:
                let scale: Float = input.name == ImageProcessing.imageInputName ? 127.5 : 1
                inputs[input.name] = Tensor(shape: shape, floats: (0 ..< count).map { _ in (next() + 1) * scale - (scale == 1 ? 1 : 0) })
            }
        }
        return inputs
    }

    /// Latency of each stage for each object count (counts above the bundle's `max_objects` are skipped).
    public func timeStages(objects counts: [Int] = [1, 2, 4, 8]) async throws -> [DeviceRun.StageTiming] {
        var timings: [DeviceRun.StageTiming] = []
        for stage in Self.timedStages {
            guard let runner = runners[stage] else { throw EdgeTAMError.unknownStage(stage) }
            let hasObjects = runner.spec.inputs.contains(where: \.hasObjectsAxis)
            for objects in hasObjects ? counts.filter({ $0 <= shapes.maxObjects }) : [1] {
                let inputs = Self.syntheticInputs(runner.spec, objects: objects)
                for _ in 0 ..< warmup { _ = try await runner.run(inputs) }
                var milliseconds: [Double] = []
                for _ in 0 ..< runs {
                    let start = clock()
                    _ = try await runner.run(inputs)
                    milliseconds.append((clock() - start) * 1000)
                }
                timings.append(.init(stage: stage, objects: objects, stats: LatencyStats(milliseconds: milliseconds)))
            }
        }
        return timings
    }

    /// Frames per second tracking `objects` objects, each clicked on frame 0 at a point of a grid, over the
    /// frames after the first `warmupFrames` tracked ones (the first frames hold fewer memories).
    public func timeVideo(frames: any FrameSource, settings: TrackingSettings, objects counts: [Int] = [1, 2, 4, 8],
                          warmupFrames: Int = 8) async throws -> [DeviceRun.VideoTiming] {
        let tracker = try VideoTracker(shapes: shapes, settings: settings, runners: runners)
        var timings: [DeviceRun.VideoTiming] = []
        for objects in counts {
            let session = try tracker.session(frames)
            for id in 1 ... objects {
                let x = Double(frames.width) * (Double((id - 1) % 4) + 0.5) / 4
                let y = Double(frames.height) * (Double((id - 1) / 4) + 0.5) / 2
                try await session.addPrompt(frame: 0, object: id, clicks: [Click(x: x, y: y)])
                _ = try await session.runFrame(0)
            }
            var stamps: [Double] = []
            try await session.propagate(from: 1) { _ in stamps.append(clock()) }
            guard stamps.count > warmupFrames + 1 else {
                throw EdgeTAMError.inputMismatch(stage: "video", input: "frames",
                                                 reason: "\(frames.count) frames are too few to time after \(warmupFrames) warm-up frames")
            }
            let timed = stamps.count - 1 - warmupFrames
            timings.append(.init(objects: objects, frames: timed, fps: Double(timed) / (stamps.last! - stamps[warmupFrames])))
        }
        return timings
    }
}
