import EdgeTAMCore
import Foundation

/// A mistake in what the user asked for: printed as one `error:` line, exit status 2 (as the Python CLI).
struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A command line split into positionals, repeatable `--name value` options and `--flag`s, checked against what
/// the subcommand accepts so that a misspelt option is refused rather than ignored.
struct Arguments {
    private(set) var positionals: [String] = []
    private var options: [String: [String]] = [:]
    private var flags: Set<String> = []

    init(_ words: [String], options known: Set<String>, flags knownFlags: Set<String> = []) throws {
        var index = 0
        while index < words.count {
            let word = words[index]
            if word.hasPrefix("--") {
                let equals = word.firstIndex(of: "=")
                let name = equals.map { String(word[..<$0]) } ?? word
                let inline = equals.map { String(word[word.index(after: $0)...]) }
                if knownFlags.contains(name), inline == nil {
                    flags.insert(name)
                } else if known.contains(name) {
                    if let inline {
                        options[name, default: []].append(inline)
                    } else {
                        guard index + 1 < words.count else { throw UsageError("\(name) needs a value") }
                        index += 1
                        options[name, default: []].append(words[index])
                    }
                } else {
                    let accepted = (known.union(knownFlags)).sorted().joined(separator: ", ")
                    throw UsageError("no such option: \(name) (this command takes \(accepted))")
                }
            } else {
                positionals.append(word)
            }
            index += 1
        }
    }

    func all(_ name: String) -> [String] { options[name] ?? [] }

    func one(_ name: String) throws -> String? {
        let values = all(name)
        guard values.count <= 1 else { throw UsageError("\(name) is given \(values.count) times; give it once") }
        return values.first
    }

    func required(_ name: String, _ what: String) throws -> String {
        guard let value = try one(name) else { throw UsageError("missing option \(name) (\(what))") }
        return value
    }

    func int(_ name: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
        try int(name, in: range) ?? fallback
    }

    /// A whole-number option within `range`, nil when not given.
    func int(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = try one(name) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw UsageError("\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), got '\(text)'")
        }
        return value
    }

    func has(_ flag: String) -> Bool { flags.contains(flag) }

    /// The single positional argument `what` names.
    func positional(_ what: String) throws -> String {
        guard positionals.count == 1 else {
            throw UsageError(positionals.isEmpty ? "missing argument \(what)" : "one \(what) expected, got \(positionals.count): \(positionals.joined(separator: " "))")
        }
        return positionals[0]
    }
}

/// One `--point` or `--box` of the command line: `[FRAME:][OBJ:]numbers` as the Python CLI's `parse_prompts` reads it.
struct PromptText {
    let frame: Int?
    let object: Int?
    let numbers: [Double]
    let positive: Bool

    /// `framed`: FRAME and OBJ are required (`track`); otherwise only OBJ may be given (`segment`).
    static func parse(_ texts: [String], option: String, framed: Bool) throws -> [PromptText] {
        let counts = option == "--point" ? [2, 3] : [4]
        let usage = (framed ? "FRAME:OBJ:" : "[OBJ:]") + (option == "--point" ? "X,Y[,LABEL]" : "X0,Y0,X1,Y1")
        return try texts.map { text in
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count <= 3 else { throw UsageError("\(option) '\(text)' is not \(usage)") }
            let padded = [String](repeating: "", count: 3 - parts.count) + parts
            let numbers = padded[2].split(separator: ",", omittingEmptySubsequences: false).map { Double($0) }
            let frame = padded[0].isEmpty ? nil : Int(padded[0]), object = padded[1].isEmpty ? nil : Int(padded[1])
            guard numbers.allSatisfy({ $0 != nil }), counts.contains(numbers.count),
                  padded[0].isEmpty || frame != nil, padded[1].isEmpty || object != nil,
                  framed ? (frame != nil && object != nil) : padded[0].isEmpty,
                  (frame ?? 0) >= 0, (object ?? 0) >= 0 else {
                throw UsageError("\(option) '\(text)' is not \(usage)")
            }
            let values = numbers.map { $0! }
            guard values.allSatisfy(\.isFinite) else { throw UsageError("\(option) '\(text)' has a value that is not a finite number") }
            if values.count == 3, values[2] != 0, values[2] != 1 {
                throw UsageError("\(option) '\(text)': the label must be 1 (positive) or 0 (negative), got \(values[2])")
            }
            return PromptText(frame: frame, object: object, numbers: values, positive: values.count == 3 ? values[2] == 1 : true)
        }
    }
}

/// Clicks and boxes grouped into one `ObjectPrompt` per key (`group_prompts` of the Python runtime): a key with two
/// boxes is refused, naming it.
func groupPrompts<Key: Hashable>(clicks: [(Key, Click)], boxes: [(Key, Box)], name: (Key) -> String) throws -> [Key: ObjectPrompt] {
    var prompts: [Key: ObjectPrompt] = [:]
    for (key, click) in clicks { prompts[key, default: ObjectPrompt()].clicks.append(click) }
    for (key, box) in boxes {
        guard prompts[key]?.box == nil else { throw UsageError("\(name(key)) has several boxes; give each box its own object") }
        prompts[key, default: ObjectPrompt()].box = box
    }
    return prompts
}
