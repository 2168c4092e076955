import AVFoundation
import CoreTransferable
import EdgeTAMCore
import UIKit
import UniformTypeIdentifiers

/// A video file's frames, decoded on demand (`AVAssetImageGenerator`, exact times) and scaled to at most
/// 1280 pixels on the long side; the tracker reads each frame once as it goes.
final class VideoFileFrames: FrameSource, @unchecked Sendable {
    let count: Int
    let width: Int
    let height: Int
    let framesPerSecond: Double
    private let generator: AVAssetImageGenerator

    init(url: URL) async throws {
        let asset = AVURLAsset(url: url)
        guard let track = try await asset.loadTracks(withMediaType: .video).first else {
            throw EdgeTAMError.inputMismatch(stage: "video", input: url.lastPathComponent, reason: "no video track")
        }
        let (size, transform, rate, duration) = try await track.load(.naturalSize, .preferredTransform, .nominalFrameRate, .timeRange)
        let oriented = size.applying(transform)
        let scale = min(1, 1280 / max(abs(oriented.width), abs(oriented.height)))
        width = Int(abs(oriented.width) * scale)
        height = Int(abs(oriented.height) * scale)
        framesPerSecond = Double(rate > 0 ? rate : 30)
        count = max(1, Int(duration.duration.seconds * framesPerSecond))
        generator = AVAssetImageGenerator(asset: asset)
        generator.appliesPreferredTrackTransform = true
        generator.requestedTimeToleranceBefore = .zero
        generator.requestedTimeToleranceAfter = .zero
        generator.maximumSize = CGSize(width: width, height: height)
    }

    func frame(_ index: Int) async throws -> RGBImage {
        let time = CMTime(seconds: Double(index) / framesPerSecond, preferredTimescale: 600)
        let (image, _) = try await generator.image(at: time)
        // Drawn into exactly width x height: the generator's picture may be a pixel off the truncated size.
        return try ImageConversion.rgbImage(UIImage(cgImage: image), width: width, height: height)
    }
}

/// A movie picked from the photo library, copied to a temporary file.
struct Movie: Transferable {
    let url: URL
    static var transferRepresentation: some TransferRepresentation {
        FileRepresentation(contentType: .movie) { SentTransferredFile($0.url) } importing: { received in
            let copy = FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID()).\(received.file.pathExtension)")
            try FileManager.default.copyItem(at: received.file, to: copy)
            return Movie(url: copy)
        }
    }
}

/// Writes frames with their mask overlays to an H.264 .mp4.
enum MaskedVideoWriter {
    static func write(frames: VideoFileFrames, results: [Int: FrameResult], to url: URL) async throws {
        try? FileManager.default.removeItem(at: url)
        let writer = try AVAssetWriter(outputURL: url, fileType: .mp4)
        let input = AVAssetWriterInput(mediaType: .video, outputSettings: [
            AVVideoCodecKey: AVVideoCodecType.h264, AVVideoWidthKey: frames.width, AVVideoHeightKey: frames.height,
        ])
        let adaptor = AVAssetWriterInputPixelBufferAdaptor(assetWriterInput: input, sourcePixelBufferAttributes: [
            kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA,
            kCVPixelBufferWidthKey as String: frames.width, kCVPixelBufferHeightKey as String: frames.height,
        ])
        writer.add(input)
        writer.startWriting()
        writer.startSession(atSourceTime: .zero)
        for index in 0 ..< frames.count {
            let picture = try await frames.frame(index)
            var masks: [[UInt8]] = [], colors: [Int] = []
            if let result = results[index] {
                for (object, id) in result.objectIds.enumerated() {
                    masks.append(result.mask(object: object)); colors.append(MaskOverlay.colorIndex(objectId: id))
                }
            }
            let rgba = MaskOverlay.rgba(picture: picture, masks: masks, colorIndices: colors)
            guard let pool = adaptor.pixelBufferPool else { break }
            var buffer: CVPixelBuffer?
            CVPixelBufferPoolCreatePixelBuffer(nil, pool, &buffer)
            guard let buffer else { continue }
            CVPixelBufferLockBaseAddress(buffer, [])
            let base = CVPixelBufferGetBaseAddress(buffer)!.assumingMemoryBound(to: UInt8.self)
            let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
            for y in 0 ..< frames.height {
                for x in 0 ..< frames.width {
                    let s = (y * frames.width + x) * 4, t = y * rowBytes + x * 4
                    base[t] = rgba[s + 2]; base[t + 1] = rgba[s + 1]; base[t + 2] = rgba[s]; base[t + 3] = 255
                }
            }
            CVPixelBufferUnlockBaseAddress(buffer, [])
            while !input.isReadyForMoreMediaData { try await Task.sleep(nanoseconds: 2_000_000) }
            adaptor.append(buffer, withPresentationTime: CMTime(value: CMTimeValue(index * 600) / CMTimeValue(max(1, Int(frames.framesPerSecond))), timescale: 600))
        }
        input.markAsFinished()
        await writer.finishWriting()
        if writer.status != .completed {
            throw EdgeTAMError.runnerFailed(stage: "export", reason: writer.error?.localizedDescription ?? "the video writer failed")
        }
    }
}
