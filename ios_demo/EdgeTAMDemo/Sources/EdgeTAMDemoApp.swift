import SwiftUI

@main
struct EdgeTAMDemoApp: App {
    @State private var model = AppModel()

    var body: some Scene {
        WindowGroup {
            TabView {
                PhotoView().tabItem { Label("Photo", systemImage: "photo") }
                VideoView().tabItem { Label("Video", systemImage: "film") }
                CameraView().tabItem { Label("Camera", systemImage: "camera") }
                BenchmarkView().tabItem { Label("Benchmark", systemImage: "speedometer") }
            }
            .environment(model)
            .task { await model.load() }
            .overlay(alignment: .top) {
                if let problem = model.problem {
                    Text(problem).font(.footnote).padding(8).background(.red.opacity(0.85)).foregroundStyle(.white)
                        .clipShape(RoundedRectangle(cornerRadius: 8)).padding()
                }
            }
        }
    }
}
