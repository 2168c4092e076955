import EdgeTAMCore
import SwiftUI
import UIKit

/// Times each stage for 1/2/4/8 objects and the tracking FPS on the device, then shares the results as a
/// `device_run.schema.json` file; on the workstation `edgetam-export bench import <file>` merges it into the report.
struct BenchmarkView: View {
    @Environment(AppModel.self) private var model
    @State private var lines: [String] = []
    @State private var file: URL?
    @State private var running = false

    var body: some View {
        NavigationStack {
            List {
                Section { Text(model.status).font(.caption) }
                Section("Results") { ForEach(lines, id: \.self) { Text($0).font(.caption.monospacedDigit()) } }
            }
            .navigationTitle("Benchmark")
            .toolbar {
                Button(running ? "Running…" : "Run") { Task { await run() } }.disabled(running || model.bundle == nil)
                if let file { ShareLink(item: file) }
            }
        }
    }

    /// Frames for the video benchmark: a moving gradient with a bright disc, generated in memory.
    static func syntheticVideo(count: Int = 60, width: Int = 960, height: Int = 540) throws -> FramesInMemory {
        try FramesInMemory((0 ..< count).map { frame in
            var pixels = [UInt8](repeating: 0, count: width * height * 3)
            let cx = 200 + frame * 8, cy = height / 2
            for y in 0 ..< height {
                for x in 0 ..< width {
                    let inside = (x - cx) * (x - cx) + (y - cy) * (y - cy) < 90 * 90
                    let i = (y * width + x) * 3
                    pixels[i] = inside ? 240 : UInt8(x * 255 / width)
                    pixels[i + 1] = inside ? 220 : UInt8(y * 255 / height)
                    pixels[i + 2] = inside ? 40 : 128
                }
            }
            return try RGBImage(width: width, height: height, pixels: pixels)
        })
    }

    private func run() async {
        guard let bundle = model.bundle, let runtime = model.runtime else { return }
        running = true
        defer { running = false }
        lines = []
        do {
            let benchmark = DeviceBenchmark(shapes: bundle.manifest.shapes, runners: model.runners)
            let stages = try await benchmark.timeStages()
            lines += stages.map { String(format: "%@ x%d: p50 %.1f ms, p90 %.1f ms", $0.stage, $0.objects, $0.p50Ms, $0.p90Ms) }
            let video = try await benchmark.timeVideo(frames: try Self.syntheticVideo(), settings: bundle.manifest.tracking)
            lines += video.map { String(format: "video, %d objects: %.1f FPS over %d frames", $0.objects, $0.fps, $0.frames) }
            var system = utsname()
            uname(&system)
            let machine = withUnsafeBytes(of: &system.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let run = DeviceRun(bundle: bundle,
                                device: .init(model: machine, os: "\(UIDevice.current.systemName) \(UIDevice.current.systemVersion)",
                                              memoryGB: Double(ProcessInfo.processInfo.physicalMemory) / 1e9),
                                runtime: runtime, stages: stages, video: video, peakMemoryMB: MemoryFootprint.megabytes())
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("device_run-\(machine).json")
            try run.json().write(to: url)
            file = url
        } catch {
            model.problem = "\(error)"
        }
    }
}
