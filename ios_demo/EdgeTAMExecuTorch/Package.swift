// swift-tools-version: 6.0
// EdgeTAMExecuTorch: runs `.pte` bundles (executorch-xnnpack-*, executorch-coreml-*) through ExecuTorch's
// Swift API, behind EdgeTAMKit's `StageRunner`. A package of its own because it depends on ExecuTorch's
// binary Swift package (Apple platforms, arm64, fetched from GitHub): EdgeTAMKit itself resolves offline
// and builds on Linux.
//
// Linking: ExecuTorch backends and kernels register themselves from static initializers, which the linker
// drops unless told to keep every object file. The app target that links this package must set
// `OTHER_LDFLAGS = -all_load` (ios_demo/EdgeTAMDemo/project.yml does); without it loading a program fails
// with "backend XnnpackBackend is not registered".
import PackageDescription

let package = Package(
    name: "EdgeTAMExecuTorch",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "EdgeTAMExecuTorch", targets: ["EdgeTAMExecuTorch"]),
    ],
    dependencies: [
        .package(path: "../EdgeTAMKit"),
        // The newest release branch (there is no swiftpm-1.5.x release branch, only dated 1.5.0 nightlies). It reads
        // the programs the pinned Python executorch 1.5.1 writes: both have the same program schema
        // (schema/program.fbs, "ET12") and XNNPACK schema (backends/xnnpack/serialization/schema.fbs, "XN01"),
        // compared file for file with the wheel (ios_demo/README.md).
        .package(url: "https://github.com/pytorch/executorch", branch: "swiftpm-1.4.1"),
    ],
    targets: [
        .target(
            name: "EdgeTAMExecuTorch",
            dependencies: [
                .product(name: "EdgeTAMCore", package: "EdgeTAMKit"),
                .product(name: "executorch", package: "executorch"),
                .product(name: "backend_xnnpack", package: "executorch"),
                .product(name: "backend_coreml", package: "executorch"),
                .product(name: "kernels_optimized", package: "executorch"),
                .product(name: "kernels_quantized", package: "executorch"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
