import Foundation

/// What one processed frame leaves for later frames of one object (`FrameMemory` in Python).
public struct FrameMemory: Sendable {
    /// Low-resolution mask logits (m x m); -1024 everywhere when the object is absent.
    public var maskLogits: [Float]
    public var objectScore: Float
    /// The object pointer (hidden size, 256).
    public var pointer: [Float]
    /// Perceiver memory tokens (T x memory dim) and their positions.
    public var memoryFeatures: [Float]
    public var memoryPositions: [Float]

    public init(maskLogits: [Float], objectScore: Float, pointer: [Float], memoryFeatures: [Float], memoryPositions: [Float]) {
        self.maskLogits = maskLogits; self.objectScore = objectScore; self.pointer = pointer
        self.memoryFeatures = memoryFeatures; self.memoryPositions = memoryPositions
    }
}

/// The memory bank of video tracking (`edgetam_export.runtime.memory_bank`): which memories and pointers a
/// frame attends to, as transformers' `EdgeTamVideoModel` gathers them, packed into the fixed-capacity
/// inputs of the `memory_attention` stage.
public enum MemoryBank {
    /// Where a chosen memory or pointer is stored: the object's prompted or its tracked frames.
    public struct Source: Hashable, Sendable {
        public let frame: Int
        public let conditioning: Bool
    }

    /// One spatial memory chosen for a frame, with the row of the temporal encoding it gets.
    public struct Memory: Hashable, Sendable {
        public let source: Source
        public let timeRow: Int
    }

    /// One object pointer chosen for a frame, with its frame distance (signed by the direction for prompted frames).
    public struct Pointer: Hashable, Sendable {
        public let source: Source
        public let distance: Int
    }

    /// (selected, unselected) conditioning frames, as transformers' `_select_closest_cond_frames`.
    public static func closestConditioningFrames(_ frameIndex: Int, _ frames: [Int], maxCount: Int) -> ([Int], Set<Int>) {
        guard maxCount != -1, frames.count > maxCount else { return (frames, []) }
        var selected: [Int] = []
        if let before = frames.filter({ $0 < frameIndex }).max() { selected.append(before) }
        if let after = frames.filter({ $0 >= frameIndex }).min() { selected.append(after) }
        // A stable sort by distance, as Python's `sorted(key=...)`.
        let rest = frames.filter { !selected.contains($0) }.enumerated()
            .sorted { (abs($0.element - frameIndex), $0.offset) < (abs($1.element - frameIndex), $1.offset) }.map(\.element)
        // transformers slices `[:max - selected]`: a negative count keeps all but that many (Python slicing).
        let keep = maxCount - selected.count
        selected += keep >= 0 ? Array(rest.prefix(keep)) : Array(rest.dropLast(-keep))
        return (selected, Set(frames.filter { !selected.contains($0) }))
    }

    /// The memories and pointers of one object on `frameIndex` (`select_memories` in Python), and the
    /// number of pointers their distances are normalized by.
    /// - Parameters:
    ///   - conditioning: prompted frames of the object, in the order they were prompted.
    ///   - tracked: frames the object was tracked on (without a prompt).
    public static func select(conditioning: [Int], tracked: Set<Int>, frameIndex: Int, reverse: Bool,
                              shapes: StageShapes, settings: TrackingSettings, frameCount: Int)
        -> (memories: [Memory], pointers: [Pointer], maxPointers: Int) {
        let encodings = shapes.temporalEncodings
        let (selected, unselected) = closestConditioningFrames(frameIndex, conditioning, maxCount: settings.maxConditioningFrames)
        var memories = selected.map { Memory(source: Source(frame: $0, conditioning: true), timeRow: encodings - 1) }
        for offset in stride(from: encodings - 1, through: 1, by: -1) {
            let previous = reverse ? frameIndex + offset : frameIndex - offset
            if tracked.contains(previous) {
                memories.append(Memory(source: Source(frame: previous, conditioning: false), timeRow: offset - 1))
            } else if unselected.contains(previous) {  // a prompted frame left out of the conditioning slots
                memories.append(Memory(source: Source(frame: previous, conditioning: true), timeRow: offset - 1))
            }
        }
        let sign = reverse ? -1 : 1
        var pointers = conditioning.filter { reverse ? $0 >= frameIndex : $0 <= frameIndex }
            .map { Pointer(source: Source(frame: $0, conditioning: true), distance: (frameIndex - $0) * sign) }
        let maxPointers = min(frameCount, settings.maxObjectPointers)
        for distance in stride(from: 1, to: maxPointers, by: 1) {
            let reference = reverse ? frameIndex + distance : frameIndex - distance
            if reference < 0 || reference >= frameCount { break }
            if tracked.contains(reference) {
                pointers.append(Pointer(source: Source(frame: reference, conditioning: false), distance: distance))
            }
        }
        return (memories, pointers, maxPointers)
    }

    /// The `memory_attention` inputs of one object (no objects axis), filled slots first (`pack_bank`).
    /// `memory(source)` returns what the object stored for a chosen frame.
    public static func pack(memories: [Memory], pointers: [Pointer], maxPointers: Int, shapes: StageShapes,
                            memory: (Source) -> FrameMemory) throws -> [String: Tensor] {
        guard memories.count <= shapes.memorySlots, pointers.count <= shapes.pointerSlots else {
            throw EdgeTAMError.inputMismatch(
                stage: "memory_attention", input: "memory_features",
                reason: "\(memories.count) memories and \(pointers.count) pointers do not fit \(shapes.memorySlots) and \(shapes.pointerSlots) slots")
        }
        let tokens = shapes.memoryTokens, dim = shapes.memoryDim, slot = tokens * dim
        var features = [Float](repeating: 0, count: shapes.memorySlots * slot)
        var positions = features
        var timeIndex = [Int32](repeating: 0, count: shapes.memorySlots)
        var valid = [Float](repeating: 0, count: shapes.memorySlots)
        for (index, chosen) in memories.enumerated() {
            let stored = memory(chosen.source)
            features.replaceSubrange(index * slot ..< (index + 1) * slot, with: stored.memoryFeatures)
            positions.replaceSubrange(index * slot ..< (index + 1) * slot, with: stored.memoryPositions)
            timeIndex[index] = Int32(chosen.timeRow)
            valid[index] = 1
        }
        let hidden = shapes.hiddenSize
        var objectPointers = [Float](repeating: 0, count: shapes.pointerSlots * hidden)
        var pointerValid = [Float](repeating: 0, count: shapes.pointerSlots)
        for (index, chosen) in pointers.enumerated() {
            objectPointers.replaceSubrange(index * hidden ..< (index + 1) * hidden, with: memory(chosen.source).pointer)
            pointerValid[index] = 1
        }
        var bank: [String: Tensor] = [
            "memory_features": Tensor(shape: [1, shapes.memorySlots * tokens, dim], floats: features),
            "memory_positions": Tensor(shape: [1, shapes.memorySlots * tokens, dim], floats: positions),
            "memory_time_index": Tensor(shape: [1, shapes.memorySlots], ints: timeIndex),
            "memory_valid": Tensor(shape: [1, shapes.memorySlots], floats: valid),
            "object_pointers": Tensor(shape: [1, shapes.pointerSlots, hidden], floats: objectPointers),
            "pointer_valid": Tensor(shape: [1, shapes.pointerSlots], floats: pointerValid),
        ]
        if shapes.pointerTemporalEncoding {
            var offsets = [Float](repeating: 0, count: shapes.pointerSlots)
            for (index, chosen) in pointers.enumerated() { offsets[index] = Float(chosen.distance) / Float(max(maxPointers - 1, 1)) }
            bank["pointer_time_offset"] = Tensor(shape: [1, shapes.pointerSlots], floats: offsets)
        }
        return bank
    }
}
