import Foundation

/// The frames of a video, read one at a time (a file decoder, a camera, pictures in memory).
public protocol FrameSource: Sendable {
    var count: Int { get }
    var width: Int { get }
    var height: Int { get }
    func frame(_ index: Int) async throws -> RGBImage
}

/// Frames already in memory.
public struct FramesInMemory: FrameSource {
    public let frames: [RGBImage]
    public init(_ frames: [RGBImage]) throws {
        guard let first = frames.first, frames.allSatisfy({ $0.width == first.width && $0.height == first.height }) else {
            throw EdgeTAMError.inputMismatch(stage: "image_encoder", input: "image", reason: "a video needs frames of one size")
        }
        self.frames = frames
    }
    public var count: Int { frames.count }
    public var width: Int { frames[0].width }
    public var height: Int { frames[0].height }
    public func frame(_ index: Int) async throws -> RGBImage { frames[index] }
}

/// Masks of every object on one frame (`FrameResult` of the Python runtime).
public struct FrameResult: Sendable {
    public let frameIndex: Int
    public let objectIds: [Int]
    /// objects x m x m low-resolution logits; -1024 everywhere for an object predicted absent.
    public let maskLogits: Tensor
    public let objectScoreLogits: [Float]
    public let width: Int
    public let height: Int

    /// The mask of the object with this id at the video's size, `height * width` bytes (1 inside).
    public func mask(ofObject id: Int) throws -> [UInt8] {
        guard let index = objectIds.firstIndex(of: id) else { throw EdgeTAMError.unknownObject(id) }
        return mask(object: index)
    }

    /// The mask of the `index`-th object of `objectIds` at the video's size, `height * width` bytes (1 inside).
    public func mask(object index: Int) -> [UInt8] {
        let m = maskLogits.shape[1], plane = m * m, values = maskLogits.floats
        return ImageProcessing.resizeLogits(values[index * plane ..< (index + 1) * plane], inHeight: m, inWidth: m,
                                            height: height, width: width).map { $0 > 0 ? 1 : 0 }
    }
}

/// The stages and settings of video tracking (`EdgeTamTracker` of the Python runtime). Sessions made from it
/// follow transformers' `EdgeTamVideoModel`: prompts make a frame a conditioning frame of an object; other
/// frames attend to the conditioning frames, the most recent tracked frames and up to 16 object pointers
/// (`MemoryBank`); all objects needing work on a frame go through each stage together, chunked by `max_objects`.
public struct EdgeTAMTracker: Sendable {
    public static let trackingStages = ["image_encoder", "prompt_decoder", "memory_encoder", "memory_attention"]
    public static let maskPromptStage = "mask_prompt_encoder"
    /// transformers' placeholder logit for the masks of an object predicted absent.
    public static let noObjectScore: Float = -1024

    public let shapes: StageShapes
    public let settings: TrackingSettings
    public let runners: [String: any StageRunner]
    public let maxTrackedObjects: Int

    /// `runners` holds one runner per tracking stage, and `mask_prompt_encoder` for mask prompts.
    public init(shapes: StageShapes, settings: TrackingSettings, runners: [String: any StageRunner], maxTrackedObjects: Int = 64) throws {
        for stage in Self.trackingStages where runners[stage] == nil { throw EdgeTAMError.unknownStage(stage) }
        self.shapes = shapes; self.settings = settings; self.runners = runners; self.maxTrackedObjects = maxTrackedObjects
    }

    /// A session over `frames`. Tracked-frame memories farther than `memoryWindow` frames from the last processed
    /// frame and from every prompted frame of the object are dropped (nil keeps all).
    public func initSession(_ frames: any FrameSource, memoryWindow: Int? = 32) throws -> TrackingSession {
        let shortest = max(shapes.temporalEncodings, settings.maxObjectPointers)
        if let memoryWindow, memoryWindow < shortest {
            throw EdgeTAMError.inputMismatch(stage: "memory_attention", input: "memory_window", reason: "must be at least \(shortest) frames")
        }
        return TrackingSession(tracker: self, frames: frames, memoryWindow: memoryWindow)
    }

    /// Run a stage over any number of objects (`EdgeTAMCore.runBatched`: chunks of `max_objects`, cancellation).
    func runBatched(_ stage: String, _ inputs: [String: Tensor]) async throws -> [String: Tensor] {
        guard let runner = runners[stage] else { throw EdgeTAMError.unknownStage(stage) }
        return try await EdgeTAMCore.runBatched(runner, inputs, maxObjects: shapes.maxObjects)
    }
}

/// One video and its objects: add prompts, run frames, propagate (`TrackingSession` of the Python runtime).
/// A rejected prompt (outside the frame, unknown frame) throws before anything of the session changes.
public actor TrackingSession {
    enum FramePrompt: Sendable {
        case points(ObjectPrompt)  // video pixels
        case mask([Float])  // model size, 1 inside
    }

    final class TrackedObject {
        let id: Int
        var prompts: [Int: FramePrompt] = [:]
        var conditioningOrder: [Int] = []
        var conditioning: [Int: FrameMemory] = [:]
        var tracked: [Int: FrameMemory] = [:]
        var trackedDirection: [Int: Bool] = [:]
        init(id: Int) { self.id = id }
    }

    struct Work {
        let object: TrackedObject
        let initial: Bool
        let reverse: Bool
        let prompt: FramePrompt?
    }

    let tracker: EdgeTAMTracker
    let frames: any FrameSource
    let memoryWindow: Int?
    private var objects: [TrackedObject] = []
    private var newlyPrompted: [Int] = []
    private var cachedFeatures: (frame: Int, features: ImageEncoderOutput)?

    init(tracker: EdgeTAMTracker, frames: any FrameSource, memoryWindow: Int?) {
        self.tracker = tracker; self.frames = frames; self.memoryWindow = memoryWindow
    }

    /// The frames whose tracked memories an object holds (the memory window drops older ones), ascending.
    public func trackedFrames(of id: Int) throws -> [Int] {
        guard let object = objects.first(where: { $0.id == id }) else { throw EdgeTAMError.unknownObject(id) }
        return object.tracked.keys.sorted()
    }

    /// Object ids, in the order they were first prompted.
    public var objectIds: [Int] { objects.map(\.id) }

    /// Clicks and/or a box for one object on one frame, in video pixels (`add_prompt` of the Python runtime).
    public func addPrompt(frame: Int, object id: Int, clicks: [Click] = [], box: Box? = nil) throws {
        try addObjectPrompt(frame: frame, object: id, prompt: ObjectPrompt(clicks: clicks, box: box))
    }

    /// One object's prompt on one frame, in video pixels (`add_object_prompt`). As in transformers, it replaces the
    /// object's earlier prompts on that frame, and only the objects of the latest call count as newly prompted.
    public func addObjectPrompt(frame: Int, object id: Int, prompt: ObjectPrompt) throws {
        try checkTarget(frame: frame, object: id)
        guard prompt.pointCount > 0 else {
            throw EdgeTAMError.inputMismatch(stage: "prompt_decoder", input: "point_coords", reason: "object \(id): give clicks or a box")
        }
        try prompt.validate(width: frames.width, height: frames.height)
        object(id).prompts[frame] = .points(prompt)
        newlyPrompted = [id]
    }

    /// A mask (`height * width` bytes of the video, nonzero inside) for one object on one frame. As in
    /// transformers, the mask itself becomes the frame's output and memory; the decoder supplies the pointer.
    public func addMask(frame: Int, object id: Int, mask: [UInt8]) throws {
        try checkTarget(frame: frame, object: id)
        guard tracker.runners[EdgeTAMTracker.maskPromptStage] != nil else { throw EdgeTAMError.unknownStage(EdgeTAMTracker.maskPromptStage) }
        let (width, height, size) = (frames.width, frames.height, tracker.shapes.imageSize)
        guard mask.count == width * height else {
            throw EdgeTAMError.inputMismatch(stage: EdgeTAMTracker.maskPromptStage, input: "masks",
                                             reason: "object \(id): \(mask.count) mask values for a \(width)x\(height) video")
        }
        var binary = mask.map { $0 != 0 ? Float(1) : 0 }
        if width != size || height != size {  // Sam2VideoProcessor: antialiased resize, then threshold at 0.5
            binary = ImageProcessing.resizeAntialiased(binary, inHeight: height, inWidth: width, height: size, width: size)
                .map { $0 >= 0.5 ? 1 : 0 }
        }
        object(id).prompts[frame] = .mask(binary)
        newlyPrompted = [id]
    }

    private func checkTarget(frame: Int, object id: Int) throws {
        guard 0 <= frame, frame < frames.count else { throw EdgeTAMError.frameOutOfRange(frame: frame, count: frames.count) }
        if !objects.contains(where: { $0.id == id }) && objects.count >= tracker.maxTrackedObjects {
            throw EdgeTAMError.inputMismatch(stage: "prompt_decoder", input: "objects",
                                             reason: "object \(id) would be object \(objects.count + 1); the tracker holds \(tracker.maxTrackedObjects)")
        }
    }

    private func object(_ id: Int) -> TrackedObject {
        if let found = objects.first(where: { $0.id == id }) { return found }
        let created = TrackedObject(id: id)
        objects.append(created)
        return created
    }

    /// Segment every object on one frame: the prompted frame after `addPrompt`, or the next tracked one.
    public func runFrame(_ frameIndex: Int, reverse requested: Bool = false) async throws -> FrameResult {
        guard !objects.isEmpty else { throw EdgeTAMError.notPrompted(object: nil) }
        guard 0 <= frameIndex, frameIndex < frames.count else { throw EdgeTAMError.frameOutOfRange(frame: frameIndex, count: frames.count) }
        var reverse = requested
        var results: [Int: FrameMemory] = [:], work: [Work] = []
        for object in objects {
            let isNew = newlyPrompted.contains(object.id)
            if !isNew, let stored = object.conditioning[frameIndex] {
                results[object.id] = stored
                continue
            }
            var initial = false, prompt: FramePrompt?
            if isNew {
                initial = object.trackedDirection[frameIndex] == nil
                if initial { reverse = false }  // as transformers does: from here on, for every later object too
                prompt = object.prompts[frameIndex]
                if prompt != nil { newlyPrompted.removeAll { $0 == object.id } }
            }
            if !initial && object.conditioning.isEmpty { throw EdgeTAMError.notPrompted(object: object.id) }
            work.append(Work(object: object, initial: initial, reverse: reverse, prompt: prompt))
        }
        if !work.isEmpty {
            let memories = try await compute(frameIndex, work)
            for (item, memory) in zip(work, memories) {
                results[item.object.id] = memory
                if item.initial {
                    if item.object.conditioning[frameIndex] == nil { item.object.conditioningOrder.append(frameIndex) }
                    item.object.conditioning[frameIndex] = memory
                } else {
                    item.object.tracked[frameIndex] = memory
                    item.object.trackedDirection[frameIndex] = item.reverse
                }
            }
            forget(frameIndex)
        }
        let ids = objects.map(\.id), m = tracker.shapes.imageSize / 4
        return FrameResult(frameIndex: frameIndex, objectIds: ids,
                           maskLogits: Tensor(shape: [ids.count, m, m], floats: ids.flatMap { results[$0]!.maskLogits }),
                           objectScoreLogits: ids.map { results[$0]!.objectScore }, width: frames.width, height: frames.height)
    }

    /// Track every object frame after frame from `start` (default: the first prompted frame), as transformers'
    /// `propagate_in_video_iterator` does; `body` receives each frame's result.
    public func propagate(from start: Int? = nil, maxFrames: Int? = nil, reverse: Bool = false,
                          _ body: (FrameResult) throws -> Void = { _ in }) async throws {
        let prompted = objects.flatMap(\.conditioningOrder)
        guard let first = start ?? prompted.min() else { throw EdgeTAMError.notPrompted(object: nil) }
        let limit = maxFrames ?? frames.count
        let order: [Int]
        if reverse {
            order = first > 0 ? Array(stride(from: first, through: max(first - limit, 0), by: -1)) : []
        } else {
            order = Array(first ... min(first + limit, frames.count - 1))
        }
        for frame in order { try body(try await runFrame(frame, reverse: reverse)) }
    }

    private func frameFeatures(_ frameIndex: Int) async throws -> ImageEncoderOutput {
        if let cachedFeatures, cachedFeatures.frame == frameIndex { return cachedFeatures.features }
        guard let encoder = tracker.runners["image_encoder"] else { throw EdgeTAMError.unknownStage("image_encoder") }
        let features = try ImageEncoderOutput(
            try await EdgeTAMCore.runBatched(encoder, ImageProcessing.imageEncoderInputs(try await frames.frame(frameIndex), spec: encoder.spec),
                                             maxObjects: 1))
        cachedFeatures = (frameIndex, features)
        return features
    }

    private func compute(_ frameIndex: Int, _ work: [Work]) async throws -> [FrameMemory] {
        let shapes = tracker.shapes, count = work.count, m = shapes.imageSize / 4
        let features = try await frameFeatures(frameIndex)
        let vision = features.visionFeatures
        let masked = work.indices.filter { if case .mask = work[$0].prompt { true } else { false } }
        let unmasked = work.indices.filter { !masked.contains($0) }
        var embeddings = Array(repeating: features.imageEmbeddings, count: count)
        let tracked = unmasked.filter { !work[$0].initial }
        if !tracked.isEmpty {
            let banks = try tracked.map { try bank(work[$0].object, frameIndex, reverse: work[$0].reverse) }
            var inputs = [String: Tensor]()
            for name in banks[0].keys { inputs[name] = Tensor.concatenate(banks.compactMap { $0[name] }) }
            inputs["vision_features"] = vision
            let conditioned = try MemoryAttentionOutput(try await tracker.runBatched("memory_attention", inputs)).conditionedFeatures
            for (row, index) in tracked.enumerated() { embeddings[index] = conditioned.rows(row ..< row + 1) }
        }
        var maskInput = Tensor.filled([count, 1, m, m]), hasMaskInput = Tensor.filled([count])
        var prompted: MaskPromptEncoderOutput?, drawn: [[Float]] = []
        if !masked.isEmpty {
            drawn = masked.map { if case let .mask(values) = work[$0].prompt { values } else { [] } }
            let size = shapes.imageSize
            let encoded = try MaskPromptEncoderOutput(try await tracker.runBatched(EdgeTAMTracker.maskPromptStage, [
                "vision_features": vision, "masks": Tensor(shape: [masked.count, 1, size, size], floats: drawn.flatMap { $0 }),
            ]))
            prompted = encoded
            for (row, index) in masked.enumerated() {
                embeddings[index] = vision
                maskInput.setRow(index, from: encoded.decoderMaskInput, row: row)
                hasMaskInput.setRow(index, from: Tensor(shape: [1], floats: [1]))
            }
        }
        let (coords, labels, multimask) = try promptSlots(work.map { item -> FramePrompt? in
            if case .mask = item.prompt { return nil } else { return item.prompt }
        }, initial: work.map(\.initial), masked: Set(masked))
        let decoded = try PromptDecoderOutput(try await tracker.runBatched("prompt_decoder", [
            "image_embeddings": Tensor.concatenate(embeddings),
            "high_res_features_0": features.highResFeatures0,
            "high_res_features_1": features.highResFeatures1,
            "point_coords": coords, "point_labels": labels, "mask_input": maskInput, "has_mask_input": hasMaskInput,
        ]))
        var (masks, pointers) = Self.selectForTracking(decoded, multimask: multimask)  // (N, m, m), (N, hidden)
        var scores = decoded.objectScoreLogits.floats
        let absent = Tensor.filled([1, m, m], value: Double(EdgeTAMTracker.noObjectScore))
        for object in 0 ..< count where !(scores[object] > 0) { masks.setRow(object, from: absent) }
        var memoryFeatures = Tensor.filled([count, shapes.memoryTokens, shapes.memoryDim]), memoryPositions = memoryFeatures
        if !unmasked.isEmpty {
            let encoded = try MemoryEncoderOutput(try await tracker.runBatched("memory_encoder", [
                "vision_features": vision,
                "mask_logits": Tensor.concatenate(unmasked.map { masks.rows($0 ..< $0 + 1) }).reshaped([unmasked.count, 1, m, m]),
                "object_score_logits": Tensor(shape: [unmasked.count, 1], floats: unmasked.map { scores[$0] }),
                "mask_is_binary": Tensor(shape: [unmasked.count], floats: unmasked.map { work[$0].prompt == nil ? 0 : 1 }),
            ]))
            for (row, index) in unmasked.enumerated() {
                memoryFeatures.setRow(index, from: encoded.memoryFeatures, row: row)
                memoryPositions.setRow(index, from: encoded.memoryPositions, row: row)
            }
        }
        if let prompted {
            let size = shapes.imageSize, promptScores = prompted.objectScoreLogits.floats
            for (row, index) in masked.enumerated() {
                let logits = drawn[row].map { $0 * StageSpec.maskLogitScale + StageSpec.maskLogitBias }
                masks.setRow(index, from: Tensor(shape: [1, m, m], floats: ImageProcessing.resizeAntialiased(
                    logits, inHeight: size, inWidth: size, height: m, width: m)))
                scores[index] = promptScores[row]
                if !(scores[index] > 0) { pointers.setRow(index, from: prompted.noObjectPointer, row: row) }
                memoryFeatures.setRow(index, from: prompted.memory.memoryFeatures, row: row)
                memoryPositions.setRow(index, from: prompted.memory.memoryPositions, row: row)
            }
        }
        return (0 ..< count).map { index in
            FrameMemory(maskLogits: masks.rows(index ..< index + 1).floats, objectScore: scores[index],
                        pointer: pointers.rows(index ..< index + 1).floats,
                        memoryFeatures: memoryFeatures.rows(index ..< index + 1).floats,
                        memoryPositions: memoryPositions.rows(index ..< index + 1).floats)
        }
    }

    /// Decoder slots for video prompts, as the video model packs them (box corners first; a frame without prompt
    /// gets two not-a-point tokens), and whether each object asks for multimask output.
    private func promptSlots(_ prompts: [FramePrompt?], initial: [Bool], masked: Set<Int>) throws -> (Tensor, Tensor, [Bool]) {
        let objects = prompts.map { prompt -> ObjectPrompt in
            if case let .points(objectPrompt) = prompt { objectPrompt } else { ObjectPrompt() }
        }
        let size = Double(tracker.shapes.imageSize)
        let (coords, labels) = try packPromptSlots(objects, slots: tracker.shapes.pointSlots, scaleX: size / Double(frames.width),
                                                   scaleY: size / Double(frames.height), boxFirst: true)
        let multimask = objects.indices.map { index in
            masked.contains(index)
                || tracker.settings.multimask(initial: initial[index], pointCount: prompts[index] == nil ? 0 : objects[index].pointCount)
        }
        return (coords, labels, multimask)
    }

    /// (mask logits, object pointer) per object, as the video model picks them: multimask takes the best-scored
    /// of tokens 1...3 for both; single mask takes token 0's mask unless it is unstable, but always token 0's pointer.
    static func selectForTracking(_ decoded: PromptDecoderOutput, multimask: [Bool]) -> (masks: Tensor, pointers: Tensor) {
        let (logits, ious, pointers) = (decoded.maskLogits, decoded.iouScores, decoded.objectPointers)
        let single = MaskSelection.tokens(maskLogits: logits, iouScores: ious, multimask: false)
        let plane = logits.shape[2] * logits.shape[3], tokens = logits.shape[1], hidden = pointers.shape[2]
        let (logitValues, iouValues, pointerValues) = (logits.floats, ious.floats, pointers.floats)
        var masks = [Float](), chosenPointers = [Float]()
        for object in 0 ..< logits.shape[0] {
            let best = MaskSelection.bestMultimaskToken(iouValues, object: object, tokens: tokens)
            let maskToken = multimask[object] ? best : single[object][0]
            let pointerToken = multimask[object] ? best : 0
            masks += logitValues[(object * tokens + maskToken) * plane ..< (object * tokens + maskToken + 1) * plane]
            chosenPointers += pointerValues[(object * tokens + pointerToken) * hidden ..< (object * tokens + pointerToken + 1) * hidden]
        }
        return (Tensor(shape: [logits.shape[0], logits.shape[2], logits.shape[3]], floats: masks),
                Tensor(shape: [logits.shape[0], hidden], floats: chosenPointers))
    }

    private func bank(_ object: TrackedObject, _ frameIndex: Int, reverse: Bool) throws -> [String: Tensor] {
        let chosen = MemoryBank.select(conditioning: object.conditioningOrder, tracked: Set(object.tracked.keys), frameIndex: frameIndex,
                                       reverse: reverse, shapes: tracker.shapes, settings: tracker.settings, frameCount: frames.count)
        return try MemoryBank.pack(memories: chosen.memories, pointers: chosen.pointers, maxPointers: chosen.maxPointers,
                                   shapes: tracker.shapes) { source in
            source.conditioning ? object.conditioning[source.frame]! : object.tracked[source.frame]!
        }
    }

    /// Drop tracked memories farther than the window from the last processed frame and every prompted frame.
    private func forget(_ frameIndex: Int) {
        guard let memoryWindow else { return }
        for object in objects {
            let anchors = [frameIndex] + object.conditioningOrder
            for old in object.tracked.keys where anchors.allSatisfy({ abs(old - $0) > memoryWindow }) {
                object.tracked[old] = nil  // the direction stays known: re-prompting it is a correction
            }
        }
    }
}
