import Foundation
import Testing
@testable import EdgeTAMCore

/// Stage outputs are read by the contract's names into typed structs: a renamed tensor is a thrown error naming the
/// stage and the tensor, never a crash.
@Suite struct StageOutputsTests {
    let tensor = Tensor(shape: [1, 1], floats: [0.5])

    @Test func readsEveryOutputByItsContractName() throws {
        let outputs = ["mask_logits": tensor, "iou_scores": tensor, "object_score_logits": tensor, "object_pointers": tensor]
        let decoded = try PromptDecoderOutput(outputs)
        #expect(decoded.objectScoreLogits.floats == [0.5])
        let prompted = try MaskPromptEncoderOutput(["memory_features": tensor, "memory_positions": tensor,
                                                   "decoder_mask_input": tensor, "object_score_logits": tensor,
                                                   "no_object_pointer": tensor])
        #expect(prompted.memory.memoryFeatures == tensor)
    }

    @Test func aRenamedOutputThrowsNamingTheStageAndTheTensor() {
        let renamed = ["mask_logits": tensor, "iou_scores": tensor, "object_score": tensor, "object_pointers": tensor]
        do {
            _ = try PromptDecoderOutput(renamed)
            Issue.record("a decoder output without object_score_logits was accepted")
        } catch let EdgeTAMError.runnerFailed(stage, reason) {
            #expect(stage == "prompt_decoder" && reason.contains("no output 'object_score_logits'"))
        } catch {
            Issue.record("wrong error \(error)")
        }
        #expect(throws: EdgeTAMError.self) { try MemoryAttentionOutput([:]) }
        #expect(throws: EdgeTAMError.self) { try ImageEncoderOutput(["image_embeddings": tensor]) }
    }
}
