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
        let signals = [SIGINT, SIGTERM].map(handleSignal)
        defer { signals.forEach { $0.cancel() } }

        var words = Array(CommandLine.arguments.dropFirst())
        guard let command = words.first, !["-h", "--help", "help"].contains(command) else {
            if words.isEmpty {
                FileHandle.standardError.write(Data("error: no command given\n\(usage)\n".utf8))
                exit(2)
            }
            print(usage)
            exit(0)
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

/// Ctrl-C (exit 130) and SIGTERM (143) end the process with no half-written output. The handler runs on a dispatch
/// queue of its own, not on the main actor that the commands run on (which it must not wait for).
nonisolated func handleSignal(_ number: Int32) -> any DispatchSourceSignal {
    let source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "edgetam-kit.signal.\(number)"))
    signal(number, SIG_IGN)
    source.setEventHandler { @Sendable in StagedOutput.interrupt(signal: number) }
    source.resume()
    return source
}
