import ArgumentParser
import Foundation
import Glibc
import SPPCore
import SPPGraph
import SPPRuntime
import SPPTools

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a model on synthetic inputs; prints one JSON line (median and p90 latency, load time and GB/s, peak RSS against weights and activations, achieved GFLOP/s).")

    @Argument(help: "A .spp or .onnx model.") var model: String
    @OptionGroup var load: ModelLoadOptions
    @Option(help: "Batch size.") var batch: Int = 1
    @Option(help: "Sequence length (text models) — image models use their fixed input size.") var seq: Int = 128
    @Option(help: "Threads (0: one per core).") var threads: Int = 1
    @Option(help: "Timed runs.") var runs: Int = 20
    @Option(help: "Untimed runs before them.") var warmup: Int = 1
    @Flag(help: "Also print to stderr where the time goes, by op type (from as many runs again, each kernel timed).") var profile = false
    @Flag(help: "Also time the run's matrix products alone with the float32 GEMM (gemm_bound_ms) and report the bound over the median (gemm_bound_fraction).") var gemmBound = false

    func run() throws {
        CommandLineErrors.report {
            let baseRSS = ProcessMemory.residentBytes, baseFile = ProcessMemory.fileBytes
            let loadStart = Date()
            var headerTime = 0.0
            // The file (its header's tables) is let go once the model is made, as an app would.
            let (m, tableShapes) = try { () throws -> (Model, [String: (dtype: DType?, shape: [Int])]) in
                let file = try ModelFile.open(model)
                headerTime = Date().timeIntervalSince(loadStart)
                return (try load.makeModel(file, threads: threads), file.lookupTableShapes)
            }()
            let loadTime = Date().timeIntervalSince(loadStart)
            let loadPeak = ProcessMemory.peakBytes
            // From here the peak covers the runs alone.
            let reset = ProcessMemory.resetPeak()
            let inputs = try BenchInputs.make(for: m.inputs, batch: batch, seq: seq)
            // The first run after loading, warm-up or timed: it also pays one-time costs (oneDNN
            // compiling its kernels, activation memory touched for the first time).
            var firstWarmup: Double?
            for _ in 0..<max(warmup, 0) {
                let t = Date()
                _ = try m.run(inputs)
                firstWarmup = firstWarmup ?? Date().timeIntervalSince(t) * 1000
            }
            var times: [Double] = []
            for _ in 0..<max(runs, 1) {
                let t = Date()
                _ = try m.run(inputs)
                times.append(Date().timeIntervalSince(t) * 1000)
            }
            let firstRun = firstWarmup ?? times[0]
            times.sort()
            let median = times[times.count / 2]
            let p90 = times[min(times.count - 1, Int(Double(times.count) * 0.9))]
            let activations = Program.ActivationMeter()
            _ = try m.program.run(inputs, activations: activations)
            let runPeak = reset ? ProcessMemory.peakBytes : nil
            let endFile = ProcessMemory.fileBytes
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let peak = max(Int(usage.ru_maxrss) * 1024, loadPeak ?? 0, runPeak ?? 0)
            func mb(_ bytes: Int) -> String { String(format: "%.1f", Double(bytes) / 1_048_576) }
            let held = m.weightBytes + activations.peakBytes
            var fields: [(String, String)] = [
                ("model", "\"\((model as NSString).lastPathComponent)\""), ("keep", String(load.keep)), ("weights", "\"\(m.weights.rawValue)\""), ("batch", String(batch)),
                ("seq", String(seq)), ("threads", String(threads)), ("runs", String(times.count)),
                ("median_ms", String(format: "%.3f", median)), ("p90_ms", String(format: "%.3f", p90)),
                ("load_ms", String(format: "%.1f", loadTime * 1000)), ("first_run_ms", String(format: "%.3f", firstRun)),
                ("load_stages_ms", "{" + ([("header", headerTime)] + m.loadStages).map { String(format: "\"%@\": %.1f", $0.stage, $0.seconds * 1000) }.joined(separator: ", ") + "}"),
                ("decoded_bytes", String(m.loadBytesDecoded)), ("load_gb_per_s", String(format: "%.2f", Double(m.loadBytesDecoded) / 1e9 / max(loadTime, 1e-9))),
                ("peak_rss_mb", mb(peak)),
                ("weight_bytes", String(m.weightBytes)), ("activation_bytes", String(activations.peakBytes)),
                ("parameters", String(m.program.parameterCount)),
            ]
            if let baseRSS { fields.append(("base_rss_mb", mb(baseRSS))) }
            if let loadPeak { fields.append(("load_peak_rss_mb", mb(loadPeak))) }
            if let runPeak {
                fields.append(("run_peak_rss_mb", mb(runPeak)))
                fields.append(("rss_ratio", String(format: "%.3f", Double(runPeak) / Double(max(held, 1)))))
                // What the model costs: the peak less the process before loading, the library pages
                // (file-backed: oneDNN's code) that running mapped since and the kernels oneDNN compiled.
                if let baseRSS, let baseFile, let endFile {
                    let code = ProcessMemory.compiledCodeBytes ?? 0
                    fields.append(("compiled_code_mb", mb(code)))
                    let model = runPeak - baseRSS - max(0, endFile - baseFile) - code
                    fields.append(("model_rss_mb", mb(model)))
                    fields.append(("model_rss_ratio", String(format: "%.3f", Double(model) / Double(max(held, 1)))))
                }
            }
            // Achieved throughput: the matrix-product FLOPs of this graph for these inputs over the median time.
            var shapes = tableShapes
            for (name, c) in m.program.releasedConstants { shapes[name] = (c.dtype, c.shape) }
            for (name, t) in inputs { shapes[name] = (t.dtype, t.shape) }
            if let products = try? FlopCount.products(m.program.graph, shapes: shapes) {
                let flops = products.reduce(0) { $0 + $1.key.flops * $1.value }
                fields.append(("flops", String(flops)))
                fields.append(("gflops_per_s", String(format: "%.2f", Double(flops) / 1e9 / (median / 1000))))
                if gemmBound {
                    let bound = GEMMBound.milliseconds(products, threads: threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount)
                    fields.append(("gemm_bound_ms", String(format: "%.3f", bound)))
                    fields.append(("gemm_bound_fraction", String(format: "%.3f", bound / median)))
                }
            }
            print("{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
            if profile {
                let p = Program.OpProfile()
                for _ in 0..<max(runs, 1) { _ = try m.program.run(inputs, profile: p) }
                let total = Double(p.nanoseconds.values.reduce(0, +))
                for (op, ns) in p.nanoseconds.sorted(by: { $0.value > $1.value }) {
                    Report.stderr(op.padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: "%8.3f ms/run %5.1f%%  %d calls/run", Double(ns) / 1e6 / Double(max(runs, 1)),
                                         100 * Double(ns) / max(total, 1), p.calls[op]! / max(runs, 1)))
                }
            }
        }
    }
}
