// swift-tools-version: 6.0
// edgetam-kit: EdgeTAMKit on the command line, running `.pte` bundles through ExecuTorch's C++ runtime: the
// `Module`, kernels and XNNPACK delegate that the executorch wheel ships (lib/, include/). Linux hosts only; the
// iOS app keeps the ExecuTorch Swift package (ios_demo/EdgeTAMExecuTorch).
//
// Build it with ios_demo/scripts/build-kit-cli.sh, which sets EXECUTORCH_ROOT to the active Python
// environment's executorch package (the folder holding include/, lib/ and share/cmake/).
//
// Linking: kernels and the XNNPACK delegate register themselves from static initializers, so their libraries are
// linked with --no-as-needed (nothing references them by name), and found at run time through an rpath.
import Foundation
import PackageDescription

let executorch = ProcessInfo.processInfo.environment["EXECUTORCH_ROOT"] ?? "/EXECUTORCH_ROOT-is-not-set"
// The quantized kernels too (int8 bundles dequantize outside the delegate): executorch-config.cmake leaves them out of
// its default set only because they clash with the Python export plugin, which this binary never loads.
let executorchLibraries = ["executorch", "executorch_kernels_optimized", "executorch_kernels_quantized",
                           "executorch_backend_xnnpack", "executorch_threadpool"]

let package = Package(
    name: "EdgeTAMKitCLI",
    products: [
        .executable(name: "edgetam-kit", targets: ["EdgeTAMKitCLI"]),
        .library(name: "EdgeTAMExecuTorchModule", targets: ["EdgeTAMExecuTorchModule"]),
    ],
    dependencies: [.package(path: "../EdgeTAMKit")],
    targets: [
        .target(
            name: "CExecuTorchModule",
            cxxSettings: [
                // What executorch-config.cmake asks of a consumer: its two include folders and two definitions.
                .define("C10_USING_CUSTOM_GENERATED_MACROS"),
                .define("ET_EVENT_TRACER_ENABLED"),
                .unsafeFlags(["-I\(executorch)/include", "-I\(executorch)/include/executorch/runtime/core/portable_type/c10"]),
            ],
            linkerSettings: [
                .unsafeFlags(["-L\(executorch)/lib", "-Xlinker", "-rpath", "-Xlinker", "\(executorch)/lib", "-Xlinker", "--no-as-needed"]
                    + executorchLibraries.map { "-l\($0)" } + ["-Xlinker", "--as-needed"]),
            ]
        ),
        .target(
            name: "CPictureDecoding",
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png")]
        ),
        .target(
            name: "EdgeTAMExecuTorchModule",
            dependencies: ["CExecuTorchModule", .product(name: "EdgeTAMCore", package: "EdgeTAMKit")],
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
        .executableTarget(
            name: "EdgeTAMKitCLI",
            dependencies: ["EdgeTAMExecuTorchModule", "CPictureDecoding", .product(name: "EdgeTAMCore", package: "EdgeTAMKit")],
            swiftSettings: [.enableUpcomingFeature("StrictConcurrency")]
        ),
    ],
    swiftLanguageModes: [.v6],
    cxxLanguageStandard: .cxx17
)
