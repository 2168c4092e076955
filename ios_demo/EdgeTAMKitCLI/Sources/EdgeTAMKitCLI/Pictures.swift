import CPictureDecoding
import EdgeTAMCore
import Foundation

/// Pictures as the Python CLI reads them: decoded to 8-bit RGB and shown as displayed (EXIF orientation applied).
enum Pictures {
    static let extensions: Set<String> = ["jpg", "jpeg", "png"]

    /// `what` names the file in the one-line error ("image", "frame").
    static func load(_ path: String, what: String = "image") throws -> RGBImage { try decode(path, what: what, nonzero: false) }

    /// A mask picture as the Python runtime's `nonzero_pixels` reads it: 1 where the object is (a 16-bit sample
    /// above 0, or luma above 0), row after row, as displayed.
    static func mask(_ path: String) throws -> (width: Int, height: Int, inside: [UInt8]) {
        let picture = try decode(path, what: "mask", nonzero: true)
        let inside = stride(from: 0, to: picture.pixels.count, by: 3).map { picture.pixels[$0] == 0 ? UInt8(0) : 1 }
        return (picture.width, picture.height, inside)
    }

    private static func decode(_ path: String, what: String, nonzero: Bool) throws -> RGBImage {
        guard FileManager.default.fileExists(atPath: path) else { throw UsageError("\(what) '\(path)' does not exist") }
        var picture = pd_picture()
        var error = [CChar](repeating: 0, count: 256)
        let status = pd_decode(path, nonzero ? 1 : 0, &picture, &error, error.count)
        defer { pd_free(&picture) }
        let reason = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard status == Int32(PD_OK), let rgb = picture.rgb else {
            throw UsageError(status == Int32(PD_TOO_LARGE) ? "\(what) '\(path)' \(reason)" : "cannot read \(what) '\(path)' (\(reason))")
        }
        let count = Int(picture.width) * Int(picture.height) * 3
        let image = try RGBImage(width: Int(picture.width), height: Int(picture.height),
                                 pixels: Array(UnsafeBufferPointer(start: rgb, count: count)))
        return image.displayed(ExifOrientation(rawValue: Int(picture.orientation)) ?? .upright)
    }
}

/// The frames of a folder (JPEG or PNG), in the order of their numbers (`natural_key` of the Python runtime),
/// decoded when the tracker asks for one, so a long video is never held in memory whole.
struct FramesOnDisk: FrameSource {
    let paths: [String]
    let width: Int
    let height: Int

    init(folder: String) throws {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
            throw UsageError("'\(folder)' is not a folder of frames; give a folder of JPEG or PNG frames")
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: folder)
            .filter { !$0.hasPrefix(".") && Pictures.extensions.contains(($0 as NSString).pathExtension.lowercased()) }
        guard !names.isEmpty else { throw UsageError("'\(folder)' holds no .jpg or .png frames") }
        paths = names.sorted { Self.naturalKey($0).lexicographicallyPrecedes(Self.naturalKey($1), by: Self.less) }
            .map { (folder as NSString).appendingPathComponent($0) }
        let first = try Pictures.load(paths[0], what: "frame")
        width = first.width
        height = first.height
    }

    var count: Int { paths.count }

    func frame(_ index: Int) async throws -> RGBImage {
        let picture = try Pictures.load(paths[index], what: "frame")
        guard picture.width == width, picture.height == height else {
            throw UsageError("frame '\(paths[index])' is \(picture.width)x\(picture.height), the video \(width)x\(height); give frames of one size")
        }
        return picture
    }

    /// Digits compare as numbers, the rest as text: "2.jpg" before "10.jpg".
    enum Piece { case number(Int), text(String) }

    static func naturalKey(_ name: String) -> [Piece] {
        var pieces: [Piece] = [], digits = "", letters = ""
        for character in name {
            if character.isASCII && character.isNumber {
                if !letters.isEmpty { pieces.append(.text(letters)); letters = "" }
                digits.append(character)
            } else {
                if !digits.isEmpty { pieces.append(.number(Int(digits) ?? Int.max)); digits = "" }
                letters.append(character)
            }
        }
        if !digits.isEmpty { pieces.append(.number(Int(digits) ?? Int.max)) }
        if !letters.isEmpty { pieces.append(.text(letters)) }
        return pieces
    }

    static func less(_ a: Piece, _ b: Piece) -> Bool {
        switch (a, b) {
        case let (.number(x), .number(y)): x < y
        case let (.text(x), .text(y)): x < y
        case (.number, .text): true
        case (.text, .number): false
        }
    }
}
