import EdgeTAMCore
import PhotosUI
import SwiftUI

/// Pick a clip, scrub to any frame, tap to prompt an object there, then track forward with the live FPS shown.
/// Tapping on a tracked frame later corrects that object (or adds a new one) and tracking resumes from there.
/// "Export" writes the masked video and offers it through the share sheet.
struct VideoView: View {
    @Environment(AppModel.self) private var model
    @State private var item: PhotosPickerItem?
    @State private var frames: VideoFileFrames?
    @State private var session: TrackingSession?
    @State private var frameIndex = 0
    @State private var shown: CGImage?
    @State private var shownPicture: RGBImage?
    @State private var results: [Int: FrameResult] = [:]
    @State private var objectId = 1
    @State private var fps = ""
    @State private var tracking: Task<Void, Never>?
    @State private var trackingRun: UUID?
    @State private var exported: URL?

    var body: some View {
        NavigationStack {
            VStack {
                if let shown, let picture = shownPicture {
                    GeometryReader { geometry in
                        let fit = AspectFit(imageWidth: picture.width, imageHeight: picture.height, in: geometry.size)
                        Image(decorative: shown, scale: 1).resizable().aspectRatio(contentMode: .fit)
                            .frame(width: geometry.size.width, height: geometry.size.height)
                            .gesture(SpatialTapGesture().onEnded { tap in Task { await prompt(at: fit.pixel(tap.location)) } })
                    }
                    Slider(value: Binding(get: { Double(frameIndex) }, set: { frameIndex = Int($0); Task { await show(frameIndex) } }),
                           in: 0 ... Double(max(1, (frames?.count ?? 1) - 1)), step: 1)
                    Text("frame \(frameIndex)  \(fps)").font(.caption.monospacedDigit())
                } else {
                    ContentUnavailableView("Pick a video", systemImage: "film", description: Text(model.status))
                }
                HStack {
                    Button("New object") { objectId += 1 }
                    Button(tracking == nil ? "Track" : "Stop") { tracking == nil ? startTracking() : stopTracking() }
                    Button("Export") { Task { await export() } }
                    if let exported { ShareLink(item: exported) }
                }
            }
            .navigationTitle("Video")
            .toolbar { PhotosPicker(selection: $item, matching: .videos) { Image(systemName: "film.stack") } }
            .onChange(of: item) { Task { await open(item) } }
        }
    }

    private func open(_ item: PhotosPickerItem?) async {
        guard let movie = try? await item?.loadTransferable(type: Movie.self) else { return }
        do {
            let opened = try await VideoFileFrames(url: movie.url)
            frames = opened
            session = try model.tracker().initSession(opened)
            results = [:]; objectId = 1; frameIndex = 0; exported = nil
            await show(0)
        } catch {
            model.problem = "\(error)"
        }
    }

    private func show(_ index: Int) async {
        guard let frames, let picture = try? await frames.frame(index) else { return }
        var masks: [[UInt8]] = [], colors: [Int] = []
        if let result = results[index] {
            for (object, id) in result.objectIds.enumerated() {
                masks.append(result.mask(object: object)); colors.append(MaskOverlay.colorIndex(objectId: id))
            }
        }
        shownPicture = picture
        shown = ImageConversion.overlay(picture, masks: masks, colorIndices: colors)
    }

    private func prompt(at point: (x: Double, y: Double)) async {
        guard let session else { return }
        stopTracking()
        do {
            try await session.addPrompt(frame: frameIndex, object: objectId, clicks: [Click(x: point.x, y: point.y)])
            results[frameIndex] = try await session.runFrame(frameIndex)
            await show(frameIndex)
        } catch {
            model.problem = "\(error)"
        }
    }

    private func startTracking() {
        guard let session, let frames else { return }
        let start = frameIndex + 1, count = frames.count - start
        let run = UUID()
        trackingRun = run
        tracking = Task {
            var stamps: [Date] = []
            // The session (an actor) calls its body on its own executor: results come to the view's state through a
            // stream, in order, on the main actor. Cancelling this task cancels the propagation (a child task).
            let (stream, continuation) = AsyncStream.makeStream(of: FrameResult.self)
            let failure = await withTaskGroup(of: String?.self) { group -> String? in
                group.addTask {
                    defer { continuation.finish() }
                    do {
                        try await session.propagate(from: start, maxFrames: count) { result in
                            try Task.checkCancellation()
                            continuation.yield(result)
                        }
                    } catch is CancellationError {
                    } catch {
                        return "\(error)"
                    }
                    return nil
                }
                for await result in stream {
                    results[result.frameIndex] = result
                    frameIndex = result.frameIndex
                    stamps.append(Date())
                    if stamps.count > 10 { stamps.removeFirst() }
                    if stamps.count > 1 {
                        fps = String(format: "%.1f FPS", Double(stamps.count - 1) / stamps.last!.timeIntervalSince(stamps.first!))
                    }
                }
                return await group.next() ?? nil
            }
            if let failure { model.problem = failure }
            await show(frameIndex)
            if trackingRun == run { tracking = nil }  // a newer run keeps its own handle
        }
    }

    private func stopTracking() {
        tracking?.cancel()
        tracking = nil
    }

    private func export() async {
        guard let frames else { return }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("edgetam-masked.mp4")
        do {
            try await MaskedVideoWriter.write(frames: frames, results: results, to: url)
            exported = url
        } catch {
            model.problem = "\(error)"
        }
    }
}
