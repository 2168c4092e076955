import Foundation

/// Every error EdgeTAMKit throws: each case names the problem and the fix, in one line, as the Python
/// toolkit's `EdgeTamExportError` does.
public enum EdgeTAMError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The bundle folder does not exist or is not a folder.
    case bundleNotFound(path: String)
    /// `manifest.json` is missing, unreadable or not JSON.
    case manifestUnreadable(path: String, reason: String)
    /// `manifest.json` parses but lacks keys readers rely on (or holds them with the wrong type).
    case manifestIncomplete(path: String, reason: String)
    /// The bundle was written by a newer edgetam-export than this EdgeTAMKit reads.
    case newerFormat(found: Int, supported: Int)
    /// A stage's artifact named in the manifest is not in the bundle.
    case artifactMissing(stage: String, file: String)
    /// A stage's artifact does not match its manifest checksum (modified or corrupt).
    case checksumMismatch(stage: String, file: String)
    /// The bundle has no stage of this name.
    case unknownStage(String)
    /// A tensor given to a stage does not match its contract.
    case inputMismatch(stage: String, input: String, reason: String)
    /// A click or box lies outside the picture, or is not a finite number.
    case promptOutsideImage(x: Double, y: Double, width: Int, height: Int)
    /// A box with x1 < x0 or y1 < y0.
    case invalidBox([Double])
    /// A point label other than 1 (positive) or 0 (negative).
    case invalidLabel(Int)
    /// An object id the session does not know.
    case unknownObject(Int)
    /// Tracking before any prompt, or an object whose prompted frame was not run yet (nil: no object at all).
    case notPrompted(object: Int?)
    /// A frame index outside the video.
    case frameOutOfRange(frame: Int, count: Int)
    /// Anything a runner reports (Core ML, ExecuTorch, a replayed session).
    case runnerFailed(stage: String, reason: String)

    public var description: String {
        switch self {
        case let .bundleNotFound(path):
            return "bundle '\(path)' does not exist; export one with 'edgetam-export export --out \(path)'"
        case let .manifestUnreadable(path, reason):
            return "'\(path)' is corrupt or unreadable (\(reason)); re-export the bundle"
        case let .manifestIncomplete(path, reason):
            return "'\(path)' is incomplete (\(reason)); re-export the bundle"
        case let .newerFormat(found, supported):
            return "the bundle has format version \(found), newer than this EdgeTAMKit reads (\(supported)); update EdgeTAMKit"
        case let .artifactMissing(stage, file):
            return "the bundle lacks the \(stage) artifact '\(file)'; re-export it"
        case let .checksumMismatch(stage, file):
            return "\(file) (\(stage)) does not match its manifest checksum (modified or corrupt); re-export the bundle"
        case let .unknownStage(name):
            return "the bundle has no stage '\(name)'; re-export it with a current edgetam-export"
        case let .inputMismatch(stage, input, reason):
            return "stage '\(stage)' input '\(input)': \(reason)"
        case let .promptOutsideImage(x, y, width, height):
            return "prompt (\(x), \(y)) lies outside the \(width)x\(height) image; give pixel coordinates inside it"
        case let .invalidBox(box):
            return "box \(box) must be x0,y0,x1,y1 with x1 > x0 and y1 > y0 (a box has an area)"
        case let .invalidLabel(label):
            return "point labels must be 1 (positive) or 0 (negative), got \(label)"
        case let .unknownObject(id):
            return "object \(id) is not in this session; add a prompt for it first"
        case let .notPrompted(object?):
            return "object \(object) has no prompted frame yet: run the prompted frame after each addPrompt"
        case .notPrompted(nil):
            return "no objects to track: add a prompt and run its frame first"
        case let .frameOutOfRange(frame, count):
            return "frame \(frame) does not exist: the video has frames 0 to \(count - 1)"
        case let .runnerFailed(stage, reason):
            return "stage '\(stage)' failed: \(reason)"
        }
    }
}
