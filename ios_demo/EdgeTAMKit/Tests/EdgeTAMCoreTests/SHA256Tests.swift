import Foundation
import Testing
@testable import EdgeTAMCore

/// FIPS 180-4 test vectors (NIST CSRC examples and the long-message vector), through `Checksum` (CryptoKit on Apple
/// platforms) and through the portable implementation directly (what Linux uses), so both are checked on a Mac.
@Suite struct SHA256Tests {
    @Test func nistShortVectors() {
        #expect(Checksum.hex(of: Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Checksum.hex(of: [UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Checksum.hex(of: Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(Checksum.hex(of: Array(("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                + "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu").utf8))
            == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    }

    @Test func portableImplementationMatchesTheVectors() {
        var hasher = PortableSHA256()
        hasher.update(Array("abc".utf8))
        #expect(Checksum.hexString(hasher.finalize()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func oneMillionAsInUnevenPieces() {
        var hasher = PortableSHA256()
        var left = 1_000_000
        var piece = 1
        while left > 0 {  // pieces of 1, 2, 3, ... bytes cross every block boundary
            let count = min(piece, left)
            hasher.update([UInt8](repeating: UInt8(ascii: "a"), count: count))
            left -= count
            piece += 1
        }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        #expect(digest == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func foldersHashLikeThePythonToolkit() throws {
        // bundle.sha256_of: every file in sorted(Path.rglob("*")) order (component by component), its
        // relative path then its bytes. "a-b/x" sorts after "a/b" by components, before it as a string.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sha-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        for (path, text) in [("a/b", "1"), ("a-b/x", "2"), ("c", "3")] {
            let url = folder.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(text.utf8).write(to: url)
        }
        #expect(try Checksum.filesInside(folder) == ["a/b", "a-b/x", "c"])
        #expect(try Checksum.hex(ofFileAt: folder) == Checksum.hex(of: Array("a/b1a-b/x2c3".utf8)))
        let file = folder.appendingPathComponent("c")
        #expect(try Checksum.hex(ofFileAt: file) == Checksum.hex(of: Array("3".utf8)))
    }
}
