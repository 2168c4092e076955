import EdgeTAMCore
import EdgeTAMExecuTorchModule
import Foundation

/// The stages of `bundle` on ExecuTorch's C++ runtime, each call timed into `times`.
func loadRunners(_ bundle: EdgeTAMBundle, stages: [String], times: StageTimes, threads: Int?) throws -> [String: any StageRunner] {
    if let threads { ExecuTorchModuleRunner.threadpoolSize(threads) }
    let loaded = try ExecuTorchModuleBundle(bundle, stages: stages)
    return loaded.runners.mapValues { TimedStageRunner($0, times: times) as any StageRunner }
}

func openBundle(_ path: String) throws -> EdgeTAMBundle {
    try EdgeTAMBundle.open(at: URL(fileURLWithPath: path, isDirectory: true))
}

/// `edgetam-kit segment IMAGE --bundle B --point [OBJ:]X,Y[,L] ... [--box [OBJ:]X0,Y0,X1,Y1] --out DIR`: masks and
/// result.json as `edgetam-export segment` writes them.
func segment(_ words: [String]) async throws {
    let args = try Arguments(words, options: ["--bundle", "--out", "--point", "--box", "--threads"],
                             flags: ["--single-mask", "--multimask"])
    let image = try args.positional("IMAGE")
    let bundlePath = try args.required("--bundle", "the bundle folder")
    let out = URL(fileURLWithPath: try args.required("--out", "the output folder"))
    let threads = try args.int("--threads", in: 1 ... 256)
    guard !(args.has("--single-mask") && args.has("--multimask")) else { throw UsageError("give --single-mask or --multimask, not both") }
    let points = try PromptText.parse(args.all("--point"), option: "--point", framed: false)
    let boxes = try PromptText.parse(args.all("--box"), option: "--box", framed: false)
    let prompts = try groupPrompts(
        clicks: points.map { ($0.object ?? 0, Click(x: $0.numbers[0], y: $0.numbers[1], positive: $0.positive)) },
        boxes: boxes.enumerated().map { index, box in
            (box.object ?? index, Box(x0: box.numbers[0], y0: box.numbers[1], x1: box.numbers[2], y1: box.numbers[3]))
        },
        name: { "object \($0)" })
    try OutputKind.segmentation.check(out)
    let picture = try Pictures.load(image)
    let bundle = try openBundle(bundlePath)
    let ids = prompts.keys.sorted()
    guard !ids.isEmpty else { throw UsageError("no prompt given: pass --point X,Y[,LABEL] or --box X0,Y0,X1,Y1") }
    guard ids == Array(0 ..< ids.count) else { throw UsageError("object indices must run 0, 1, 2, ... without gaps; got \(ids)") }
    let ordered = ids.map { prompts[$0]! }
    let boxed = ordered.filter { $0.box != nil }.count
    guard boxed == 0 || boxed == ordered.count else {
        throw UsageError("give every object a box, or none: mixing boxed and unboxed objects is ambiguous")
    }
    for prompt in ordered { try prompt.validate(width: picture.width, height: picture.height) }
    let multimask = args.has("--multimask") || (!args.has("--single-mask") && ids.count == 1)

    let times = StageTimes()
    let runners = try loadRunners(bundle, stages: ["image_encoder", "prompt_decoder"], times: times, threads: threads)
    let predictor = try bundle.predictor(runners: runners)
    let started = monotonicSeconds()
    let prediction = try await predictor.predict(try await predictor.setImage(picture), prompts: ordered, multimaskOutput: multimask)
    let seconds = monotonicSeconds() - started

    let output = try StagedOutput(out, kind: .segmentation)
    var records: [[String: Any]] = [], best: [[UInt8]] = []
    let scores = prediction.scores.floats, k = prediction.masksPerObject
    for object in 0 ..< prediction.objects {
        // Best score first; equal scores keep their order (NumPy's stable argsort of -scores).
        let order = (0 ..< k).sorted { a, b in
            let (x, y) = (scores[object * k + a], scores[object * k + b])
            return x != y ? x > y : a < b
        }
        for (rank, index) in order.enumerated() {
            let mask = Array(prediction.mask(object: object, index: index))
            let name = "masks/\(object)_\(rank).png"
            try output.write(PNG.mask(width: picture.width, height: picture.height, inside: mask), to: name)
            records.append(["object": object, "rank": rank, "score": rounded(Double(scores[object * k + index]), 6),
                            "file": name, "area": mask.reduce(0) { $0 + Int($1) }])
            if rank == 0 { best.append(mask) }
        }
    }
    let overlay = MaskOverlay.rgba(picture: picture, masks: best)
    try output.write(PNG.image(width: picture.width, height: picture.height, channels: 4, pixels: overlay), to: "overlay.png")
    var result: [String: Any] = [
        "image": image, "size": ["width": picture.width, "height": picture.height], "bundle": bundlePath,
        "backend": bundle.manifest.recipe.backend, "runtime": runtimeName, "mode": multimask ? "multimask" : "single-mask",
        "objects": prediction.objects, "seconds": rounded(seconds), "overlay": "overlay.png", "masks": records,
    ]
    result.merge(weightsFacts(bundle)) { _, new in new }
    try output.writeJSON(result, to: "result.json")
    try output.commit()
    print("\(prediction.objects) objects, \(records.count) masks in \(rounded(seconds)) s -> \(out.path)")
}

/// What a prompt on one frame of a video is: clicks and a box, or a mask picture's nonzero pixels.
enum FramePromptInput {
    case prompt(ObjectPrompt)
    case mask([UInt8])
}

/// `edgetam-kit track FRAMES_DIR --bundle B --point F:O:X,Y[,L] --box F:O:X0,Y0,X1,Y1 --mask F:O:PNG --out DIR`:
/// masks/<obj>/<frame:05d>.png and summary.json as `edgetam-export track` writes them.
func track(_ words: [String]) async throws {
    let args = try Arguments(words, options: ["--bundle", "--out", "--point", "--box", "--mask", "--threads"], flags: ["--reverse"])
    let video = try args.positional("FRAMES_DIR")
    let bundlePath = try args.required("--bundle", "the bundle folder")
    let out = URL(fileURLWithPath: try args.required("--out", "the output folder"))
    let threads = try args.int("--threads", in: 1 ... 256)
    func name(_ key: [Int]) -> String { "object \(key[1]) on frame \(key[0])" }
    let points = try PromptText.parse(args.all("--point"), option: "--point", framed: true)
    let boxes = try PromptText.parse(args.all("--box"), option: "--box", framed: true)
    var prompts: [[Int]: FramePromptInput] = try groupPrompts(
        clicks: points.map { ([$0.frame!, $0.object!], Click(x: $0.numbers[0], y: $0.numbers[1], positive: $0.positive)) },
        boxes: boxes.map { ([$0.frame!, $0.object!], Box(x0: $0.numbers[0], y0: $0.numbers[1], x1: $0.numbers[2], y1: $0.numbers[3])) },
        name: name
    ).mapValues { .prompt($0) }
    var maskPaths: [[Int]: String] = [:]
    for text in args.all("--mask") {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let frame = Int(parts[0]), let object = Int(parts[1]), frame >= 0, object >= 0, !parts[2].isEmpty else {
            throw UsageError("--mask '\(text)' is not FRAME:OBJ:PNG")
        }
        let key = [frame, object]
        if maskPaths[key] != nil { throw UsageError("\(name(key)) has several masks; give one") }
        if prompts[key] != nil { throw UsageError("\(name(key)) has a mask and other prompts there; a mask prompt stands alone") }
        maskPaths[key] = parts[2]
    }
    guard !prompts.isEmpty || !maskPaths.isEmpty else {
        throw UsageError("no prompt given: pass --point FRAME:OBJ:X,Y, --box FRAME:OBJ:X0,Y0,X1,Y1 or --mask FRAME:OBJ:PNG")
    }
    try OutputKind.tracking.check(out)
    let bundle = try openBundle(bundlePath)
    let frames = try FramesOnDisk(folder: video)
    let keys = Set(prompts.keys).union(maskPaths.keys).sorted { $0.lexicographicallyPrecedes($1) }
    for key in keys {  // every prompt checked before any frame is tracked
        guard key[0] < frames.count else {
            throw UsageError("a prompt is on frame \(key[0]), but the video has frames 0 to \(frames.count - 1)")
        }
        if case let .prompt(prompt)? = prompts[key] { try prompt.validate(width: frames.width, height: frames.height) }
        if let path = maskPaths[key] {
            let (width, height, inside) = try Pictures.mask(path)
            guard width == frames.width, height == frames.height else {
                throw UsageError("mask '\(path)' is \(width)x\(height); the video is \(frames.width)x\(frames.height)")
            }
            guard inside.contains(1) else { throw UsageError("mask '\(path)' has no nonzero pixel; paint the object (nonzero) or drop --mask") }
            prompts[key] = .mask(inside)
        }
    }
    let needed = EdgeTAMTracker.trackingStages + (maskPaths.isEmpty ? [] : [EdgeTAMTracker.maskPromptStage])
    let times = StageTimes()
    let tracker = try bundle.tracker(runners: try loadRunners(bundle, stages: needed, times: times, threads: threads))
    let session = try tracker.initSession(frames)
    let output = try StagedOutput(out, kind: .tracking)
    let masks = MaskWriter(output)
    let prompted = Array(Set(keys.map { $0[0] })).sorted()
    let started = monotonicSeconds()
    for (position, frame) in prompted.enumerated() {
        var last: FrameResult?
        for key in keys where key[0] == frame {
            switch prompts[key]! {
            case let .prompt(prompt): try await session.addObjectPrompt(frame: frame, object: key[1], prompt: prompt)
            case let .mask(mask): try await session.addMask(frame: frame, object: key[1], mask: mask)
            }
            last = try await session.runFrame(frame)
        }
        try masks.emit(last!)
        let stop = position + 1 < prompted.count ? prompted[position + 1] - 1 : frames.count - 1
        if stop > frame { try await session.propagate(from: frame + 1, maxFrames: stop - frame - 1) { try masks.emit($0) } }
    }
    if args.has("--reverse"), prompted[0] > 0 {
        try await session.propagate(from: prompted[0] - 1, maxFrames: prompted[0] - 1, reverse: true) { try masks.emit($0) }
    }
    let seconds = monotonicSeconds() - started
    let objects = await session.objectIds.sorted()
    var summary: [String: Any] = [
        "video": video, "bundle": bundlePath, "backend": bundle.manifest.recipe.backend, "runtime": runtimeName,
        "size": ["width": frames.width, "height": frames.height], "objects": objects, "frames_tracked": masks.frames,
        "seconds": rounded(seconds), "frames_per_second": seconds > 0 ? rounded(Double(masks.frames) / seconds) : NSNull(),
        "stage_seconds": times.byStage.mapValues { rounded($0) }, "masks": "masks/{object_id}/{frame:05d}.png",
    ]
    summary.merge(weightsFacts(bundle)) { _, new in new }
    try output.writeJSON(summary, to: "summary.json")
    try output.commit()
    print("tracked \(objects.count) objects over \(masks.frames) frames in \(rounded(seconds)) s "
        + "(\(rounded(Double(masks.frames) / max(seconds, 1e-9))) frames/s) -> \(out.path)")
}

/// Each tracked frame's masks as `masks/<object>/<frame:05d>.png` of a staged output, as they come.
final class MaskWriter: @unchecked Sendable {
    let output: StagedOutput
    private(set) var frames = 0

    init(_ output: StagedOutput) { self.output = output }

    func emit(_ result: FrameResult) throws {
        for (index, id) in result.objectIds.enumerated() {
            try output.write(PNG.mask(width: result.width, height: result.height, inside: result.mask(object: index)),
                             to: "masks/\(id)/\(String(format: "%05d", result.frameIndex)).png")
        }
        frames += 1
    }
}

/// `edgetam-kit bench BUNDLE --out run.json --frames N --objects 1,4`: EdgeTAMKit's `DeviceBenchmark` on this host,
/// written as a device run (`device_run.schema.json`) that `edgetam-export bench import` merges.
func bench(_ words: [String]) async throws {
    let args = try Arguments(words, options: ["--out", "--frames", "--objects", "--runs", "--warmup", "--threads", "--video"])
    let bundlePath = try args.positional("BUNDLE")
    let out = URL(fileURLWithPath: try args.required("--out", "the device-run JSON to write"))
    let frameCount = try args.int("--frames", default: 20, in: 3 ... 10_000)
    let runs = try args.int("--runs", default: 10, in: 1 ... 10_000)
    // Untimed calls per stage, and untimed tracked frames per video run (as `edgetam-export bench run --warmup`).
    let warmup = try args.int("--warmup", default: 2, in: 0 ... 1000)
    guard frameCount > warmup + 1 else { throw UsageError("--frames \(frameCount) leaves nothing to time after the prompt and \(warmup) warm-up frames") }
    let threads = try args.int("--threads", default: ProcessInfo.processInfo.activeProcessorCount, in: 1 ... 256)
    let objectsText = try args.one("--objects") ?? "1,4"
    let counts = objectsText.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
    guard !counts.isEmpty, counts.allSatisfy({ ($0 ?? 0) >= 1 && ($0 ?? 0) <= 64 }) else {
        throw UsageError("--objects must be object counts from 1 to 64 separated by commas, got '\(objectsText)'")
    }
    try checkReportTarget(out)
    let bundle = try openBundle(bundlePath)
    let videoFolder = try args.one("--video") ?? defaultVideoFolder()
    let onDisk = try FramesOnDisk(folder: videoFolder)
    guard onDisk.count >= frameCount else { throw UsageError("'\(videoFolder)' has \(onDisk.count) frames; --frames asks for \(frameCount)") }
    var pictures: [RGBImage] = []
    for index in 0 ..< frameCount { pictures.append(try await onDisk.frame(index)) }  // decoded before timing, as bench run does
    let runners = try loadRunners(bundle, stages: EdgeTAMTracker.trackingStages, times: StageTimes(), threads: threads)
    var benchmark = DeviceBenchmark(shapes: bundle.manifest.shapes, runners: runners)
    benchmark.runs = runs
    benchmark.warmup = warmup
    let objectCounts = counts.map { $0! }
    let stages = try await benchmark.timeStages(objects: objectCounts)
    let video = try await benchmark.timeVideo(frames: try FramesInMemory(pictures), settings: bundle.manifest.tracking,
                                              objects: objectCounts, warmupFrames: warmup)
    let run = DeviceRun(bundle: bundle, device: hostDevice(), runtime: .init(name: "executorch", version: executorchVersion(), threads: ExecuTorchModuleRunner.threadpoolSize()),
                        stages: stages, video: video, peakMemoryMB: peakMemoryMB())
    var data = try run.json()
    data.append(0x0A)
    try writeAtomically(data, to: out)
    for timing in video {
        let frame = 1000 / timing.fps
        print("\(timing.objects) objects: \(rounded(timing.fps, 2)) frames/s, host \(rounded(timing.hostMsPerFrame ?? 0, 2)) ms of \(rounded(frame, 1)) ms a frame (\(rounded(100 * (timing.hostMsPerFrame ?? 0) / frame, 2))%)")
    }
    print("wrote \(out.path)")
}
