import ArgumentParser
import SPPRuntime

extension WeightPrecision: ExpressibleByArgument {}

/// What every command that runs a model chooses when loading it: the keep
/// level, the FFN repair and the precision of the GEMM weights.
public struct ModelLoadOptions: ParsableArguments {
    @Option(help: "Fraction of prunable parameters to keep (0 < R ≤ 1), for a model converted with a pruning method.")
    public var keep: Double = 1
    @Flag(inversion: .prefixedNo, help: "Refit pruned feed-forward blocks by least squares (files converted with calibration data).")
    public var repair = true
    @Option(help: "Precision of the GEMM weight matrices: fp32, or int8 (activations quantized per row as it runs; float32 weights quantized per column at load). Default: as the file stores them.")
    public var weights: WeightPrecision?

    public init() {}

    /// `file` loaded with these choices, running on `threads` threads.
    public func makeModel(_ file: ModelFile, threads: Int) throws -> Model {
        try file.makeModel(keep: keep, repair: repair, options: RuntimeOptions(threads: threads, weights: weights))
    }
}
