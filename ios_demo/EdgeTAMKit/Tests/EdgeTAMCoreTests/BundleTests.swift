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
         "stages": {"image_encoder": {"artifact": "\(artifact)", "sha256": "\(SHA256.hex(of: payload))",
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
        // Written before `tracking` and `pointer_temporal_encoding` existed: EdgeTAM's released settings.
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
        let newer = try SyntheticBundle(formatVersion: 2)
        defer { newer.remove() }
        #expect(throws: EdgeTAMError.newerFormat(found: 2, supported: 1)) { try EdgeTAMBundle.open(at: newer.url) }

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
        #expect(opened.manifestSHA256 == SHA256.hex(of: [UInt8](try Data(contentsOf: bundle.url.appendingPathComponent("manifest.json")))))
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
