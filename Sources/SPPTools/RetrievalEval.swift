import Foundation
import SPPCore
import SPPKernels
import SPPRuntime

/// Retrieval quality of an embedding model: each query against all documents,
/// embeddings mean-pooled over real tokens and L2-normalised; the document of
/// the same pair is the one relevant answer.
public enum RetrievalEval {
    public struct Metrics: Sendable {
        public var recallAt1: Double
        public var recallAt10: Double
        public var mrrAt10: Double
        public var pairs: Int
    }

    /// Embeddings of `texts` in input order, [texts.count, D] row-major.
    public static func embed(_ model: Model, _ inputs: TextInputs, _ texts: [String], batchSize: Int = 32,
                             progress: (Int) -> Void = { _ in }) throws -> (vectors: [Float], dimension: Int) {
        guard let output = model.outputs.first(where: { $0.dtype == .float32 && $0.shape?.count == 3 })?.name else {
            throw ConversionError.missingOption("a model with a [batch, seq, hidden] float output")
        }
        var vectors: [Float] = []
        var dimension = 0
        var done = 0
        for (batch, indices) in inputs.batches(texts, size: batchSize) {
            guard let hidden = try model.run(batch)[output], let mask = batch["attention_mask"] else { continue }
            let (b, s, d) = (hidden.shape[0], hidden.shape[1], hidden.shape[2])
            if vectors.isEmpty { dimension = d; vectors = [Float](repeating: 0, count: texts.count * d) }
            let h = hidden.pointer(as: Float.self)
            let m = mask.integers ?? []
            for (row, index) in indices.enumerated() {
                var v = [Double](repeating: 0, count: d)
                var n = 0.0
                for t in 0..<s where m[row * s + t] != 0 {
                    n += 1
                    for j in 0..<d { v[j] += Double(h[(row * s + t) * d + j]) }
                }
                let norm = max(v.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
                for j in 0..<d { vectors[index * d + j] = Float(v[j] / norm) }
            }
            _ = b
            done += indices.count
            progress(done)
        }
        return (vectors, dimension)
    }

    /// Query i's relevant document is document i.
    public static func metrics(queries: [Float], documents: [Float], count n: Int, dimension d: Int) -> Metrics {
        var scores = [Float](repeating: 0, count: n * n)
        queries.withUnsafeBufferPointer { q in
            documents.withUnsafeBufferPointer { doc in
                scores.withUnsafeMutableBufferPointer { s in
                    Linear.sgemm(transA: false, transB: true, m: n, n: n, k: d, alpha: 1, a: q.baseAddress!, lda: d,
                                 b: doc.baseAddress!, ldb: d, beta: 0, c: s.baseAddress!, ldc: n)
                }
            }
        }
        var r1 = 0.0, r10 = 0.0, mrr = 0.0
        for i in 0..<n {
            let target = scores[i * n + i]
            // Rank = documents scoring strictly higher (ties count in the query's favour).
            var higher = 0
            for j in 0..<n where j != i && scores[i * n + j] > target { higher += 1 }
            if higher == 0 { r1 += 1 }
            if higher < 10 { r10 += 1; mrr += 1 / Double(higher + 1) }
        }
        let c = Double(max(n, 1))
        return Metrics(recallAt1: r1 / c, recallAt10: r10 / c, mrrAt10: mrr / c, pairs: n)
    }

    /// Mean cosine between corresponding rows of two sets of unit vectors.
    public static func meanCosine(_ a: [Float], _ b: [Float], dimension d: Int) -> Double {
        let n = a.count / max(d, 1)
        var total = 0.0
        for i in 0..<n {
            var dot = 0.0
            for j in 0..<d { dot += Double(a[i * d + j]) * Double(b[i * d + j]) }
            total += dot
        }
        return total / Double(max(n, 1))
    }
}
