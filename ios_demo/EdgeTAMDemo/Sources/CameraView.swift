import AVFoundation
import EdgeTAMCore
import SwiftUI

/// Live tracking: tap an object in the camera picture; every following frame is tracked as it arrives (frames that
/// come while one is processed are dropped). Memory stays bounded however long it runs: `LiveFrames` keeps the
/// last 4 frames and the session's memory window the last 32 frame memories; the footprint is shown live.
struct CameraView: View {
    @Environment(AppModel.self) private var model
    @State private var camera = CameraTracker()

    var body: some View {
        VStack {
            GeometryReader { geometry in
                ZStack {
                    if let image = camera.shown {
                        Image(decorative: image, scale: 1).resizable().aspectRatio(contentMode: .fit)
                            .frame(width: geometry.size.width, height: geometry.size.height)
                            .gesture(SpatialTapGesture().onEnded { tap in
                                let fit = AspectFit(imageWidth: camera.width, imageHeight: camera.height, in: geometry.size)
                                camera.pendingClick = fit.pixel(tap.location)
                            })
                    } else {
                        ContentUnavailableView("Camera", systemImage: "camera", description: Text("Tap an object to track it"))
                    }
                }
            }
            Text(camera.stats).font(.caption.monospacedDigit())
            Button("Reset") { camera.reset() }
        }
        .task {
            do {
                camera.tracker = try model.tracker()
                try await camera.start()
            } catch {
                model.problem = "\(error)"
            }
        }
        .onDisappear { camera.stop() }
    }
}

@MainActor @Observable
final class CameraTracker: NSObject, AVCaptureVideoDataOutputSampleBufferDelegate {
    var shown: CGImage?
    var stats = ""
    var width = 1, height = 1
    var pendingClick: (x: Double, y: Double)?
    var tracker: EdgeTAMTracker?

    @ObservationIgnored private let capture = AVCaptureSession()
    @ObservationIgnored private let queue = DispatchQueue(label: "edgetam.camera")
    @ObservationIgnored private var frames: LiveFrames?
    @ObservationIgnored private var session: TrackingSession?
    @ObservationIgnored private var busy = false
    @ObservationIgnored private var tracking = false
    @ObservationIgnored private var stamps: [Date] = []

    func start() async throws {
        guard await AVCaptureDevice.requestAccess(for: .video) else {
            throw EdgeTAMError.inputMismatch(stage: "camera", input: "permission", reason: "camera access denied; allow it in Settings")
        }
        // Configured once: every later visit to the tab only restarts the session (adding the same input or output
        // twice raises an exception).
        if capture.inputs.isEmpty {
            guard let device = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back) else { return }
            let input = try AVCaptureDeviceInput(device: device)
            let output = AVCaptureVideoDataOutput()
            output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
            output.alwaysDiscardsLateVideoFrames = true
            output.setSampleBufferDelegate(self, queue: queue)
            capture.beginConfiguration()
            capture.sessionPreset = .hd1280x720
            guard capture.canAddInput(input), capture.canAddOutput(output) else {
                capture.commitConfiguration()
                throw EdgeTAMError.inputMismatch(stage: "camera", input: "capture session",
                                                 reason: "the camera cannot be added now (in use by another app?)")
            }
            capture.addInput(input)
            capture.addOutput(output)
            output.connection(with: .video)?.videoRotationAngle = 90
            capture.commitConfiguration()
        }
        queue.async { [capture] in capture.startRunning() }
    }

    func stop() { queue.async { [capture] in capture.stopRunning() } }

    func reset() {
        session = nil
        frames = nil
        tracking = false
    }

    nonisolated func captureOutput(_ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer, from connection: AVCaptureConnection) {
        guard let buffer = CMSampleBufferGetImageBuffer(sampleBuffer), let picture = try? ImageConversion.rgbImage(buffer) else { return }
        Task { @MainActor in await self.process(picture) }
    }

    private func process(_ picture: RGBImage) async {
        guard !busy, let tracker else { return }  // drop frames while one is processed
        busy = true
        defer { busy = false }
        do {
            if frames == nil || session == nil {
                let live = LiveFrames(width: picture.width, height: picture.height, capacity: 4)
                frames = live
                session = try tracker.initSession(live, memoryWindow: 32)
                width = picture.width; height = picture.height
            }
            guard let frames, let session else { return }
            let index = try frames.append(picture)
            var masks: [[UInt8]] = []
            if let click = pendingClick {
                pendingClick = nil
                try await session.addPrompt(frame: index, object: 1, clicks: [Click(x: click.x, y: click.y)])
                tracking = true
            }
            if tracking {
                let result = try await session.runFrame(index)
                masks = (0 ..< result.objectIds.count).map { result.mask(object: $0) }
                stamps.append(Date())
                if stamps.count > 20 { stamps.removeFirst() }
            }
            shown = ImageConversion.overlay(picture, masks: masks, colorIndices: Array(masks.indices))
            let rate = stamps.count > 1 ? Double(stamps.count - 1) / stamps.last!.timeIntervalSince(stamps.first!) : 0
            stats = String(format: "frame %d  %.1f FPS  %.0f MB  %d frames held", index, rate,
                           MemoryFootprint.megabytes(), frames.heldFrames)
        } catch {
            stats = "\(error)"
        }
    }
}

/// The app's physical memory footprint (what iOS's memory limit counts).
enum MemoryFootprint {
    static func megabytes() -> Double {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
        let status = withUnsafeMutablePointer(to: &info) {
            $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) { task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count) }
        }
        return status == KERN_SUCCESS ? Double(info.phys_footprint) / 1_048_576 : 0
    }
}
