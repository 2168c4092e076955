import Dispatch
import EdgeTAMCore
import Foundation

/// `edgetam-kit`: EdgeTAMKit with ExecuTorch's C++ runtime on a Linux host, flag for flag the Python CLI's
/// `segment` and `track`, plus the device benchmark. Bad input: one `error:` line, exit 2; Ctrl-C: exit 130.
@main
struct EdgeTAMKitCLI {
    static let usage = """
        usage: edgetam-kit segment IMAGE --bundle DIR --point [OBJ:]X,Y[,LABEL] ... [--box [OBJ:]X0,Y0,X1,Y1] --out DIR
                                         [--single-mask | --multimask] [--threads N]
               edgetam-kit track FRAMES_DIR --bundle DIR --point FRAME:OBJ:X,Y[,LABEL] --box FRAME:OBJ:X0,Y0,X1,Y1
                                         --mask FRAME:OBJ:PNG ... --out DIR [--reverse] [--threads N]
               edgetam-kit bench BUNDLE --out run.json [--frames 20] [--objects 1,4] [--runs 10] [--warmup 2]
                                         [--threads N] [--video FRAMES_DIR]
        """

    static func main() async {
        let interrupted = handleInterrupts()
        defer { interrupted.cancel() }

        var words = Array(CommandLine.arguments.dropFirst())
        guard let command = words.first, !["-h", "--help", "help"].contains(command) else {
            print(usage)
            exit(words.isEmpty ? 2 : 0)
        }
        words.removeFirst()
        do {
            switch command {
            case "segment": try await segment(words)
            case "track": try await track(words)
            case "bench": try await bench(words)
            default: throw UsageError("no such command '\(command)'; use segment, track or bench")
            }
        } catch {
            StagedOutput.abandon()
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            exit(2)
        }
    }
}

/// Ctrl-C ends the process with exit status 130 and no half-written output. The handler runs on a dispatch queue
/// of its own, not on the main actor that the commands run on (which it must not wait for).
nonisolated func handleInterrupts() -> any DispatchSourceSignal {
    let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: DispatchQueue(label: "edgetam-kit.interrupt"))
    signal(SIGINT, SIG_IGN)
    source.setEventHandler { @Sendable in StagedOutput.interrupt() }
    source.resume()
    return source
}
