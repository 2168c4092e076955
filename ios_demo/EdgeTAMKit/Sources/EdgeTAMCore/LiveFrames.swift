import Foundation

/// Camera frames for a live tracking session: frames are appended as they arrive and only the last
/// `capacity` are kept, so a session of any length holds bounded memory (the session's `memoryWindow`
/// bounds the frame memories the same way). Frame indices keep counting up; an evicted frame cannot be read.
public final class LiveFrames: FrameSource, @unchecked Sendable {
    public let width: Int
    public let height: Int
    public let capacity: Int
    private let lock = NSLock()
    private var kept: [Int: RGBImage] = [:]
    private var appended = 0

    public init(width: Int, height: Int, capacity: Int = 4) {
        precondition(capacity >= 1, "keep at least one frame")
        self.width = width; self.height = height; self.capacity = capacity
    }

    /// Frames appended so far (the index of the next frame).
    public var count: Int { lock.withLock { appended } }

    /// Add the newest frame; returns its index.
    @discardableResult
    public func append(_ frame: RGBImage) throws -> Int {
        guard frame.width == width, frame.height == height else {
            throw EdgeTAMError.inputMismatch(stage: "image_encoder", input: "image",
                                             reason: "camera frame \(frame.width)x\(frame.height) differs from the session's \(width)x\(height)")
        }
        return lock.withLock {
            kept[appended] = frame
            kept[appended - capacity] = nil
            appended += 1
            return appended - 1
        }
    }

    /// Frames held now (at most `capacity`).
    public var heldFrames: Int { lock.withLock { kept.count } }

    public func frame(_ index: Int) async throws -> RGBImage {
        guard let frame = lock.withLock({ kept[index] }) else {
            throw EdgeTAMError.frameOutOfRange(frame: index, count: count)
        }
        return frame
    }
}
