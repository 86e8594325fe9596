import ArgumentParser
import Foundation
import SPPCore
import SPPRuntime
import SPPTools

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Retrieval quality of an embedding model on query/document pairs: recall@1, recall@10, MRR@10.")

    @Argument(help: "A .spp or .onnx embedding model.") var model: String
    @OptionGroup var load: ModelLoadOptions
    @Option(help: "JSONL of pairs with a query and a document field.") var pairs: String
    @Option(help: "tokenizer.json of the model.") var tokenizer: String
    @Option(help: "Field of the query text.") var queryField: String = "query"
    @Option(help: "Field of the document text.") var documentField: String = "document"
    @Option(help: "Tokens per text, at most (128 reproduces the reference figures).") var maxLength: Int = 128
    @Option(help: "Use only the first N pairs.") var limit: Int?
    @Option(help: "Threads (0: one per core).") var threads: Int = 0

    func run() throws {
        CommandLineErrors.report {
            let start = Date()
            let queries = try TextInputs.readJSONL(pairs, field: queryField, limit: limit)
            let documents = try TextInputs.readJSONL(pairs, field: documentField, limit: limit)
            let file = try ModelFile.open(model)
            let m = try load.makeModel(file, threads: threads)
            let inputs = try TextInputs(tokenizer: tokenizer, maxLength: maxLength, graphInputs: m.inputs)
            func embedAll(_ model: Model, _ label: String) throws -> ([Float], [Float], Int) {
                let total = queries.count + documents.count
                let q = try RetrievalEval.embed(model, inputs, queries) { done in Report.progress("\(label) \(done)/\(total) texts") }
                let d = try RetrievalEval.embed(model, inputs, documents) { done in Report.progress("\(label) \(queries.count + done)/\(total) texts") }
                return (q.vectors, d.vectors, q.dimension)
            }
            let (q, d, dim) = try embedAll(m, "embedding")
            let metrics = RetrievalEval.metrics(queries: q, documents: d, count: queries.count, dimension: dim)
            var line = String(format: "keep %.2f %@  recall@1 %.4f  recall@10 %.4f  MRR@10 %.4f  (%d pairs)",
                              load.keep, load.weights.rawValue, metrics.recallAt1, metrics.recallAt10, metrics.mrrAt10, metrics.pairs)
            // The reference is always the dense float32 model: below keep 1 or with int8 weights.
            if load.keep < 1 || load.weights != .fp32 {
                let dense = try file.makeModel(keep: 1, options: RuntimeOptions(threads: threads))
                let (dq, dd, _) = try embedAll(dense, "dense reference")
                let cosine = RetrievalEval.meanCosine(q + d, dq + dd, dimension: dim)
                line += String(format: "  cosine to dense %.4f", cosine)
            }
            Report.progressDone()
            print(line)
            print(String(format: "  params %@, %.1f s", Report.count(m.program.parameterCount), Date().timeIntervalSince(start)))
        }
    }
}
