import EdgeTAMCore
import Foundation

/// A kind of output folder, as the Python CLI's `safe_output` knows it: recognised by its JSON index file holding
/// certain keys, and replaced only while every file in it is one such an output consists of.
struct OutputKind: Sendable {
    let name: String
    let indexFile: String
    let keys: [String]
    /// Whether a relative path belongs to an output of this kind, given its parsed index file.
    let isOurs: @Sendable ([String: Any], String) -> Bool

    static let segmentation = OutputKind(name: "segmentation result", indexFile: "result.json", keys: ["mode", "masks"]) { index, path in
        let listed = (index["masks"] as? [[String: Any]] ?? []).compactMap { $0["file"] as? String }
        return ["result.json", "overlay.png", "masks"].contains(path) || listed.contains(path)
    }
    static let tracking = OutputKind(name: "tracking result", indexFile: "summary.json", keys: ["frames_tracked", "objects"]) { _, path in
        ["summary.json", "overlay.mp4", "masks"].contains(path) || path.range(of: #"^masks/-?\d+(/\d+\.png)?$"#, options: .regularExpression) != nil
    }

    /// Refuse, in one line, a target that writing this kind there could lose user data in.
    func check(_ out: URL) throws {
        let manager = FileManager.default
        var isFolder: ObjCBool = false
        if (try? manager.destinationOfSymbolicLink(atPath: out.path)) != nil {
            throw UsageError("'\(out.path)' is a symbolic link, not a folder; pass a new folder path to --out")
        }
        guard manager.fileExists(atPath: out.path, isDirectory: &isFolder) else { return }
        guard isFolder.boolValue else { throw UsageError("'\(out.path)' is a file, not a folder; pass a new folder path to --out") }
        let entries = try manager.contentsOfDirectory(atPath: out.path).sorted()
        if entries.isEmpty { return }
        let index = (try? Data(contentsOf: out.appendingPathComponent(indexFile)))
            .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        guard let index, keys.allSatisfy({ index[$0] != nil }) else {
            throw UsageError("'\(out.path)' is a folder that is not a \(name) written by edgetam-export (\(entries.count) entries, e.g. '\(entries[0])'); it is never replaced: choose a new or empty --out")
        }
        let files = (manager.subpaths(atPath: out.path) ?? []).sorted()
        if let foreign = files.first(where: { !isOurs(index, $0) }) {
            throw UsageError("'\(out.path)' holds a \(name) and also files it never wrote (e.g. '\(foreign)'); move them away or choose another --out")
        }
    }
}

/// An output folder written whole or not at all, as the Python CLI's `staged_output` writes it: files go to a hidden
/// staging folder beside `out` (`.<name>.<pid>.partial`, marked with the writing process's id, so either tool removes
/// it once that process is gone), and only a finished result takes `out`'s place. Ctrl-C and SIGTERM remove it.
final class StagedOutput: @unchecked Sendable {
    static let marker = ".edgetam-export-staging"
    let out: URL
    let kind: OutputKind
    let staging: URL
    private static let lock = NSLock()
    nonisolated(unsafe) private static var active: URL?

    init(_ out: URL, kind: OutputKind) throws {
        try kind.check(out)
        self.out = out
        self.kind = kind
        let parent = out.deletingLastPathComponent()
        staging = parent.appendingPathComponent(".\(out.lastPathComponent).\(getpid()).partial", isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true)
            Self.removeStale(beside: out)
            try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: false)
            try Data("\(getpid())\n".utf8).write(to: staging.appendingPathComponent(Self.marker))
        } catch {
            try? FileManager.default.removeItem(at: staging)
            throw UsageError("cannot write the \(kind.name) to '\(out.path)' (\(error.localizedDescription)); choose another --out")
        }
        Self.lock.withLock { Self.active = staging }
    }

    /// Staging folders for `out` whose writing process is gone (killed, crashed): ours or the Python CLI's.
    static func removeStale(beside out: URL) {
        let parent = out.deletingLastPathComponent(), prefix = ".\(out.lastPathComponent)."
        for name in (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        where name.hasPrefix(prefix) && name.hasSuffix(".partial") {
            let candidate = parent.appendingPathComponent(name)
            guard let text = try? String(contentsOf: candidate.appendingPathComponent(marker), encoding: .utf8),
                  let pid = Int32(text.split(whereSeparator: \.isWhitespace).first ?? "") else { continue }  // not ours
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(at: candidate) }
        }
    }

    /// Files are written under the lock that Ctrl-C takes, so none lands in a staging folder already removed.
    func write(_ data: Data, to relative: String) throws {
        try Self.lock.withLock {
            guard Self.active == staging else { throw UsageError("the run was interrupted") }
            let target = staging.appendingPathComponent(relative)
            try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: target)
        }
    }

    func writeJSON(_ object: [String: Any], to relative: String) throws {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        data.append(0x0A)
        try write(data, to: relative)
    }

    /// Put the finished folder in `out`'s place. `out` is checked again first (nothing of the user's may have
    /// appeared there meanwhile); an earlier result of the same kind is replaced, and restored if the move fails.
    func commit() throws {
        let manager = FileManager.default
        let previous = out.deletingLastPathComponent().appendingPathComponent(".\(out.lastPathComponent).\(getpid()).replaced")
        try Self.lock.withLock {
            try kind.check(out)
            try manager.removeItem(at: staging.appendingPathComponent(Self.marker))
            let hadPrevious = manager.fileExists(atPath: out.path)
            if hadPrevious { try manager.moveItem(at: out, to: previous) }
            do {
                try manager.moveItem(at: staging, to: out)
            } catch {
                if hadPrevious { try? manager.moveItem(at: previous, to: out) }
                throw UsageError("cannot put the \(kind.name) in place at '\(out.path)' (\(error.localizedDescription)); choose another --out")
            }
            Self.active = nil
            if hadPrevious { try? manager.removeItem(at: previous) }
        }
    }

    /// Remove the staging folder of an unfinished run (an error).
    static func abandon() {
        lock.withLock {
            if let active { try? FileManager.default.removeItem(at: active) }
            active = nil
        }
    }

    /// Ctrl-C or SIGTERM: remove the staging folder and end the process (128 + the signal) while holding the lock,
    /// so the work in flight can neither write into the removed folder nor put a half result in place.
    static func interrupt(signal: Int32) -> Never {
        lock.lock()
        if let active { try? FileManager.default.removeItem(at: active) }
        FileHandle.standardError.write(Data((signal == SIGINT ? "interrupted\n" : "terminated\n").utf8))
        _exit(128 + signal)
    }
}

/// `weights` (and `warning` for random weights) of result.json / summary.json, as `weights_facts` writes them.
func weightsFacts(_ bundle: EdgeTAMBundle) -> [String: Any] {
    let model = bundle.manifest.model
    guard model.source == "random" else { return ["weights": model.source] }
    return ["weights": model.source,
            "warning": "random weights (seed \(model.seed.map(String.init) ?? "?")): masks are not meaningful; export trained weights with --model path/to/edgetam.pt or a model folder"]
}

func rounded(_ value: Double, _ digits: Int = 3) -> Double {
    let scale = pow(10, Double(digits))
    return (value * scale).rounded() / scale
}
