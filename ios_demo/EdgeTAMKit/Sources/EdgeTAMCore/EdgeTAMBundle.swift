import Foundation

/// A bundle folder exported by edgetam-export, opened and checked: its manifest, and every artifact
/// present with the checksum the manifest records (as `edgetam_export.bundle.read_bundle` checks it).
public struct EdgeTAMBundle: Sendable {
    /// The manifest format this EdgeTAMKit reads (`FORMAT_VERSION` in Python); newer bundles are refused.
    public static let formatVersion = 2
    public static let manifestName = "manifest.json"

    public let url: URL
    public let manifest: Manifest
    /// SHA-256 of `manifest.json`, which device benchmark runs record.
    public let manifestSHA256: String

    /// Open the bundle at `url`. With `verifyChecksums`, every artifact is hashed (seconds for a full
    /// bundle on a phone); an app can verify once after copying a bundle in, then open without.
    public static func open(at url: URL, verifyChecksums: Bool = true) throws -> EdgeTAMBundle {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder), isFolder.boolValue else {
            throw EdgeTAMError.bundleNotFound(path: url.path)
        }
        let manifestURL = url.appendingPathComponent(manifestName)
        let data: Data
        do {
            data = try Data(contentsOf: manifestURL)
        } catch {
            throw EdgeTAMError.manifestUnreadable(path: manifestURL.path, reason: "no \(manifestName)")
        }
        struct Version: Decodable { let format_version: Int }
        let version: Int
        do {
            version = try JSONDecoder().decode(Version.self, from: data).format_version
        } catch {
            throw EdgeTAMError.manifestUnreadable(path: manifestURL.path, reason: "not a manifest of edgetam-export")
        }
        guard version >= 1 else {
            throw EdgeTAMError.manifestIncomplete(path: manifestURL.path, reason: "format_version \(version) is not a version")
        }
        guard version <= formatVersion else { throw EdgeTAMError.newerFormat(found: version, supported: formatVersion) }
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: data)
        } catch let error as DecodingError {
            throw EdgeTAMError.manifestIncomplete(path: manifestURL.path, reason: describe(error))
        }
        if let problem = manifest.contractProblem {
            throw EdgeTAMError.manifestIncomplete(path: manifestURL.path, reason: problem)
        }
        for name in manifest.stageNames {
            let record = manifest.stages[name]!
            guard !record.artifact.contains("/"), record.artifact != "..", record.artifact != "." else {
                throw EdgeTAMError.manifestIncomplete(path: manifestURL.path,
                                                      reason: "stages.\(name).artifact must be a file name inside the bundle")
            }
            let artifact = url.appendingPathComponent(record.artifact)
            guard FileManager.default.fileExists(atPath: artifact.path) else {
                throw EdgeTAMError.artifactMissing(stage: name, file: record.artifact)
            }
            if verifyChecksums, try Checksum.hex(ofFileAt: artifact) != record.sha256 {
                throw EdgeTAMError.checksumMismatch(stage: name, file: record.artifact)
            }
        }
        return EdgeTAMBundle(url: url, manifest: manifest, manifestSHA256: Checksum.hex(of: data))
    }

    /// The artifact file (or `.mlpackage` folder) of a stage.
    public func artifactURL(_ stage: String) throws -> URL {
        guard let record = manifest.stages[stage] else { throw EdgeTAMError.unknownStage(stage) }
        return url.appendingPathComponent(record.artifact)
    }

    /// The contract of a stage.
    public func spec(_ stage: String) throws -> StageSpec {
        guard let record = manifest.stages[stage] else { throw EdgeTAMError.unknownStage(stage) }
        return record.spec
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case let .keyNotFound(key, context):
            let prefix = path(context)
            return "missing \(prefix.isEmpty ? "" : prefix + ".")\(key.stringValue)"
        case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
            return "invalid \(path(context))"
        @unknown default:
            return "invalid"
        }
    }
}

extension EdgeTAMBundle {
    /// The image predictor over this bundle's `image_encoder` and `prompt_decoder` runners (any engine).
    public func predictor(runners: [String: any StageRunner]) throws -> EdgeTAMPredictor {
        guard let encoder = runners["image_encoder"] else { throw EdgeTAMError.unknownStage("image_encoder") }
        guard let decoder = runners["prompt_decoder"] else { throw EdgeTAMError.unknownStage("prompt_decoder") }
        return EdgeTAMPredictor(shapes: manifest.shapes, imageEncoder: encoder, promptDecoder: decoder)
    }

    /// The video tracker over this bundle's runners, with the manifest's tracking settings.
    public func tracker(runners: [String: any StageRunner], maxTrackedObjects: Int = 64) throws -> EdgeTAMTracker {
        try EdgeTAMTracker(shapes: manifest.shapes, settings: manifest.tracking, runners: runners, maxTrackedObjects: maxTrackedObjects)
    }

    /// Refuse a bundle of another backend before loading anything, in one line naming what to do instead.
    public func requireBackend(_ backend: String, stage: String, otherwise fix: String) throws {
        guard manifest.recipe.backend == backend else {
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "'\(manifest.recipe.name)' is a \(manifest.recipe.backend) bundle; \(fix)")
        }
    }
}

/// A bundle's stages loaded by one engine (Core ML, ExecuTorch's Swift API, ExecuTorch's C++ runtime), with the
/// predictor and tracker over them: written once here, for every engine.
public protocol LoadedBundle: Sendable {
    associatedtype Runner: StageRunner
    var bundle: EdgeTAMBundle { get }
    var runners: [String: Runner] { get }
}

extension LoadedBundle {
    /// The runners as EdgeTAMKit's protocol type.
    public var stageRunners: [String: any StageRunner] { runners.mapValues { $0 as any StageRunner } }

    public func predictor() throws -> EdgeTAMPredictor { try bundle.predictor(runners: stageRunners) }

    public func tracker(maxTrackedObjects: Int = 64) throws -> EdgeTAMTracker {
        try bundle.tracker(runners: stageRunners, maxTrackedObjects: maxTrackedObjects)
    }
}
