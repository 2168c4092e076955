// swift-tools-version: 6.0
// EdgeTAMKit: run edgetam-export bundles in Swift apps. `EdgeTAMCore` depends on Foundation only and
// builds and tests on Linux; Apple-only runners (Core ML) live in files behind `#if canImport(CoreML)`.
// No remote package dependencies: SwiftPM must resolve this package offline.
import PackageDescription

let package = Package(
    name: "EdgeTAMKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "EdgeTAMCore", targets: ["EdgeTAMCore"]),
    ],
    targets: [
        .target(
            name: "EdgeTAMCore",
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
        .testTarget(
            name: "EdgeTAMCoreTests",
            dependencies: ["EdgeTAMCore"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
