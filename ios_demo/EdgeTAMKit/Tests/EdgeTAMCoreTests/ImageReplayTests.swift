import Foundation
import Testing
@testable import EdgeTAMCore
import EdgeTAMTestSupport

/// The Python runtime's image session (`record_image_session` in tests/test_swift_kit.py), replayed: the
/// Swift predictor must make the same stage calls with the same inputs, and write the same masks.
/// The replays need the Python fixtures (`EDGETAM_PYTHON_FIXTURES`); the bad-input tests beside them run anywhere, on
/// the model-free stage contracts of `TrackerBankTests`.
@Suite
struct ImageReplayTests {
    let folder = URL(fileURLWithPath: ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] ?? "/")
        .appendingPathComponent("image_session")

    struct Session: Decodable {
        struct Picture: Decodable { let width: Int; let height: Int; let file: String }
        struct Object: Decodable { let clicks: [[Double]]; let box: [Double]? }
        struct Expected: Decodable {
            let masks_shape: [Int]
            let masks_file: String
            let scores: [[Float]]
            let object_scores: [Float]
        }
        struct Step: Decodable {
            let picture: String
            let objects: [Object]
            let multimask: Bool?
            let mask_from_step: Int?
            let expected: Expected
        }
        let pictures: [String: Picture]
        let steps: [Step]
        let calls: Int
    }

    /// Play the recorded steps through `predictor`; `check` gets each step's prediction and the Python masks.
    static func play(_ folder: URL, predictor: EdgeTAMPredictor,
                     check: (Int, Session.Step, Prediction, [UInt8]) throws -> Void) async throws -> Session {
        let session = try JSONDecoder().decode(Session.self, from: Data(contentsOf: folder.appendingPathComponent("session.json")))
        var embedding: ImageEmbedding?, shown: String?, results: [Prediction] = []
        for (number, step) in session.steps.enumerated() {
            if step.picture != shown {
                let picture = session.pictures[step.picture]!
                let bytes = [UInt8](try Data(contentsOf: folder.appendingPathComponent(picture.file)))
                embedding = try await predictor.setImage(try RGBImage(width: picture.width, height: picture.height, pixels: bytes))
                shown = step.picture
            }
            let prompts = step.objects.map { object in
                ObjectPrompt(clicks: object.clicks.map { Click(x: $0[0], y: $0[1], positive: $0[2] == 1) },
                             box: object.box.map { Box(x0: $0[0], y0: $0[1], x1: $0[2], y1: $0[3]) })
            }
            var maskInput: Tensor?
            if let earlier = step.mask_from_step.map({ results[$0] }) {
                // the best-scored mask of the first object, as `Prediction.ranked()` puts it first in Python
                let scores = earlier.scores.floats[0 ..< earlier.masksPerObject]
                let best = scores.firstIndex(of: scores.max()!)! - scores.startIndex
                maskInput = earlier.lowResLogits.rows(0 ..< 1).reshaped([earlier.masksPerObject, 1, predictor.maskSize, predictor.maskSize])
                    .rows(best ..< best + 1)
            }
            let prediction = try await predictor.predict(embedding!, prompts: prompts, maskInput: maskInput,
                                                         multimaskOutput: step.multimask ?? true)
            results.append(prediction)
            try check(number, step, prediction, [UInt8](try Data(contentsOf: folder.appendingPathComponent(step.expected.masks_file))))
        }
        return session
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] != nil,
                   "run through tests/test_swift_kit.py, which records the session first"))
    func replaysThePythonImageSession() async throws {
        let bundle = try EdgeTAMBundle.open(at: folder.deletingLastPathComponent().appendingPathComponent("onnx/bundle"))
        let replay = try ReplaySession.load(from: folder)
        let predictor = EdgeTAMPredictor(shapes: bundle.manifest.shapes,
                                  imageEncoder: ReplayStageRunner(spec: try bundle.spec("image_encoder"), session: replay),
                                  promptDecoder: ReplayStageRunner(spec: try bundle.spec("prompt_decoder"), session: replay))
        let session = try await Self.play(folder, predictor: predictor) { number, step, prediction, expectedMasks in
            #expect([prediction.objects, prediction.masksPerObject, prediction.height, prediction.width] == step.expected.masks_shape)
            let differing = zip(prediction.masks, expectedMasks).filter { $0 != $1 }.count
            #expect(differing == 0 && prediction.masks.count == expectedMasks.count, "step \(number): \(differing) mask pixels differ")
            #expect(prediction.scores.floats == step.expected.scores.flatMap { $0 }, "step \(number)")
            #expect(prediction.objectScoreLogits == step.expected.object_scores, "step \(number)")
        }
        #expect(await replay.remaining == 0 && session.calls == replay.calls.count)
        let largest = await replay.largestFloatDifference
        print("replayed \(replay.calls.count) stage calls of \(session.steps.count) image steps; largest float input difference \(largest)")
    }

    /// A click outside the picture, an inverted box or a mask of the wrong size is refused before any stage runs.
    @Test func badPromptsThrowBeforeAnyStageCall() async throws {
        let empty = ReplaySession(calls: [])
        let stages = TrackerBankTests.FrameIndexStages().runners()
        let predictor = EdgeTAMPredictor(shapes: TrackerBankTests.shapes,
                                  imageEncoder: ReplayStageRunner(spec: stages["image_encoder"]!.spec, session: empty),
                                  promptDecoder: ReplayStageRunner(spec: stages["prompt_decoder"]!.spec, session: empty))
        let embedding = ImageEmbedding(features: [:], width: 10, height: 8)
        await #expect(throws: EdgeTAMError.promptOutsideImage(x: 11, y: 2, width: 10, height: 8)) {
            try await predictor.predict(embedding, prompts: [ObjectPrompt(clicks: [Click(x: 11, y: 2)])])
        }
        await #expect(throws: EdgeTAMError.self) {  // NaN is not a coordinate (and is never equal to itself)
            try await predictor.predict(embedding, prompts: [ObjectPrompt(clicks: [Click(x: .nan, y: 2)])])
        }
        await #expect(throws: EdgeTAMError.invalidBox([5, 1, 2, 3])) {
            try await predictor.predict(embedding, prompts: [ObjectPrompt(box: Box(x0: 5, y0: 1, x1: 2, y1: 3))])
        }
        await #expect(throws: EdgeTAMError.self) {
            try await predictor.predict(embedding, prompts: [ObjectPrompt(clicks: [Click(x: 1, y: 1)])], maskInput: Tensor.filled([1, 1, 3, 3]))
        }
        #expect(await empty.served == 0)
    }

    @Test func replayRefusesACallOutOfOrderOrWithOtherInputs() async throws {
        let spec = StageSpec(name: "memory_encoder", description: "d", maxObjects: 4,
                             inputs: [TensorSpec(name: "x", shape: [.objects, .fixed(2)], dtype: .float32, description: "d")],
                             outputs: [TensorSpec(name: "y", shape: [.objects], dtype: .float32, description: "d")])
        let input = Tensor(shape: [1, 2], floats: [1, 2])
        let session = ReplaySession(calls: [.init(stage: "memory_encoder", inputs: ["x": input], outputs: ["y": Tensor(shape: [1], floats: [3])])])
        let runner = ReplayStageRunner(spec: spec, session: session)
        await #expect(throws: EdgeTAMError.self) { try await runner.run(["x": Tensor(shape: [1, 2], floats: [1, 2.001])]) }
        #expect(try await runner.run(["x": Tensor(shape: [1, 2], floats: [1, 2.0000005])])["y"]?.floats == [3])
        let withNaN = ReplayStageRunner(spec: spec, session: ReplaySession(calls: session.calls))
        await #expect(throws: EdgeTAMError.self) { try await withNaN.run(["x": Tensor(shape: [1, 2], floats: [1, .nan])]) }
        await #expect(throws: EdgeTAMError.self) { try await runner.run(["x": input]) }  // the recording has one call
        #expect(await session.remaining == 0)
    }
}
