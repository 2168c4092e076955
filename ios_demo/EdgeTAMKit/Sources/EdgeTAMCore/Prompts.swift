import Foundation

/// The decoder's point labels, as the stage contract defines them (`edgetam_export.stages.spec`).
public enum PointLabel {
    public static let positive: Int32 = 1
    public static let negative: Int32 = 0
    public static let boxCorners: (Int32, Int32) = (2, 3)
    /// SAM's not-a-point token, appended after clicks when there is no box.
    public static let notAPoint: Int32 = -1
    /// transformers' padding point (a batch of objects with different click counts).
    public static let padding: Int32 = -10
    /// An empty slot of the fixed-size prompt input, removed from attention.
    public static let emptySlot: Int32 = -100
}

/// A click in picture pixels; `positive` false for a negative click.
public struct Click: Hashable, Sendable {
    public var x: Double
    public var y: Double
    public var positive: Bool
    public init(x: Double, y: Double, positive: Bool = true) { self.x = x; self.y = y; self.positive = positive }
}

/// A box in picture pixels.
public struct Box: Hashable, Sendable {
    public var x0: Double, y0: Double, x1: Double, y1: Double
    public init(x0: Double, y0: Double, x1: Double, y1: Double) { self.x0 = x0; self.y0 = y0; self.x1 = x1; self.y1 = y1 }
}

/// One object's prompt on a picture: clicks and an optional box (`ObjectPrompt` in Python).
public struct ObjectPrompt: Hashable, Sendable {
    public var clicks: [Click]
    public var box: Box?
    /// transformers' padding points after the clicks, when objects of one call have different click counts.
    public var paddingPoints: Int

    public init(clicks: [Click] = [], box: Box? = nil, paddingPoints: Int = 0) {
        self.clicks = clicks; self.box = box; self.paddingPoints = paddingPoints
    }

    /// The prompts of one call with clicks padded to the largest click count, as `Sam2Processor` pads a batch
    /// (objects without clicks, such as box-only calls, stay unpadded when no object has clicks).
    public static func paddedLikeTransformers(_ prompts: [ObjectPrompt]) -> [ObjectPrompt] {
        let longest = prompts.map(\.clicks.count).max() ?? 0
        guard longest > 0 else { return prompts }
        return prompts.map { prompt in
            var padded = prompt
            padded.paddingPoints = longest - prompt.clicks.count
            return padded
        }
    }

    /// Refuse points outside the `width` x `height` picture, non-finite numbers and inverted boxes.
    public func validate(width: Int, height: Int) throws {
        var points = clicks.map { ($0.x, $0.y) }
        if let box {
            // A box has an area: x1 > x0 and y1 > y0 (the Python runtime's rule too).
            guard box.x1 > box.x0, box.y1 > box.y0 else { throw EdgeTAMError.invalidBox([box.x0, box.y0, box.x1, box.y1]) }
            points += [(box.x0, box.y0), (box.x1, box.y1)]
        }
        for (x, y) in points where !(x.isFinite && y.isFinite && 0 <= x && x <= Double(width) && 0 <= y && y <= Double(height)) {
            throw EdgeTAMError.promptOutsideImage(x: x, y: y, width: width, height: height)
        }
    }

    /// The decoder tokens of this prompt, as transformers builds them: clicks and padding points, and the box
    /// corners (after the clicks for images, before them for video frames: `boxFirst`), then one not-a-point
    /// token (two for a prompt without any point or box). Coordinates are scaled to model pixels (padding points
    /// keep transformers' -10).
    public func tokens(scaleX: Double, scaleY: Double, boxFirst: Bool = false) -> [(x: Float, y: Float, label: Int32)] {
        // float32 products, as NumPy scales float32 points by a float32 scale in the Python runtime
        let (sx, sy) = (Float(scaleX), Float(scaleY))
        var tokens = clicks.map { (x: Float($0.x) * sx, y: Float($0.y) * sy,
                                   label: $0.positive ? PointLabel.positive : PointLabel.negative) }
        let padding = Float(PointLabel.padding)
        tokens += [(x: Float, y: Float, label: Int32)](repeating: (padding, padding, PointLabel.padding), count: paddingPoints)
        if let box {
            let corners = [(Float(box.x0) * sx, Float(box.y0) * sy, PointLabel.boxCorners.0),
                           (Float(box.x1) * sx, Float(box.y1) * sy, PointLabel.boxCorners.1)]
            tokens.insert(contentsOf: corners, at: boxFirst ? 0 : tokens.count)
        }
        if clicks.isEmpty && paddingPoints == 0 && box == nil { tokens.append((0, 0, PointLabel.notAPoint)) }
        tokens.append((0, 0, PointLabel.notAPoint))
        return tokens
    }

    /// Prompt points the video model counts for multimask (clicks and box corners).
    public var pointCount: Int { clicks.count + (box == nil ? 0 : 2) }
}

/// The `point_coords` (N x slots x 2) and `point_labels` (N x slots) inputs of `prompt_decoder` for some
/// objects, unused slots marked empty (`pack_slots` in Python).
public func packPromptSlots(_ prompts: [ObjectPrompt], slots: Int, scaleX: Double, scaleY: Double,
                            boxFirst: Bool = false) throws -> (coords: Tensor, labels: Tensor) {
    var coords = [Float](repeating: 0, count: prompts.count * slots * 2)
    var labels = [Int32](repeating: PointLabel.emptySlot, count: prompts.count * slots)
    for (object, prompt) in prompts.enumerated() {
        let tokens = prompt.tokens(scaleX: scaleX, scaleY: scaleY, boxFirst: boxFirst)
        guard tokens.count <= slots else {
            throw EdgeTAMError.inputMismatch(stage: "prompt_decoder", input: "point_labels",
                                             reason: "object \(object) needs \(tokens.count) prompt slots, the bundle has \(slots)")
        }
        for (slot, token) in tokens.enumerated() {
            coords[(object * slots + slot) * 2] = token.x
            coords[(object * slots + slot) * 2 + 1] = token.y
            labels[object * slots + slot] = token.label
        }
    }
    return (Tensor(shape: [prompts.count, slots, 2], floats: coords), Tensor(shape: [prompts.count, slots], ints: labels))
}
