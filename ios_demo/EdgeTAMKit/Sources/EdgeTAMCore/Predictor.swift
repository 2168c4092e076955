import Foundation

/// The image encoder's outputs for one picture, reused by every prompt on it.
public struct ImageEmbedding: Sendable {
    public let features: [String: Tensor]
    public let width: Int
    public let height: Int
}

/// Masks for each object of one picture (`Prediction` of the Python runtime).
public struct Prediction: Sendable {
    /// objects x k x height x width, 1 inside the mask, at the picture's size.
    public let masks: [UInt8]
    public let objects: Int
    public let masksPerObject: Int
    public let width: Int
    public let height: Int
    /// objects x k predicted IoU.
    public let scores: Tensor
    /// objects x k x m x m low-resolution logits: pass one back as `maskInput` to refine.
    public let lowResLogits: Tensor
    /// Per object; above 0 the decoder thinks the object is in the picture.
    public let objectScoreLogits: [Float]

    /// One mask (`object`, `index`) as `height * width` bytes.
    public func mask(object: Int, index: Int) -> ArraySlice<UInt8> {
        let plane = width * height
        let start = (object * masksPerObject + index) * plane
        return masks[start ..< start + plane]
    }
}

/// Point, box and mask prompts on still pictures through a bundle's `image_encoder` and `prompt_decoder`:
/// everything the Python runtime's `EdgeTamPredictor` does, call for call (the golden replay tests prove it).
///
/// The encoder runs once per picture (`setImage`); each prompt after that is one decoder call for up to
/// `max_objects` objects (more objects are split over several calls).
public struct EdgeTAMPredictor: Sendable {
    public let shapes: StageShapes
    let encoder: any StageRunner
    let decoder: any StageRunner

    /// Plug in any runners (Core ML, ExecuTorch, a replay) for the two stages.
    public init(shapes: StageShapes, imageEncoder: any StageRunner, promptDecoder: any StageRunner) {
        self.shapes = shapes
        encoder = imageEncoder
        decoder = promptDecoder
    }

    /// The low-resolution mask size of the decoder (a quarter of the model's input size).
    public var maskSize: Int { shapes.imageSize / 4 }

    /// Run the image encoder once; the embedding serves any number of prompts.
    public func setImage(_ picture: RGBImage) async throws -> ImageEmbedding {
        let features = try await runBatched(encoder, ImageProcessing.imageEncoderInputs(picture, spec: encoder.spec), maxObjects: 1)
        return ImageEmbedding(features: features, width: picture.width, height: picture.height)
    }

    /// Segment objects: `prompts` in picture pixels (checked against the picture); `maskInput`, objects x 1 x
    /// m x m logits from an earlier prediction. Objects with fewer clicks are padded as transformers pads them.
    public func predict(_ embedding: ImageEmbedding, prompts: [ObjectPrompt], maskInput: Tensor? = nil,
                        multimaskOutput: Bool = true) async throws -> Prediction {
        let raw = try await decode(embedding, prompts: ObjectPrompt.paddedLikeTransformers(prompts), maskInput: maskInput)
        return finish(embedding, try PromptDecoderOutput(raw), multimaskOutput: multimaskOutput)
    }

    /// The decoder's raw outputs for the objects' prompts, in chunks of at most `max_objects`.
    public func decode(_ embedding: ImageEmbedding, prompts: [ObjectPrompt], maskInput: Tensor? = nil) async throws -> [String: Tensor] {
        guard !prompts.isEmpty || maskInput != nil else {
            throw EdgeTAMError.inputMismatch(stage: "prompt_decoder", input: "point_coords", reason: "no prompt given: pass a point, box or mask")
        }
        let count = prompts.isEmpty ? maskInput!.shape[0] : prompts.count
        let objects = prompts.isEmpty ? [ObjectPrompt](repeating: ObjectPrompt(), count: count) : prompts
        for prompt in prompts { try prompt.validate(width: embedding.width, height: embedding.height) }
        let scaleX = Double(shapes.imageSize) / Double(embedding.width)
        let scaleY = Double(shapes.imageSize) / Double(embedding.height)
        let (coords, labels) = try packPromptSlots(objects, slots: shapes.pointSlots, scaleX: scaleX, scaleY: scaleY)
        let m = maskSize
        var masks = Tensor.filled([count, 1, m, m]), hasMask = Tensor.filled([count])
        if let maskInput {
            guard maskInput.shape == [count, 1, m, m] else {
                throw EdgeTAMError.inputMismatch(stage: "prompt_decoder", input: "mask_input",
                                                 reason: "shape \(maskInput.shape), expected \([count, 1, m, m]) (a prediction's low-res logits)")
            }
            masks = maskInput
            hasMask = Tensor.filled([count], value: 1)
        }
        guard let imageEmbeddings = embedding.features["image_embeddings"] else {
            throw EdgeTAMError.runnerFailed(stage: "image_encoder", reason: "no image_embeddings output")
        }
        var inputs = embedding.features.filter { $0.key.hasPrefix("high_res_features") }
        inputs["image_embeddings"] = imageEmbeddings  // one image, shared by every object
        inputs["point_coords"] = coords
        inputs["point_labels"] = labels
        inputs["mask_input"] = masks
        inputs["has_mask_input"] = hasMask
        return try await runBatched(decoder, inputs, maxObjects: shapes.maxObjects)
    }

    func finish(_ embedding: ImageEmbedding, _ decoded: PromptDecoderOutput, multimaskOutput: Bool) -> Prediction {
        let (logits, ious) = (decoded.maskLogits, decoded.iouScores)
        let objects = logits.shape[0], m = logits.shape[2]
        let chosen = MaskSelection.tokens(maskLogits: logits, iouScores: ious, multimask: multimaskOutput)
        let k = chosen[0].count
        let plane = m * m, values = logits.floats, iouValues = ious.floats
        var selected = [Float](), scores = [Float](), masks = [UInt8]()
        selected.reserveCapacity(objects * k * plane)
        masks.reserveCapacity(objects * k * embedding.width * embedding.height)
        for object in 0 ..< objects {
            for token in chosen[object] {
                let start = (object * logits.shape[1] + token) * plane
                selected += values[start ..< start + plane]
                scores.append(iouValues[object * ious.shape[1] + token])
                let full = ImageProcessing.resizeLogits(values[start ..< start + plane], inHeight: m, inWidth: m,
                                                        height: embedding.height, width: embedding.width)
                masks += full.map { $0 > 0 ? 1 : 0 }
            }
        }
        return Prediction(masks: masks, objects: objects, masksPerObject: k, width: embedding.width, height: embedding.height,
                          scores: Tensor(shape: [objects, k], floats: scores),
                          lowResLogits: Tensor(shape: [objects, k, m, m], floats: selected),
                          objectScoreLogits: decoded.objectScoreLogits.floats)
    }
}

/// Which of the decoder's four masks to return, as transformers picks them (`select_masks` in Python).
public enum MaskSelection {
    /// transformers' stability fallback for single-mask output (mask decoder defaults).
    public static let stabilityDelta: Float = 0.05
    public static let stabilityThreshold: Float = 0.98

    /// Per object, the decoder tokens returned: 1, 2, 3 for multimask; otherwise token 0, unless its mask is
    /// unstable (IoU of the masks at +/-delta below the threshold), then the best-scored multimask token.
    public static func tokens(maskLogits: Tensor, iouScores: Tensor, multimask: Bool) -> [[Int]] {
        let objects = maskLogits.shape[0], tokens = maskLogits.shape[1]
        let plane = maskLogits.shape[2] * maskLogits.shape[3]
        if multimask { return [[Int]](repeating: [1, 2, 3], count: objects) }
        let values = maskLogits.floats, ious = iouScores.floats
        return (0 ..< objects).map { object in
            let start = object * tokens * plane
            let single = values[start ..< start + plane]
            let inner = single.filter { $0 > stabilityDelta }.count, outer = single.filter { $0 > -stabilityDelta }.count
            let stability: Float = outer > 0 ? Float(inner) / Float(outer) : 1
            if stability >= stabilityThreshold { return [0] }
            return [bestMultimaskToken(ious, object: object, tokens: iouScores.shape[1])]
        }
    }

    /// The best-scored of the multimask tokens 1...3 of one object (the first on ties, as NumPy's argmax).
    static func bestMultimaskToken(_ ious: [Float], object: Int, tokens: Int) -> Int {
        var best = 1
        for token in 2 ..< tokens where ious[object * tokens + token] > ious[object * tokens + best] { best = token }
        return best
    }
}
