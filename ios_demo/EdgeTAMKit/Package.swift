// swift-tools-version: 6.0
// EdgeTAMKit: run edgetam-export bundles in Swift apps. `EdgeTAMCore` depends on Foundation only and
// builds and tests on Linux. `EdgeTAMTestSupport` (replaying recorded Python sessions) serves the tests only.
// `EdgeTAMCoreML` is the Core ML runner: its files sit whole behind
// `#if canImport(CoreML)`, so the target builds (empty) on Linux and for real on Apple platforms.
// No remote package dependencies: SwiftPM must resolve this package offline.
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
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
        .target(
            name: "EdgeTAMCoreML",
            dependencies: ["EdgeTAMCore"],
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
        // Test support, never linked into an app: replaying sessions the Python runtime recorded.
        .target(
            name: "EdgeTAMTestSupport",
            dependencies: ["EdgeTAMCore"],
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
        .testTarget(
            name: "EdgeTAMCoreTests",
            dependencies: ["EdgeTAMCore", "EdgeTAMCoreML", "EdgeTAMTestSupport"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
