import Foundation
import Testing
@testable import EdgeTAMCore

/// `runBatched`, the one path of every stage call: chunks of `maxObjects`, shared one-row inputs, cancellation.
@Suite struct BatchingTests {
    /// Sums each object's row with the shared input's single row; records the object count of every call.
    final class SummingRunner: StageRunner, @unchecked Sendable {
        let spec = StageSpec(name: "memory_encoder", description: "d", maxObjects: 2,
                             inputs: [TensorSpec(name: "rows", shape: [.objects, .fixed(1)], dtype: .float32, description: "d"),
                                      TensorSpec(name: "shared", shape: [.objects, .fixed(1)], dtype: .float32, description: "d")],
                             outputs: [TensorSpec(name: "sum", shape: [.objects, .fixed(1)], dtype: .float32, description: "d")])
        var callSizes: [Int] = []

        func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor] {
            let rows = inputs["rows"]!, shared = inputs["shared"]!
            callSizes.append(rows.shape[0])
            #expect(shared.shape[0] == rows.shape[0])
            return ["sum": Tensor(shape: rows.shape, floats: zip(rows.floats, shared.floats).map { $0 + $1 })]
        }
    }

    @Test func objectsAreChunkedAndAOneRowInputIsShared() async throws {
        let runner = SummingRunner()
        let outputs = try await runBatched(runner, ["rows": Tensor(shape: [5, 1], floats: [1, 2, 3, 4, 5]),
                                                    "shared": Tensor(shape: [1, 1], floats: [10])], maxObjects: 2)
        #expect(runner.callSizes == [2, 2, 1])
        #expect(outputs["sum"]?.floats == [11, 12, 13, 14, 15])
    }

    @Test func aCancelledTaskStopsBeforeTheNextStageCall() async {
        let runner = SummingRunner()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await runBatched(runner, ["rows": Tensor(shape: [1, 1], floats: [1]),
                                                 "shared": Tensor(shape: [1, 1], floats: [1])], maxObjects: 2)
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(runner.callSizes.isEmpty)
    }
}

/// A managed stage loads its engine on first use, releases it on request, and loads it again when called.
@Suite struct ManagedStageRunnerTests {
    @Test func loadsOnFirstUseAndAgainAfterARelease() async throws {
        let engine = BatchingTests.SummingRunner()
        let managed = ManagedStageRunner(spec: engine.spec) { engine }
        #expect(await managed.isLoaded == false)
        #expect(await managed.loads == 0)
        let inputs = ["rows": Tensor(shape: [1, 1], floats: [2]), "shared": Tensor(shape: [1, 1], floats: [3])]
        #expect(try await managed.run(inputs)["sum"]?.floats == [5])
        _ = try await managed.run(inputs)
        #expect(await managed.isLoaded)
        #expect(await managed.loads == 1)
        await managed.unloadResources()
        #expect(await managed.isLoaded == false)
        _ = try await runBatched(managed, inputs, maxObjects: 2)
        #expect(await managed.loads == 2)
    }
}
