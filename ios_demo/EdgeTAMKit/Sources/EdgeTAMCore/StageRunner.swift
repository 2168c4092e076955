import Foundation

/// Runs one stage of a bundle: named tensors in, named tensors out, as the stage contract says.
///
/// Every stage call of EdgeTAMKit goes through this protocol, so runners are swappable: the Core ML
/// runner (`.mlpackage`), the ExecuTorch runner (`.pte`, in its own package), or a `ReplayStageRunner`
/// that serves recorded outputs in tests. Implementations copy at their edge into `Tensor`.
public protocol StageRunner: Sendable {
    /// The contract this runner fulfils.
    var spec: StageSpec { get }
    /// Run the stage once; `inputs` holds every input of `spec` (all objects of the call together).
    func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor]
}
