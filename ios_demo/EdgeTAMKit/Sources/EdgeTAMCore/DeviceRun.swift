import Foundation

/// Latency statistics of repeated runs, computed as the Python harness computes them
/// (`numpy.percentile`, linear interpolation between order statistics).
public struct LatencyStats: Codable, Hashable, Sendable {
    public let runs: Int
    public let p50Ms: Double
    public let p90Ms: Double
    public let meanMs: Double

    enum CodingKeys: String, CodingKey {
        case runs
        case p50Ms = "p50_ms", p90Ms = "p90_ms", meanMs = "mean_ms"
    }

    /// Statistics of `milliseconds` (at least one run).
    public init(milliseconds: [Double]) {
        precondition(!milliseconds.isEmpty, "no runs to summarize")
        let sorted = milliseconds.sorted()
        runs = sorted.count
        p50Ms = Self.percentile(sorted, 50)
        p90Ms = Self.percentile(sorted, 90)
        meanMs = sorted.reduce(0, +) / Double(sorted.count)
    }

    /// The `q`-th percentile of sorted values, linear between neighbours (NumPy's default).
    public static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        let position = q / 100 * Double(sorted.count - 1)
        let low = Int(position.rounded(.down)), high = Int(position.rounded(.up))
        return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
    }
}

/// A benchmark run on a device, in the format of `benchmarks/schema/device_run.schema.json`, which
/// `edgetam-export bench import` merges into a results file.
public struct DeviceRun: Codable, Sendable {
    public struct Device: Codable, Sendable {
        public var model: String
        public var os: String
        public var chip: String?
        public var memoryGB: Double?
        enum CodingKeys: String, CodingKey { case model, os, chip, memoryGB = "memory_gb" }
        public init(model: String, os: String, chip: String? = nil, memoryGB: Double? = nil) {
            self.model = model; self.os = os; self.chip = chip; self.memoryGB = memoryGB
        }
    }

    public struct BundleInfo: Codable, Sendable {
        public var recipe: String
        public var manifestSHA256: String
        enum CodingKeys: String, CodingKey { case recipe, manifestSHA256 = "manifest_sha256" }
    }

    public struct Runtime: Codable, Sendable {
        /// "executorch", "coreml" or "onnxruntime".
        public var name: String
        public var version: String
        /// "cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine" or "all" (Core ML).
        public var computeUnits: String?
        public var threads: Int?
        enum CodingKeys: String, CodingKey { case name, version, threads, computeUnits = "compute_units" }
        public init(name: String, version: String, computeUnits: String? = nil, threads: Int? = nil) {
            self.name = name; self.version = version; self.computeUnits = computeUnits; self.threads = threads
        }
    }

    public struct StageTiming: Codable, Sendable {
        public var stage: String
        public var objects: Int
        public var runs: Int
        public var p50Ms: Double
        public var p90Ms: Double
        public var meanMs: Double
        enum CodingKeys: String, CodingKey {
            case stage, objects, runs
            case p50Ms = "p50_ms", p90Ms = "p90_ms", meanMs = "mean_ms"
        }
        public init(stage: String, objects: Int, stats: LatencyStats) {
            self.stage = stage; self.objects = objects; runs = stats.runs
            p50Ms = stats.p50Ms; p90Ms = stats.p90Ms; meanMs = stats.meanMs
        }
    }

    public struct VideoTiming: Codable, Sendable {
        public var objects: Int
        public var frames: Int
        public var fps: Double
        /// Per timed frame: milliseconds inside the stage runners, and outside them (host code: pre- and
        /// post-processing, the memory bank, copies at the runner's edge).
        public var runnerMsPerFrame: Double?
        public var hostMsPerFrame: Double?
        enum CodingKeys: String, CodingKey {
            case objects, frames, fps
            case runnerMsPerFrame = "runner_ms_per_frame", hostMsPerFrame = "host_ms_per_frame"
        }
        public init(objects: Int, frames: Int, fps: Double, runnerMsPerFrame: Double? = nil, hostMsPerFrame: Double? = nil) {
            self.objects = objects; self.frames = frames; self.fps = fps
            self.runnerMsPerFrame = runnerMsPerFrame; self.hostMsPerFrame = hostMsPerFrame
        }
    }

    public var schemaVersion = 1
    public var created: String
    public var device: Device
    public var bundle: BundleInfo
    public var runtime: Runtime
    public var stages: [StageTiming]
    public var video: [VideoTiming]
    public var peakMemoryMB: Double?

    enum CodingKeys: String, CodingKey {
        case created, device, bundle, runtime, stages, video
        case schemaVersion = "schema_version", peakMemoryMB = "peak_memory_mb"
    }

    /// A run of `bundle` (its recipe and manifest checksum are recorded), created now.
    public init(bundle: EdgeTAMBundle, device: Device, runtime: Runtime, stages: [StageTiming],
                video: [VideoTiming] = [], peakMemoryMB: Double? = nil, created: Date = Date()) {
        self.created = ISO8601DateFormatter().string(from: created)
        self.device = device
        self.bundle = BundleInfo(recipe: bundle.manifest.recipe.name, manifestSHA256: bundle.manifestSHA256)
        self.runtime = runtime
        self.stages = stages
        self.video = video
        self.peakMemoryMB = peakMemoryMB
    }

    /// The JSON document, keys sorted so that two runs diff cleanly.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }
}
