import Foundation
import Testing
@testable import EdgeTAMCore

@Suite struct TensorTests {
    @Test func stridesRowsAndConcatenation() {
        let tensor = Tensor(shape: [2, 3, 4], floats: (0 ..< 24).map(Float.init))
        #expect(tensor.strides == [12, 4, 1])
        #expect(tensor[1, 2, 3] == 23)
        let second = tensor.rows(1 ..< 2)
        #expect(second.shape == [1, 3, 4] && second[0, 0, 0] == 12)
        #expect(Tensor.concatenate([tensor.rows(0 ..< 1), second]) == tensor)
        #expect(tensor.reshaped([6, 4])[5, 3] == 23)
    }

    @Test func copyingFromPaddedRows() {
        // A 2x3 output whose rows are padded to 4 elements, as Core ML may lay out an MLMultiArray.
        let padded: [Float] = [1, 2, 3, -1, 4, 5, 6, -1]
        let copy = padded.withUnsafeBufferPointer { Tensor.copying(shape: [2, 3], strides: [4, 1], from: $0) }
        #expect(copy.floats == [1, 2, 3, 4, 5, 6])
    }

    @Test func contractChecks() throws {
        let spec = StageSpec(name: "memory_encoder", description: "", maxObjects: 2,
                             inputs: [TensorSpec(name: "mask", shape: [.objects, .fixed(3)], dtype: .float32, description: ""),
                                      TensorSpec(name: "flag", shape: [.objects], dtype: .int32, description: "")],
                             outputs: [])
        #expect(try spec.checkInputs(["mask": .filled([2, 3]), "flag": .filled([2], dtype: .int32)]) == 2)
        #expect(throws: EdgeTAMError.self) { try spec.checkInputs(["mask": .filled([3, 3]), "flag": .filled([3], dtype: .int32)]) }
        #expect(throws: EdgeTAMError.self) { try spec.checkInputs(["mask": .filled([1, 3]), "flag": .filled([1])]) }
        #expect(throws: EdgeTAMError.self) { try spec.checkInputs(["mask": .filled([1, 3])]) }
    }

    @Test func percentilesAsNumPy() {
        let stats = LatencyStats(milliseconds: [4, 1, 3, 2, 10])
        #expect(stats.p50Ms == 3 && abs(stats.p90Ms - 7.6) < 1e-12 && stats.meanMs == 4 && stats.runs == 5)
    }

    @Test func rowsAreWrittenInPlaceFromAnotherTensorsRow() {
        var gathered = Tensor.filled([3, 2, 2])
        let results = Tensor(shape: [2, 2, 2], floats: [1, 2, 3, 4, 5, 6, 7, 8])
        gathered.setRow(2, from: results, row: 0)
        gathered.setRow(0, from: results, row: 1)
        #expect(gathered.floats == [5, 6, 7, 8, 0, 0, 0, 0, 1, 2, 3, 4])
        var labels = Tensor(shape: [2, 3], ints: [0, 0, 0, 0, 0, 0])
        labels.setRow(1, from: Tensor(shape: [1, 3], ints: [7, 8, 9]))
        #expect(labels.ints == [0, 0, 0, 7, 8, 9])
    }
}
