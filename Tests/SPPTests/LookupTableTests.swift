import Foundation
import Testing
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPPasses
import SPPRuntime

/// Token embeddings stored in row chunks and read on demand give the same
/// outputs while reading only the chunks the input touches.
@Suite struct LookupTableTests {
    @Test func chunkedEmbeddingsGiveTheSameOutputsAndReadLess() throws {
        let fixture = TestPaths.fixtures.appendingPathComponent("bert_tiny")
        var graph = try ONNXImporter.load(path: fixture.appendingPathComponent("model.onnx").path).graph
        _ = try PassPipeline.run(&graph)
        let tables = LookupTable.split(&graph, minimumBytes: 1024, rowsPerChunk: 16)
        // The word embedding (100 × 32) qualifies; its tensor is replaced by 7 chunks.
        let words = try #require(tables.first { $0.chunkRows.reduce(0, +) == 100 })
        #expect(words.chunkRows == [16, 16, 16, 16, 16, 16, 4])
        #expect(graph.initializers[words.name] == nil)

        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.spp").path
        try SPPWriter.write(SPPModel(graph: graph, provenance: Provenance(), lookupTables: tables), to: file)
        let reader = try SPPReader(path: file)
        #expect(reader.lookupTables == tables)

        var inputs: [String: Tensor] = [:]
        for (k, name) in ["input_ids", "attention_mask", "token_type_ids"].enumerated() {
            inputs[name] = try Npy.read(path: fixture.appendingPathComponent("input_\(k).npy").path)
        }
        let model = try Model(reader: reader)
        let out = try model.run(inputs)["last_hidden_state"]!
        let expected = try Npy.read(path: fixture.appendingPathComponent("output_0.npy").path)
        let (ok, c) = Comparison.compare(out, expected, atol: 1e-4, rtol: 1e-4)
        #expect(ok, "\(c)")
        // Only the chunks holding the input's token ids were read.
        let ids = Set(inputs["input_ids"]!.integers!.map { $0 / 16 })
        let all = reader.tensorEntries.reduce(0) { $0 + $1.compressedSize }
        let unread = words.chunks.enumerated().filter { !ids.contains($0.offset) }.compactMap { reader.entry(named: $0.element)?.compressedSize }.reduce(0, +)
        #expect(model.storedBytesRead == all - unread)
        #expect(throws: RuntimeError.self) { _ = try model.run(inputs.merging(["input_ids": Tensor([Int64](repeating: 100, count: 16), shape: [2, 8])]) { $1 }) }
    }
}
