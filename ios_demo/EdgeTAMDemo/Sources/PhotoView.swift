import EdgeTAMCore
import PhotosUI
import SwiftUI

/// Pick a picture, then prompt: tap = positive click, long press (or the "negative" toggle) = negative click,
/// drag = box. Each change re-decodes the current object's masks from the cached embedding and shows how long
/// the decoder took (the target: a click decoded within 25 ms after the picture is encoded).
struct PhotoView: View {
    @Environment(AppModel.self) private var model
    @State private var item: PhotosPickerItem?
    @State private var picture: RGBImage?
    @State private var embedding: ImageEmbedding?
    @State private var objects: [ObjectPrompt] = [ObjectPrompt()]
    @State private var current = 0
    @State private var negative = false
    /// When the finger went down, to tell a tap (positive click) from a long press (negative click).
    @State private var pressStarted: Date?
    @State private var overlay: CGImage?
    @State private var timing = ""

    var body: some View {
        NavigationStack {
            VStack {
                if let overlay, let picture {
                    GeometryReader { geometry in
                        let fit = AspectFit(imageWidth: picture.width, imageHeight: picture.height, in: geometry.size)
                        Image(decorative: overlay, scale: 1).resizable().aspectRatio(contentMode: .fit)
                            .frame(width: geometry.size.width, height: geometry.size.height)
                            // One gesture for clicks: released within 0.5 s a click of the toggle's kind, held longer a
                            // negative click, where the finger lifts; moving 12 points or more is the box gesture below.
                            .gesture(DragGesture(minimumDistance: 0)
                                .onChanged { value in if pressStarted == nil { pressStarted = value.time } }
                                .onEnded { value in
                                    let held = value.time.timeIntervalSince(pressStarted ?? value.time)
                                    pressStarted = nil
                                    guard hypot(value.translation.width, value.translation.height) < 12 else { return }
                                    add(click: fit.pixel(value.location), positive: !negative && held < 0.5)
                                })
                            .simultaneousGesture(DragGesture(minimumDistance: 12).onEnded { value in
                                let a = fit.pixel(value.startLocation), b = fit.pixel(value.location)
                                setBox(Box(x0: min(a.x, b.x), y0: min(a.y, b.y), x1: max(a.x, b.x), y1: max(a.y, b.y)))
                            })
                    }
                } else {
                    ContentUnavailableView("Pick a photo", systemImage: "photo.on.rectangle", description: Text(model.status))
                }
                Text(timing).font(.caption.monospacedDigit())
                HStack {
                    Toggle("Negative", isOn: $negative).toggleStyle(.button)
                    Button("New object") { objects.append(ObjectPrompt()); current = objects.count - 1 }
                    Button("Clear") { objects = [ObjectPrompt()]; current = 0; Task { await decode() } }
                    Picker("Object", selection: $current) {
                        ForEach(objects.indices, id: \.self) { Text("\($0 + 1)").tag($0) }
                    }.pickerStyle(.segmented)
                }.padding(.horizontal)
            }
            .navigationTitle("Photo")
            .toolbar { PhotosPicker(selection: $item, matching: .images) { Image(systemName: "photo.badge.plus") } }
            .onChange(of: item) { Task { await open(item) } }
        }
    }

    private func open(_ item: PhotosPickerItem?) async {
        guard let data = try? await item?.loadTransferable(type: Data.self), let image = UIImage(data: data) else { return }
        do {
            let rgb = try ImageConversion.rgbImage(image)
            let start = Date()
            embedding = try await model.predictor().setImage(rgb)
            timing = String(format: "encoded in %.0f ms", Date().timeIntervalSince(start) * 1000)
            picture = rgb
            objects = [ObjectPrompt()]
            current = 0
            overlay = ImageConversion.overlay(rgb, masks: [], colorIndices: [])
        } catch {
            model.problem = "\(error)"
        }
    }

    private func add(click point: (x: Double, y: Double), positive: Bool) {
        objects[current] = ObjectPrompt(clicks: objects[current].clicks + [Click(x: point.x, y: point.y, positive: positive)],
                                        box: objects[current].box)
        Task { await decode() }
    }

    private func setBox(_ box: Box) {
        objects[current] = ObjectPrompt(clicks: objects[current].clicks, box: box)
        Task { await decode() }
    }

    /// Decode every prompted object in one call; show the best-scored mask of each.
    private func decode() async {
        guard let picture, let embedding else { return }
        let prompted = objects.enumerated().filter { !$0.element.clicks.isEmpty || $0.element.box != nil }
        guard !prompted.isEmpty else { overlay = ImageConversion.overlay(picture, masks: [], colorIndices: []); return }
        do {
            let start = Date()
            let prediction = try await model.predictor().predict(embedding, prompts: prompted.map(\.element))
            let milliseconds = Date().timeIntervalSince(start) * 1000
            let masks = (0 ..< prediction.objects).map { object -> [UInt8] in
                let scores = prediction.scores.floats[object * prediction.masksPerObject ..< (object + 1) * prediction.masksPerObject]
                let best = scores.firstIndex(of: scores.max()!)! - scores.startIndex
                return Array(prediction.mask(object: object, index: best))
            }
            overlay = ImageConversion.overlay(picture, masks: masks, colorIndices: prompted.map(\.offset))
            timing = String(format: "%d objects decoded in %.1f ms", prediction.objects, milliseconds)
        } catch {
            model.problem = "\(error)"
        }
    }
}

/// Where an aspect-fit picture sits in a view, to turn touches into picture pixels.
struct AspectFit {
    let scale: Double, offsetX: Double, offsetY: Double, width: Int, height: Int

    init(imageWidth: Int, imageHeight: Int, in size: CGSize) {
        scale = min(size.width / Double(imageWidth), size.height / Double(imageHeight))
        offsetX = (size.width - Double(imageWidth) * scale) / 2
        offsetY = (size.height - Double(imageHeight) * scale) / 2
        width = imageWidth; height = imageHeight
    }

    /// The picture pixel under a view point, clamped inside the picture.
    func pixel(_ point: CGPoint) -> (x: Double, y: Double) {
        (min(max((point.x - offsetX) / scale, 0), Double(width - 1)), min(max((point.y - offsetY) / scale, 0), Double(height - 1)))
    }
}
