import Foundation
import Testing
@testable import EdgeTAMCore

/// A bundle folder written here in the layout edgetam-export writes, with tiny artifacts.
struct SyntheticBundle {
    let url: URL

    init(formatVersion: Int = 1, artifact: String = "image_encoder.onnx", extraManifest: String = "") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("bundle-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        let payload = Data("not really onnx".utf8)
        try payload.write(to: url.appendingPathComponent("image_encoder.onnx"))
        let manifest = """
        {"format_version": \(formatVersion), "created": "2026-11-26T10:00:00+00:00",
         "model": {"source": "random", "size": "tiny", "seed": 0, "config_sha256": "x", "weights_sha256": "abc"},
         "recipe": {"name": "onnx-fp32", "description": "d", "backend": "onnx", "precision": "fp32", "delegate": null,
                    "opset": null, "deployment_target": null, "compute_units": null,
                    "shapes": {"point_slots": 8}, "parity": {"min_psnr_db": 60.0, "min_mask_iou": 0.99}},
         "shapes": {"image_size": 256, "hidden_size": 256, "memory_dim": 64, "memory_tokens": 32, "point_slots": 8,
                    "max_objects": 4, "memory_slots": 7, "pointer_slots": 16, "temporal_encodings": 7,
                    "image_input": false},
         "stages": {"image_encoder": {"artifact": "\(artifact)", "sha256": "\(Checksum.hex(of: payload))",
            "size_bytes": \(payload.count), "export_seconds": {"lower": 1.0}, "backend": {"opset": 18, "nodes": 3},
            "spec": {"name": "image_encoder", "description": "d", "max_objects": 1,
                     "inputs": [{"name": "pixel_values", "shape": [1, 3, 256, 256], "dtype": "float32", "description": "d"}],
                     "outputs": [{"name": "vision_features", "shape": [1, 256, 16, 16], "dtype": "float32",
                                  "description": "d"}]}}}\(extraManifest)}
        """
        try Data(manifest.utf8).write(to: url.appendingPathComponent("manifest.json"))
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

@Suite struct BundleTests {
    @Test func opensAndReadsTheContract() throws {
        let bundle = try SyntheticBundle()
        defer { bundle.remove() }
        let opened = try EdgeTAMBundle.open(at: bundle.url)
        #expect(opened.manifest.stageNames == ["image_encoder"])
        #expect(opened.manifest.recipe.backend == "onnx")
        // A format-1 manifest without `tracking` and `pointer_temporal_encoding`: EdgeTAM's released settings.
        #expect(opened.manifest.tracking == TrackingSettings() && !opened.manifest.shapes.pointerTemporalEncoding)
        let spec = try opened.spec("image_encoder")
        #expect(spec.inputs[0].shape(objects: 1) == [1, 3, 256, 256])
        #expect(opened.manifest.stages["image_encoder"]?.backend["opset"] == .number(18))
        #expect(try opened.artifactURL("image_encoder").lastPathComponent == "image_encoder.onnx")
        #expect(throws: EdgeTAMError.unknownStage("memory_attention")) { try opened.spec("memory_attention") }
    }

    @Test func refusesATamperedArtifact() throws {
        let bundle = try SyntheticBundle()
        defer { bundle.remove() }
        try Data("tampered".utf8).write(to: bundle.url.appendingPathComponent("image_encoder.onnx"))
        #expect(throws: EdgeTAMError.checksumMismatch(stage: "image_encoder", file: "image_encoder.onnx")) {
            try EdgeTAMBundle.open(at: bundle.url)
        }
        #expect(try EdgeTAMBundle.open(at: bundle.url, verifyChecksums: false).manifest.formatVersion == 1)
    }

    @Test func refusesNewerFormatsMissingPiecesAndEscapingPaths() throws {
        let newer = try SyntheticBundle(formatVersion: 3)
        defer { newer.remove() }
        #expect(throws: EdgeTAMError.newerFormat(found: 3, supported: 2)) { try EdgeTAMBundle.open(at: newer.url) }

        let missing = try SyntheticBundle(artifact: "gone.onnx")
        defer { missing.remove() }
        #expect(throws: EdgeTAMError.artifactMissing(stage: "image_encoder", file: "gone.onnx")) {
            try EdgeTAMBundle.open(at: missing.url)
        }

        let escaping = try SyntheticBundle(artifact: "../image_encoder.onnx")
        defer { escaping.remove() }
        #expect(throws: EdgeTAMError.self) { try EdgeTAMBundle.open(at: escaping.url) }

        let nowhere = FileManager.default.temporaryDirectory.appendingPathComponent("no-such-bundle")
        #expect(throws: EdgeTAMError.bundleNotFound(path: nowhere.path)) { try EdgeTAMBundle.open(at: nowhere) }
    }

    /// Manifests that decode but cannot be used: refused on opening, in the Python toolkit's words.
    @Test(arguments: [
        (#""max_objects": 4"#, #""max_objects": 0"#, "shapes.max_objects must be a whole number from 1 to 64, got 0"),
        (#""memory_slots": 7"#, #""memory_slots": 1000000000"#, "shapes.memory_slots must be a whole number from 1 to 64"),
        (#""point_slots": 8"#, #""point_slots": -3"#, "shapes.point_slots must be a whole number from 4 to 64, got -3"),
        (#""format_version": 1"#, #""format_version": 0"#, "format_version 0 is not a version"),
        (#""name": "image_encoder""#, #""name": "prompt_decoder""#, "carries the contract of 'prompt_decoder'"),
    ])
    func refusesManifestsThatCannotBeUsed(original: String, replacement: String, reason: String) throws {
        let bundle = try SyntheticBundle()
        defer { bundle.remove() }
        let manifestURL = bundle.url.appendingPathComponent("manifest.json")
        let text = try String(contentsOf: manifestURL, encoding: .utf8)
        #expect(text.contains(original))
        try Data(text.replacingOccurrences(of: original, with: replacement).utf8).write(to: manifestURL)
        do {
            _ = try EdgeTAMBundle.open(at: bundle.url)
            Issue.record("accepted: \(replacement)")
        } catch let EdgeTAMError.manifestIncomplete(_, found) {
            #expect(found.contains(reason), "\(found)")
        }
    }

    @Test func namesTheMissingKeyOfAnIncompleteManifest() throws {
        let bundle = try SyntheticBundle()
        defer { bundle.remove() }
        try Data(#"{"format_version": 1}"#.utf8).write(to: bundle.url.appendingPathComponent("manifest.json"))
        do {
            _ = try EdgeTAMBundle.open(at: bundle.url)
            Issue.record("an incomplete manifest was accepted")
        } catch let error as EdgeTAMError {
            guard case let .manifestIncomplete(_, reason) = error else {
                Issue.record("wrong error \(error)")
                return
            }
            #expect(reason == "missing model")
            #expect(error.description.contains("re-export the bundle"))
        }
        try Data("{oops".utf8).write(to: bundle.url.appendingPathComponent("manifest.json"))
        #expect(throws: EdgeTAMError.self) { try EdgeTAMBundle.open(at: bundle.url) }
    }

    @Test func deviceRunJSONCarriesTheBundleIdentity() throws {
        let bundle = try SyntheticBundle()
        defer { bundle.remove() }
        let opened = try EdgeTAMBundle.open(at: bundle.url)
        let run = DeviceRun(bundle: opened, device: .init(model: "iPhone16,2", os: "iOS 18.1"),
                            runtime: .init(name: "coreml", version: "8", computeUnits: "all"),
                            stages: [.init(stage: "image_encoder", objects: 1, stats: LatencyStats(milliseconds: [5, 7]))],
                            video: [.init(objects: 1, frames: 30, fps: 31.5)])
        let json = try JSONSerialization.jsonObject(with: try run.json()) as! [String: Any]
        #expect(json["schema_version"] as? Int == 1)
        #expect((json["bundle"] as! [String: Any])["manifest_sha256"] as? String == opened.manifestSHA256)
        #expect(opened.manifestSHA256 == Checksum.hex(of: [UInt8](try Data(contentsOf: bundle.url.appendingPathComponent("manifest.json")))))
        #expect(((json["stages"] as! [[String: Any]])[0]["p50_ms"] as? Double) == 6)
    }
}

/// Bundles the Python toolkit exported, handed over by the pytest suite (`tests/test_swift_kit.py`): the
/// same checksums (an `.onnx` file and `.mlpackage` folders) and contracts must come out here.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] != nil,
                "run through tests/test_swift_kit.py, which exports the bundles first"))
struct PythonBundleTests {
    let fixtures = URL(fileURLWithPath: ProcessInfo.processInfo.environment["EDGETAM_PYTHON_FIXTURES"] ?? "/")

    struct Expected: Decodable {
        let stages: [String: [String: [String]]]  // stage -> "inputs"/"outputs" -> names
        let recipe: String
        let manifest_sha256: String
    }

    struct BankCase: Decodable {
        let conditioning: [Int]
        let tracked: [Int]
        let frame: Int
        let reverse: Bool
        let max_cond: Int
        let frames: Int
        let shapes: StageShapes
        let memory_markers: [Float]
        let time_rows: [Int]
        let pointer_markers: [Float]
        let distances: [Int]
        let max_pointers: Int
        let pointer_time_offset: [Float]
    }

    /// The memory bank chooses the frames, rows, pointers and distances the Python runtime chooses.
    @Test func bankSelectionsMatchPython() throws {
        let cases = try JSONDecoder().decode([BankCase].self, from: Data(contentsOf: fixtures.appendingPathComponent("bank_cases.json")))
        #expect(cases.count >= 8)
        for item in cases {
            var settings = TrackingSettings()
            settings.maxConditioningFrames = item.max_cond
            let chosen = MemoryBank.select(conditioning: item.conditioning, tracked: Set(item.tracked), frameIndex: item.frame,
                                           reverse: item.reverse, shapes: item.shapes, settings: settings, frameCount: item.frames)
            // The markers say which frame and which store (prompted: +0.5) Python packed.
            let marker = { (source: MemoryBank.Source) in Float(source.frame) + (source.conditioning ? 0.5 : 0) }
            #expect(chosen.memories.map { marker($0.source) } == item.memory_markers, "frame \(item.frame)")
            #expect(chosen.memories.map(\.timeRow) == item.time_rows, "frame \(item.frame)")
            #expect(chosen.pointers.map { marker($0.source) } == item.pointer_markers, "frame \(item.frame)")
            #expect(chosen.pointers.map(\.distance) == item.distances && chosen.maxPointers == item.max_pointers)
            let bank = try MemoryBank.pack(memories: chosen.memories, pointers: chosen.pointers, maxPointers: chosen.maxPointers,
                                           shapes: item.shapes) { source in
                let value = marker(source)
                return FrameMemory(maskLogits: [0], objectScore: 1, pointer: [Float](repeating: value, count: item.shapes.hiddenSize),
                                   memoryFeatures: [Float](repeating: value, count: item.shapes.memoryTokens * item.shapes.memoryDim),
                                   memoryPositions: [Float](repeating: 0, count: item.shapes.memoryTokens * item.shapes.memoryDim))
            }
            #expect(bank["pointer_time_offset"]?.floats == item.pointer_time_offset)
            #expect(bank["memory_valid"]?.floats.filter { $0 == 1 }.count == item.memory_markers.count)
        }
    }

    struct OrientationCase: Decodable {
        let orientation: Int
        let stored: [UInt8]
        let width: Int
        let height: Int
        let shown: [UInt8]
        let shown_width: Int
        let shown_height: Int
    }

    /// Each EXIF orientation shows the picture Pillow's `exif_transpose` shows, pixel for pixel.
    @Test func exifOrientationsMatchPillow() throws {
        let cases = try JSONDecoder().decode([OrientationCase].self,
                                             from: Data(contentsOf: fixtures.appendingPathComponent("orientation_cases.json")))
        #expect(cases.count == ExifOrientation.allCases.count)
        for item in cases {
            let orientation = try #require(ExifOrientation(rawValue: item.orientation))
            let shown = try RGBImage(width: item.width, height: item.height, pixels: item.stored).displayed(orientation)
            #expect(shown == (try RGBImage(width: item.shown_width, height: item.shown_height, pixels: item.shown)),
                    "orientation \(item.orientation)")
        }
    }

    struct PromptCase: Decodable {
        let clicks: [[Double]]
        let box: [Double]?
        let coords: [[Float]]
        let labels: [Int32]
    }

    /// Decoder slots (coordinates scaled to model pixels, labels, empty slots) equal the Python runtime's.
    @Test func promptSlotsMatchPython() throws {
        let cases = try JSONDecoder().decode([PromptCase].self, from: Data(contentsOf: fixtures.appendingPathComponent("prompt_cases.json")))
        let prompts = cases.map { item in
            ObjectPrompt(clicks: item.clicks.map { Click(x: $0[0], y: $0[1], positive: $0[2] == 1) },
                         box: item.box.map { Box(x0: $0[0], y0: $0[1], x1: $0[2], y1: $0[3]) })
        }
        for prompt in prompts { try prompt.validate(width: 1800, height: 1200) }
        let (coords, labels) = try packPromptSlots(prompts, slots: 8, scaleX: 1024.0 / 1800.0, scaleY: 1024.0 / 1200.0)
        #expect(labels.ints == cases.flatMap(\.labels))
        // float32 products, bit for bit as NumPy computes them
        #expect(coords.floats == cases.flatMap { $0.coords.flatMap { $0 } })
    }

    @Test(arguments: ["onnx", "coreml"])
    func readsWhatPythonWrote(kind: String) throws {
        let folder = fixtures.appendingPathComponent(kind)
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: folder.appendingPathComponent("expected.json")))
        let opened = try EdgeTAMBundle.open(at: folder.appendingPathComponent("bundle"))
        #expect(opened.manifest.recipe.name == expected.recipe)
        #expect(opened.manifestSHA256 == expected.manifest_sha256)
        #expect(Set(opened.manifest.stageNames) == Set(expected.stages.keys))
        for (stage, names) in expected.stages {
            let spec = try opened.spec(stage)
            #expect(spec.inputs.map(\.name) == names["inputs"])
            #expect(spec.outputs.map(\.name) == names["outputs"])
        }
    }
}
