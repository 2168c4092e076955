import CExecuTorchModule
import EdgeTAMCore
import Foundation

/// What result.json and summary.json record as the runtime, beside the bundle's backend.
let runtimeName = "EdgeTAMKit + ExecuTorch C++ (edgetam-kit)"

/// The executorch package version, read from the `version.py` beside the runtime library actually loaded.
func executorchVersion() -> String {
    let library = URL(fileURLWithPath: String(cString: etm_runtime_library()))
    let versionFile = library.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("version.py")
    guard let text = try? String(contentsOf: versionFile, encoding: .utf8),
          let match = text.range(of: #"__version__\s*=\s*['"]([^'"]+)['"]"#, options: .regularExpression) else { return "unknown" }
    return text[match].split(whereSeparator: { $0 == "'" || $0 == "\"" }).dropFirst().first.map(String.init) ?? "unknown"
}

/// This host as a device run names a phone: what ran (EdgeTAMKit on ExecuTorch C++), machine, kernel, CPU and memory.
func hostDevice() -> DeviceRun.Device {
    var names = utsname()
    uname(&names)
    func text<T>(_ field: T) -> String {
        withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let chip = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
        .map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) }
    let memory = Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824
    return DeviceRun.Device(model: "Swift EdgeTAMKit + ExecuTorch C++, \(text(names.machine)) host, \(ProcessInfo.processInfo.activeProcessorCount) cores",
                            os: "\(text(names.sysname)) \(text(names.release))", chip: chip, memoryGB: rounded(memory, 1))
}

/// Peak resident memory of this process (VmHWM), in MB.
func peakMemoryMB() -> Double? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
    return rounded(kilobytes / 1024, 1)
}

/// The sample video `edgetam-export sample-data` downloads: `$EDGETAM_EXPORT_DATA/videos/bedroom`, else `data/`.
func defaultVideoFolder() -> String {
    let data = ProcessInfo.processInfo.environment["EDGETAM_EXPORT_DATA"] ?? "data"
    return (data as NSString).appendingPathComponent("videos/bedroom")
}

/// A device-run file may replace only an earlier device run (never a user's file or a folder).
func checkReportTarget(_ out: URL) throws {
    var isFolder: ObjCBool = false
    guard FileManager.default.fileExists(atPath: out.path, isDirectory: &isFolder) else { return }
    let earlier = (try? Data(contentsOf: out)).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
    guard !isFolder.boolValue, let earlier, ["schema_version", "device", "bundle", "runtime", "stages"].allSatisfy({ earlier[$0] != nil }) else {
        throw UsageError("'\(out.path)' exists and is not a device run written by edgetam-kit; it is never replaced: choose a new --out")
    }
}

/// Write through a temporary file in the same folder, then rename: a reader never sees half a file.
func writeAtomically(_ data: Data, to url: URL) throws {
    let folder = url.deletingLastPathComponent()
    guard FileManager.default.fileExists(atPath: folder.path) else {
        throw UsageError("folder '\(folder.path)' does not exist; create it or choose another --out")
    }
    let temporary = folder.appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
    try data.write(to: temporary)
    guard rename(temporary.path, url.path) == 0 else {
        try? FileManager.default.removeItem(at: temporary)
        throw UsageError("cannot write '\(url.path)'; choose another --out")
    }
}
