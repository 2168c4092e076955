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
    public var clock: @Sendable () -> Double = monotonicSeconds

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
    /// frames after the first `warmupFrames` tracked ones (the first frames hold fewer memories). Each timing also
    /// splits the frame into time inside the runners and host time around them.
    public func timeVideo(frames: any FrameSource, settings: TrackingSettings, objects counts: [Int] = [1, 2, 4, 8],
                          warmupFrames: Int = 8) async throws -> [DeviceRun.VideoTiming] {
        let times = StageTimes(clock: clock)
        let tracker = try EdgeTAMTracker(shapes: shapes, settings: settings, runners: runners.mapValues { TimedStageRunner($0, times: times) })
        var timings: [DeviceRun.VideoTiming] = []
        for objects in counts {
            let session = try tracker.initSession(frames)
            for id in 1 ... objects {
                let x = Double(frames.width) * (Double((id - 1) % 4) + 0.5) / 4
                let y = Double(frames.height) * (Double((id - 1) / 4) + 0.5) / 2
                try await session.addPrompt(frame: 0, object: id, clicks: [Click(x: x, y: y)])
                _ = try await session.runFrame(0)
            }
            // stamps[0] before the first tracked frame, stamps[i] after the i-th: the frames after `warmupFrames` are timed.
            var stamps = [clock()], inRunners = [times.total]
            try await session.propagate(from: 1) { _ in
                stamps.append(clock())
                inRunners.append(times.total)
            }
            let tracked = stamps.count - 1
            guard tracked > warmupFrames else {
                throw EdgeTAMError.inputMismatch(stage: "video", input: "frames",
                                                 reason: "\(frames.count) frames are too few to time after \(warmupFrames) warm-up frames")
            }
            let timed = tracked - warmupFrames
            let seconds = stamps[tracked] - stamps[warmupFrames], runnerSeconds = inRunners[tracked] - inRunners[warmupFrames]
            timings.append(.init(objects: objects, frames: timed, fps: Double(timed) / seconds,
                                 runnerMsPerFrame: runnerSeconds * 1000 / Double(timed),
                                 hostMsPerFrame: (seconds - runnerSeconds) * 1000 / Double(timed)))
        }
        return timings
    }
}

/// Seconds on a monotonic clock: what every timing of EdgeTAMKit reads.
@Sendable public func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Seconds spent inside stage runners, summed per stage over calls: how much of a frame is the model, and how much
/// the host code around it (`stage_seconds` of a tracking summary, host overhead of a benchmark).
public final class StageTimes: @unchecked Sendable {
    private let lock = NSLock()
    private var seconds: [String: Double] = [:]
    let clock: @Sendable () -> Double

    public init(clock: @escaping @Sendable () -> Double = monotonicSeconds) {
        self.clock = clock
    }

    public func add(_ stage: String, seconds elapsed: Double) { lock.withLock { seconds[stage, default: 0] += elapsed } }

    public var byStage: [String: Double] { lock.withLock { seconds } }

    public var total: Double { lock.withLock { seconds.values.reduce(0, +) } }
}

/// A runner that adds the time of each call to `times`, under its stage's name.
public struct TimedStageRunner: StageRunner {
    public let inner: any StageRunner
    public let times: StageTimes

    public init(_ inner: any StageRunner, times: StageTimes) {
        self.inner = inner
        self.times = times
    }

    public var spec: StageSpec { inner.spec }

    public func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor] {
        let start = times.clock()
        defer { times.add(spec.name, seconds: times.clock() - start) }
        return try await inner.run(inputs)
    }
}
