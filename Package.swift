// swift-tools-version: 6.0
// EdgeTAMKit for apps that add it by URL: SwiftPM reads a repository's root only, so this manifest points at
// the sources in ios_demo/EdgeTAMKit (whose own Package.swift, with the tests, is what CI builds and tests).
// `EdgeTAMCore` depends on Foundation only; `EdgeTAMCoreML` builds empty off Apple platforms.
import PackageDescription

let package = Package(
    name: "EdgeTAMKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "EdgeTAMCore", targets: ["EdgeTAMCore"]),
        .library(name: "EdgeTAMCoreML", targets: ["EdgeTAMCoreML"]),
    ],
    targets: [
        .target(
            name: "EdgeTAMCore",
            path: "ios_demo/EdgeTAMKit/Sources/EdgeTAMCore",
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
        .target(
            name: "EdgeTAMCoreML",
            dependencies: ["EdgeTAMCore"],
            path: "ios_demo/EdgeTAMKit/Sources/EdgeTAMCoreML",
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
