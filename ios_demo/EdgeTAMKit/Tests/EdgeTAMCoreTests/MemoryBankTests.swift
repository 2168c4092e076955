import Foundation
import Testing
@testable import EdgeTAMCore

/// The memory bank without a model: which frames and pointers a frame attends to.
@Suite struct MemoryBankTests {
    let shapes = try! JSONDecoder().decode(StageShapes.self, from: Data("""
        {"image_size": 256, "hidden_size": 4, "memory_dim": 2, "memory_tokens": 1, "point_slots": 8, "max_objects": 4,
         "memory_slots": 7, "pointer_slots": 16, "temporal_encodings": 7}
        """.utf8))

    @Test func forwardWindowTakesThePromptAndTheSixLatestFrames() {
        let chosen = MemoryBank.select(conditioning: [0], tracked: Set(1 ..< 40), frameIndex: 40, reverse: false,
                                       shapes: shapes, settings: TrackingSettings(), frameCount: 200)
        #expect(chosen.memories.map(\.source.frame) == [0, 34, 35, 36, 37, 38, 39])
        #expect(chosen.memories.map(\.timeRow) == [6, 5, 4, 3, 2, 1, 0])
        #expect(chosen.pointers.map(\.source.frame) == [0] + Array((25 ..< 40).reversed()))
        #expect(chosen.pointers.first?.distance == 40 && chosen.maxPointers == 16)
    }

    @Test func reversePassLooksAhead() {
        let chosen = MemoryBank.select(conditioning: [100], tracked: Set(90 ..< 100), frameIndex: 89, reverse: true,
                                       shapes: shapes, settings: TrackingSettings(), frameCount: 200)
        #expect(chosen.memories.map(\.source.frame) == [100, 95, 94, 93, 92, 91, 90])
        #expect(chosen.pointers.first?.source.frame == 100 && chosen.pointers.first?.distance == 11)
    }

    @Test func shortVideosNormalizePointerDistancesByTheirLength() throws {
        var withEncoding = try JSONSerialization.jsonObject(with: JSONEncoder().encode(shapes)) as! [String: Any]
        withEncoding["pointer_temporal_encoding"] = true
        let encoded = try JSONDecoder().decode(StageShapes.self, from: JSONSerialization.data(withJSONObject: withEncoding))
        let chosen = MemoryBank.select(conditioning: [0], tracked: Set(1 ..< 5), frameIndex: 5, reverse: false,
                                       shapes: encoded, settings: TrackingSettings(), frameCount: 6)
        #expect(chosen.maxPointers == 6)
        let bank = try MemoryBank.pack(memories: chosen.memories, pointers: chosen.pointers, maxPointers: chosen.maxPointers,
                                       shapes: encoded) { _ in
            FrameMemory(maskLogits: [0], objectScore: 1, pointer: [0, 0, 0, 0], memoryFeatures: [0, 0], memoryPositions: [0, 0])
        }
        #expect(Array(bank["pointer_time_offset"]!.floats.prefix(5)) == [1.0, 0.2, 0.4, 0.6, 0.8])
        #expect(bank["memory_features"]!.shape == [1, 7, 2] && bank["object_pointers"]!.shape == [1, 16, 4])
    }

    @Test func overfullBanksAreRefusedWithTheFix() {
        let chosen = MemoryBank.select(conditioning: [0, 10], tracked: Set(1 ..< 10).union(11 ..< 30), frameIndex: 30,
                                       reverse: false, shapes: shapes, settings: TrackingSettings(), frameCount: 60)
        #expect(chosen.memories.count == 8)  // two prompted frames + six recent ones: one more than 7 slots
        #expect(throws: EdgeTAMError.self) {
            try MemoryBank.pack(memories: chosen.memories, pointers: chosen.pointers, maxPointers: chosen.maxPointers,
                                shapes: shapes) { _ in
                FrameMemory(maskLogits: [0], objectScore: 1, pointer: [0, 0, 0, 0], memoryFeatures: [0, 0], memoryPositions: [0, 0])
            }
        }
    }

    @Test func promptsValidateAndPack() throws {
        #expect(throws: EdgeTAMError.promptOutsideImage(x: 5000, y: 10, width: 1800, height: 1200)) {
            try ObjectPrompt(clicks: [Click(x: 5000, y: 10)]).validate(width: 1800, height: 1200)
        }
        #expect(throws: EdgeTAMError.self) { try ObjectPrompt(clicks: [Click(x: .nan, y: 10)]).validate(width: 10, height: 10) }
        #expect(throws: EdgeTAMError.invalidBox([7, 6, 4, 8])) {
            try ObjectPrompt(box: Box(x0: 7, y0: 6, x1: 4, y1: 8)).validate(width: 10, height: 10)
        }
        let (_, labels) = try packPromptSlots([ObjectPrompt()], slots: 4, scaleX: 1, scaleY: 1)
        #expect(labels.ints == [-1, -1, -100, -100])  // a prompt without clicks or box: two not-a-point tokens
        let many = ObjectPrompt(clicks: (0 ..< 8).map { Click(x: Double($0), y: 1) })
        #expect(throws: EdgeTAMError.self) { try packPromptSlots([many], slots: 8, scaleX: 1, scaleY: 1) }
        #expect(TrackingSettings().multimask(initial: true, pointCount: 1) && !TrackingSettings().multimask(initial: true, pointCount: 2))
    }
}
