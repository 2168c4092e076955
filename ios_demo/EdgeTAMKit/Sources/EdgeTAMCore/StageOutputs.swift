import Foundation

/// Typed outputs of each stage, read from a runner's `[String: Tensor]` by the contract's names (WhisperKit's
/// per-stage output structs): a renamed or missing tensor throws `EdgeTAMError.runnerFailed` naming the stage and
/// the tensor, where a string lookup would crash the app.
public struct ImageEncoderOutput: Sendable {
    public let imageEmbeddings: Tensor
    public let visionFeatures: Tensor
    public let highResFeatures0: Tensor
    public let highResFeatures1: Tensor

    public init(_ outputs: [String: Tensor]) throws {
        let read = StageOutputReader(stage: "image_encoder", outputs: outputs)
        imageEmbeddings = try read("image_embeddings")
        visionFeatures = try read("vision_features")
        highResFeatures0 = try read("high_res_features_0")
        highResFeatures1 = try read("high_res_features_1")
    }
}

public struct PromptDecoderOutput: Sendable {
    public let maskLogits: Tensor
    public let iouScores: Tensor
    public let objectScoreLogits: Tensor
    public let objectPointers: Tensor

    public init(_ outputs: [String: Tensor]) throws {
        let read = StageOutputReader(stage: "prompt_decoder", outputs: outputs)
        maskLogits = try read("mask_logits")
        iouScores = try read("iou_scores")
        objectScoreLogits = try read("object_score_logits")
        objectPointers = try read("object_pointers")
    }
}

public struct MemoryEncoderOutput: Sendable {
    public let memoryFeatures: Tensor
    public let memoryPositions: Tensor

    public init(_ outputs: [String: Tensor], stage: String = "memory_encoder") throws {
        let read = StageOutputReader(stage: stage, outputs: outputs)
        memoryFeatures = try read("memory_features")
        memoryPositions = try read("memory_positions")
    }
}

public struct MemoryAttentionOutput: Sendable {
    public let conditionedFeatures: Tensor

    public init(_ outputs: [String: Tensor]) throws {
        conditionedFeatures = try StageOutputReader(stage: "memory_attention", outputs: outputs)("conditioned_features")
    }
}

public struct MaskPromptEncoderOutput: Sendable {
    /// The memory of the mask-prompted frame (the same tensors the memory encoder gives a tracked frame).
    public let memory: MemoryEncoderOutput
    public let decoderMaskInput: Tensor
    public let objectScoreLogits: Tensor
    public let noObjectPointer: Tensor

    public init(_ outputs: [String: Tensor]) throws {
        let read = StageOutputReader(stage: "mask_prompt_encoder", outputs: outputs)
        memory = try MemoryEncoderOutput(outputs, stage: "mask_prompt_encoder")
        decoderMaskInput = try read("decoder_mask_input")
        objectScoreLogits = try read("object_score_logits")
        noObjectPointer = try read("no_object_pointer")
    }
}

/// One stage's outputs, read by name or thrown as a missing output of that stage.
struct StageOutputReader {
    let stage: String
    let outputs: [String: Tensor]

    func callAsFunction(_ name: String) throws -> Tensor {
        guard let tensor = outputs[name] else {
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "no output '\(name)' (got \(outputs.keys.sorted())); "
                                            + "the artifact does not match the bundle's contract")
        }
        return tensor
    }
}
