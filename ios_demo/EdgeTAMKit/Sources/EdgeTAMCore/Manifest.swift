import Foundation

/// A JSON value of any type, for the manifest's free-form records (backend facts, tool versions).
public enum JSONValue: Codable, Hashable, Sendable {
    case string(String), number(Double), bool(Bool), array([JSONValue]), object([String: JSONValue]), null

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case let .string(value): try container.encode(value)
        case let .number(value): try container.encode(value)
        case let .bool(value): try container.encode(value)
        case let .array(value): try container.encode(value)
        case let .object(value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    /// The string inside, if this is a string.
    public var string: String? { if case let .string(value) = self { value } else { nil } }
}

/// One axis of a tensor contract: a fixed size, or the objects axis (1 to the bundle's `max_objects`).
public enum Dimension: Codable, Hashable, Sendable, CustomStringConvertible {
    case fixed(Int)
    case objects

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let size = try? container.decode(Int.self) {
            self = .fixed(size)
        } else if try container.decode(String.self) == "objects" {
            self = .objects
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "a dimension is an integer or \"objects\"")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case let .fixed(size): try container.encode(size)
        case .objects: try container.encode("objects")
        }
    }

    /// The size of this axis for a call with `objects` objects.
    public func size(objects: Int) -> Int {
        switch self {
        case let .fixed(size): size
        case .objects: objects
        }
    }

    public var description: String {
        switch self {
        case let .fixed(size): String(size)
        case .objects: "N"
        }
    }
}

/// Element types of stage tensors.
public enum DType: String, Codable, Sendable {
    case float32, int32
}

/// One named input or output of a stage (`edgetam_export.stages.spec.TensorSpec`).
public struct TensorSpec: Codable, Hashable, Sendable {
    public let name: String
    public let shape: [Dimension]
    public let dtype: DType
    public let description: String

    /// The concrete shape for a call with `objects` objects.
    public func shape(objects: Int) -> [Int] { shape.map { $0.size(objects: objects) } }
    /// Whether the tensor has the objects axis.
    public var hasObjectsAxis: Bool { shape.contains(.objects) }
}

/// The contract of one exported stage: ordered inputs and outputs (`StageSpec` in Python).
public struct StageSpec: Codable, Hashable, Sendable {
    public let name: String
    public let description: String
    public let maxObjects: Int
    public let inputs: [TensorSpec]
    public let outputs: [TensorSpec]

    enum CodingKeys: String, CodingKey {
        case name, description, inputs, outputs
        case maxObjects = "max_objects"
    }

    /// How a drawn mask becomes logits for the mask-prompt stage and the frame's output (`MASK_LOGIT_SCALE`,
    /// `MASK_LOGIT_BIAS` of the Python stage contract, `stages/spec.py`).
    public static let maskLogitScale: Float = 20, maskLogitBias: Float = -10

    /// Validate named inputs against the contract; return the number of objects they carry.
    public func checkInputs(_ tensors: [String: Tensor]) throws -> Int {
        var objects: Int?
        for spec in inputs {
            guard let tensor = tensors[spec.name] else {
                throw EdgeTAMError.inputMismatch(stage: name, input: spec.name, reason: "missing")
            }
            if let axis = spec.shape.firstIndex(of: .objects), tensor.shape.count == spec.shape.count {
                objects = objects ?? tensor.shape[axis]
            }
            let expected = spec.shape(objects: objects ?? 1)
            guard tensor.shape == expected else {
                throw EdgeTAMError.inputMismatch(stage: name, input: spec.name, reason: "shape \(tensor.shape), expected \(expected)")
            }
            guard tensor.dtype == spec.dtype else {
                throw EdgeTAMError.inputMismatch(stage: name, input: spec.name, reason: "dtype \(tensor.dtype), expected \(spec.dtype)")
            }
        }
        let count = objects ?? 1
        guard (1 ... maxObjects).contains(count) else {
            throw EdgeTAMError.inputMismatch(stage: name, input: "objects", reason: "\(count) objects; the bundle takes 1 to \(maxObjects)")
        }
        return count
    }
}

/// Every size the stage contracts depend on (`StageShapes` in Python).
public struct StageShapes: Codable, Hashable, Sendable {
    public let imageSize: Int
    public let hiddenSize: Int
    public let memoryDim: Int
    public let memoryTokens: Int
    public let pointSlots: Int
    public let maxObjects: Int
    public let memorySlots: Int
    public let pointerSlots: Int
    public let temporalEncodings: Int
    /// The image encoder takes 0..255 RGB pixels (`image`) instead of normalized `pixel_values`.
    public let imageInput: Bool
    /// `memory_attention` takes `pointer_time_offset` (models with pointer temporal encodings).
    public let pointerTemporalEncoding: Bool

    enum CodingKeys: String, CodingKey {
        case imageSize = "image_size", hiddenSize = "hidden_size", memoryDim = "memory_dim"
        case memoryTokens = "memory_tokens", pointSlots = "point_slots", maxObjects = "max_objects"
        case memorySlots = "memory_slots", pointerSlots = "pointer_slots", temporalEncodings = "temporal_encodings"
        case imageInput = "image_input", pointerTemporalEncoding = "pointer_temporal_encoding"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        imageSize = try c.decode(Int.self, forKey: .imageSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        memoryDim = try c.decode(Int.self, forKey: .memoryDim)
        memoryTokens = try c.decode(Int.self, forKey: .memoryTokens)
        pointSlots = try c.decode(Int.self, forKey: .pointSlots)
        maxObjects = try c.decode(Int.self, forKey: .maxObjects)
        memorySlots = try c.decode(Int.self, forKey: .memorySlots)
        pointerSlots = try c.decode(Int.self, forKey: .pointerSlots)
        temporalEncodings = try c.decode(Int.self, forKey: .temporalEncodings)
        // May be absent in format-1 manifests: EdgeTAM's released settings.
        imageInput = try c.decodeIfPresent(Bool.self, forKey: .imageInput) ?? false
        pointerTemporalEncoding = try c.decodeIfPresent(Bool.self, forKey: .pointerTemporalEncoding) ?? false
    }

    /// Side of the low-resolution masks (image size / 4).
    public var lowResMaskSize: Int { imageSize / 4 }
}

/// The video model's host-side decisions (`TrackingSettings` in Python); defaults are EdgeTAM's.
public struct TrackingSettings: Codable, Hashable, Sendable {
    public var multimaskOutputInSam = true
    public var multimaskOutputForTracking = true
    public var multimaskMinPointCount = 0
    public var multimaskMaxPointCount = 1
    /// Conditioning frames attended to per frame, closest first; -1 means all.
    public var maxConditioningFrames = -1
    /// Object pointers gathered per frame (transformers' `max_object_pointers_in_encoder`).
    public var maxObjectPointers = 16

    enum CodingKeys: String, CodingKey {
        case multimaskOutputInSam = "multimask_output_in_sam"
        case multimaskOutputForTracking = "multimask_output_for_tracking"
        case multimaskMinPointCount = "multimask_min_pt_num"
        case multimaskMaxPointCount = "multimask_max_pt_num"
        case maxConditioningFrames = "max_cond_frame_num"
        case maxObjectPointers = "max_object_pointers"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        multimaskOutputInSam = try c.decodeIfPresent(Bool.self, forKey: .multimaskOutputInSam) ?? true
        multimaskOutputForTracking = try c.decodeIfPresent(Bool.self, forKey: .multimaskOutputForTracking) ?? true
        multimaskMinPointCount = try c.decodeIfPresent(Int.self, forKey: .multimaskMinPointCount) ?? 0
        multimaskMaxPointCount = try c.decodeIfPresent(Int.self, forKey: .multimaskMaxPointCount) ?? 1
        maxConditioningFrames = try c.decodeIfPresent(Int.self, forKey: .maxConditioningFrames) ?? -1
        maxObjectPointers = try c.decodeIfPresent(Int.self, forKey: .maxObjectPointers) ?? 16
    }

    /// transformers' `_use_multimask` for a frame with `pointCount` prompt points (box corners count).
    public func multimask(initial: Bool, pointCount: Int) -> Bool {
        multimaskOutputInSam && (initial || multimaskOutputForTracking)
            && (multimaskMinPointCount ... multimaskMaxPointCount).contains(pointCount)
    }
}

/// Where a bundle's weights came from.
public struct ModelRecord: Codable, Hashable, Sendable {
    public let source: String
    public let weightsSHA256: String
    public let size: String?
    public let seed: Int?

    enum CodingKeys: String, CodingKey {
        case source, size, seed
        case weightsSHA256 = "weights_sha256"
    }
}

/// The recipe a bundle was exported with (the fields an app needs).
public struct RecipeRecord: Codable, Hashable, Sendable {
    public let name: String
    public let description: String?
    public let backend: String
    public let precision: String
    public let delegate: String?
    public let computeUnits: String?
    public let deploymentTarget: String?
    /// "matmul" or "fused" (the runtime's own attention op); absent in bundles written before recipes chose.
    public let attention: String?

    enum CodingKeys: String, CodingKey {
        case name, description, backend, precision, delegate, attention
        case computeUnits = "compute_units", deploymentTarget = "deployment_target"
    }
}

/// One stage of a bundle: its artifact, checksum, size, contract and backend facts.
public struct StageRecord: Codable, Hashable, Sendable {
    public let artifact: String
    public let sha256: String
    public let sizeBytes: Int
    public let spec: StageSpec
    public let backend: [String: JSONValue]

    enum CodingKeys: String, CodingKey {
        case artifact, sha256, spec, backend
        case sizeBytes = "size_bytes"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        artifact = try c.decode(String.self, forKey: .artifact)
        sha256 = try c.decode(String.self, forKey: .sha256)
        sizeBytes = try c.decode(Int.self, forKey: .sizeBytes)
        spec = try c.decode(StageSpec.self, forKey: .spec)
        backend = try c.decodeIfPresent([String: JSONValue].self, forKey: .backend) ?? [:]
    }
}

/// `manifest.json`: the contract between edgetam-export and an app.
public struct Manifest: Codable, Hashable, Sendable {
    /// The stages in pipeline order, as the exporter writes them.
    public static let pipelineOrder = ["image_encoder", "prompt_decoder", "memory_encoder", "memory_attention",
                                       "mask_prompt_encoder"]

    public let formatVersion: Int
    public let created: String?
    public let model: ModelRecord
    public let recipe: RecipeRecord
    public let shapes: StageShapes
    public let tracking: TrackingSettings
    public let stages: [String: StageRecord]

    enum CodingKeys: String, CodingKey {
        case created, model, recipe, shapes, tracking, stages
        case formatVersion = "format_version"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        formatVersion = try c.decode(Int.self, forKey: .formatVersion)
        created = try c.decodeIfPresent(String.self, forKey: .created)
        model = try c.decode(ModelRecord.self, forKey: .model)
        recipe = try c.decode(RecipeRecord.self, forKey: .recipe)
        shapes = try c.decode(StageShapes.self, forKey: .shapes)
        tracking = try c.decodeIfPresent(TrackingSettings.self, forKey: .tracking) ?? TrackingSettings()
        stages = try c.decode([String: StageRecord].self, forKey: .stages)
    }

    /// Capacities a manifest may hold, as the Python toolkit bounds them (`stages.spec.CAPACITY_BOUNDS`): below, the
    /// prompts do not fit; above, the stage tensors outgrow a phone (a billion memory slots would allocate terabytes).
    public var capacities: [(name: String, value: Int, bounds: ClosedRange<Int>)] {
        [("point_slots", shapes.pointSlots, 4 ... 64), ("max_objects", shapes.maxObjects, 1 ... 64),
         ("memory_slots", shapes.memorySlots, 1 ... 64), ("pointer_slots", shapes.pointerSlots, 1 ... 256)]
    }

    /// What makes a decoded manifest unusable (nil: nothing): a stage record carrying another stage's contract,
    /// two stages on one file, or a capacity out of bounds, in the words `read_bundle` uses.
    public var contractProblem: String? {
        var artifacts: [String: String] = [:]
        for name in stageNames {
            let record = stages[name]!
            if record.spec.name != name { return "stage '\(name)' carries the contract of '\(record.spec.name)'" }
            if let other = artifacts[record.artifact] {
                return "stages '\(other)' and '\(name)' point at one file '\(record.artifact)'"
            }
            artifacts[record.artifact] = name
        }
        for capacity in capacities where !capacity.bounds.contains(capacity.value) {
            return "shapes.\(capacity.name) must be a whole number from \(capacity.bounds.lowerBound) to "
                + "\(capacity.bounds.upperBound), got \(capacity.value)"
        }
        return nil
    }

    /// Stage names in pipeline order (stages a newer exporter adds come last, by name).
    public var stageNames: [String] {
        Self.pipelineOrder.filter { stages[$0] != nil } + stages.keys.filter { !Self.pipelineOrder.contains($0) }.sorted()
    }
}
