import Dispatch
import Foundation
import SPPCore
import SPPGraph
import SPPKernels

/// `--method spp`: the solution path of a Linearized Bregman Iteration on unit
/// masks (../shared/papers/SPP.md, "The dynamics"), turned into unit scores.
///
/// Every prunable unit — a QK inner direction, a VO inner direction (both per
/// head, after `RotateAttention`), an FFN neuron — gets a mask M (starts at 1),
/// a sparse estimate Γ (starts at 0) and an accumulator Z (starts at 0). Per
/// iteration k:
///
///     g   = ∇L(M) / c + (M − Γ) / ν          block-wise distillation loss, coupled to Γ
///     M  ← AdamW(M, g, learningRate)          the preconditioned step of the reference code
///     Z  ← Z + α_k (M − Γ)
///     Γ  = κ · max(Z − λ, 0)                   masks are non-negative (the reference's relu)
///
/// A unit enters the path when Γ first leaves 0. Its score is higher the earlier
/// it entered; units that never enter rank after all that did, by Z.
///
/// The loss of each fused block is the error of its output against the dense
/// model's on the calibration tokens (`SolutionPath+Gradients.swift`); blocks are
/// independent given their captured inputs, so they run in parallel. All block
/// losses are divided by one constant c (the mean loss of removing a single FFN
/// neuron or VO direction), so that units of every block and type share one
/// currency and one time axis, and PathBuilder can pool them into one order.
/// `spp convert` keeps only the order within each group (a block's QK, VO or
/// FFN units) and pools the groups by their measured end-to-end cost
/// (`GroupAllocation`): on all-MiniLM-L6-v2 recall@1 0.7515 → 0.7635 at keep
/// 0.75, equal at 0.5 and 0.3, 0.765 → 0.756 at 0.9 against the time axis.
///
/// The Z step α_k grows geometrically from `alpha / stepGrowth` to `alpha`: the
/// entry time of a unit goes as log(1 / mean M), so units whose masks settle at
/// very different levels are spread evenly over the iterations instead of the
/// strong ones entering together and the weak ones never.
///
/// What the order means, next to `--method svd`: svd scores each unit by the
/// diagonal of these block losses (the loss of removing it alone). The path instead
/// lets the other masks move while a unit is outside the support, so it ranks
/// units by their importance when the rest may compensate — a refit that a
/// pruned model only gets from a repair step. Measured on all-MiniLM-L6-v2
/// without repair, its order gives lower block losses than svd's at keep 0.5
/// but lower recall (numbers in the issue note).
public enum SolutionPath {
    /// How block losses are measured, which decides how units of different blocks compare.
    public enum Normalization: String, Sendable, CaseIterable {
        /// Squared error of the block output in the residual stream.
        case absolute
        /// The same, seen through the LayerNorm that follows the residual add:
        /// token t weighted by 1/σ_t² of the stream, output dimension d by γ_d².
        case layerNorm = "layernorm"
    }

    /// The defaults are the best of a sweep on all-MiniLM-L6-v2 (512 calibration texts):
    /// ν from 0.05 to 1500, Adam steps 0.003 and 0.01, both normalisations.
    public struct Options: Sendable {
        /// Damping: Γ = κ · shrink(Z, λ). α·κ ≤ 1 keeps Γ from overshooting M.
        public var kappa = 1.0
        /// Threshold a unit's accumulated Z must cross to enter the path.
        public var lambda = 10.0
        /// Coupling ‖M − Γ‖² / (2ν) between the masks and the sparse estimate, in units of
        /// the normalised loss (removing an average unit costs 1). Small ν pulls the masks of
        /// units outside the path towards 0 and orders units by their correlation with the
        /// block output (forward selection); large ν leaves masks near 1 and orders them by
        /// how much the loss rises as each one shrinks. On MiniLM recall rose from ν ≈ 0.05
        /// to 15 and fell beyond (entries bunch up and the order drowns in step noise).
        public var nu = 15.0
        /// AdamW step on the masks (the reference code's optimiser; plain gradient steps
        /// stall on the few neurons with very large curvature).
        public var learningRate = 0.01
        public var weightDecay = 0.0
        public var beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8
        /// Z step at the last iteration, and how much smaller it is at the first.
        public var alpha = 1.0
        public var stepGrowth = 100.0
        public var iterations = 2000
        /// The support size is recorded (`Result.trace`) and progress reported every this many iterations.
        public var recordEvery = 10
        /// Query tokens sampled per attention block per iteration for the QK gradient
        /// (whole sequences are drawn until this many are reached).
        public var tokensPerStep = 128
        /// Calibration sequences whose projections are kept for the sampled gradients
        /// (memory: about 16 · D bytes per token per attention block).
        public var attentionSequences = 256
        public var normalization = Normalization.layerNorm
        /// The graph input marking real tokens (non-zero) in each batch.
        public var validity = "attention_mask"
        public var seed: UInt64 = 0x5151
        /// Worker threads for the blocks (0: one per core).
        public var threads = 0
        public init() {}
    }

    /// Where the computation is, for progress displays.
    public struct Progress: Sendable {
        public enum Stage: String, Sendable { case capture, dynamics }
        public var stage: Stage
        /// Of the work of the call reporting it (`run`: the whole computation), 0...1.
        public var fraction: Double
        public var elapsed: Double
        /// Estimated seconds left (nil until there is a basis for one).
        public var eta: Double?
        /// Units in the path so far, of all units.
        public var entered: Int, units: Int
    }

    /// The path and what it is made of.
    public struct Result: Sendable {
        public var scores: UnitScores
        /// Iteration at which each unit entered (nil: never), node → units in mask order
        /// (attention: QK directions then VO directions).
        public var entries: [String: [Double?]]
        /// (iteration, units in the support) every `recordEvery` iterations.
        public var trace: [(iteration: Int, entered: Int)]
        /// The loss normaliser c (the mean loss of removing one FFN neuron or VO direction alone)
        /// and each block's loss with the whole block removed, divided by c.
        public var normaliser: Double
        public var blockScale: [String: Double]
        public var seconds: (capture: Double, dynamics: Double)
    }

    /// The solution path of `graph` (fused and rotated) on calibration `batches`, as unit
    /// scores (higher: entered earlier, kept longer). `statistics` is not needed by the
    /// block-wise loss (the capture recomputes what it needs) and may be nil.
    public static func compute(graph: Graph, batches: [[String: Tensor]], statistics: BlockStatistics?,
                               options: Options = .init(), progress: (Progress) -> Void = { _ in }) throws -> UnitScores {
        try run(graph: graph, batches: batches, options: options, progress: progress).scores
    }

    /// `compute`, with the entry times, the support trace and the block scales.
    public static func run(graph: Graph, batches: [[String: Tensor]], options: Options = .init(),
                           progress: (Progress) -> Void = { _ in }) throws -> Result {
        let start = Date()
        let prepared = try prepare(graph: graph, batches: batches, options: options) { p in
            var p = p
            p.fraction *= captureShare
            progress(p)
        }
        var result = try prepared.solve(options: options) { p in
            var p = p
            p.fraction = captureShare + (1 - captureShare) * p.fraction
            p.elapsed += prepared.seconds
            progress(p)
        }
        result.seconds = (prepared.seconds, Date().timeIntervalSince(start) - prepared.seconds)
        return result
    }

    /// The captured block losses: one dense pass over the calibration data, after which
    /// paths with different dynamics options cost only their iterations.
    public struct Prepared {
        let blocks: [BlockProblem]
        /// Seconds the capture took.
        public let seconds: Double

        /// The dynamics (capture options such as `normalization` are those of `prepare`).
        public func solve(options: Options, progress: (Progress) -> Void = { _ in }) throws -> Result {
            let start = Date()
            var result = try SolutionPath.solve(blocks, options: options) { iteration, entered, units in
                let f = Double(iteration) / Double(max(options.iterations, 1))
                let elapsed = Date().timeIntervalSince(start)
                let eta = iteration > 0 ? elapsed * Double(options.iterations - iteration) / Double(iteration) : nil
                progress(Progress(stage: .dynamics, fraction: f, elapsed: elapsed, eta: eta, entered: entered, units: units))
            }
            result.seconds = (seconds, Date().timeIntervalSince(start))
            return result
        }

        /// Each block's loss (in the capture's measure, unnormalised) when only the units
        /// ranked in the top `keep` fraction of all units by `scores` (one pool) are kept:
        /// what a ranking costs in the objective the path optimises.
        public func losses(of scores: UnitScores, keep: Double) -> [String: Double] {
            var all: [(Double, Int, Int)] = []
            var masks: [[Double]] = blocks.map { [Double](repeating: 0, count: $0.units) }
            for (b, block) in blocks.enumerated() {
                let flat: [Double]
                switch block {
                case let .feedForward(n, _): flat = scores.feedForward[n] ?? []
                case let .attention(n, _): flat = (scores.queryKey[n] ?? []).flatMap { $0 } + (scores.valueOutput[n] ?? []).flatMap { $0 }
                }
                for (i, v) in flat.enumerated() where i < block.units { all.append((v, b, i)) }
            }
            all.sort { $0.0 > $1.0 }
            for (_, b, i) in all.prefix(Int((keep * Double(all.count)).rounded())) { masks[b][i] = 1 }
            var out: [String: Double] = [:]
            for (b, block) in blocks.enumerated() {
                switch block {
                case let .feedForward(n, l): out[n] = l.loss(masks[b])
                case let .attention(n, p):
                    out[n] = p.loss(mqk: masks[b][..<p.qkWidth].map { Float($0) }, mvo: masks[b][p.qkWidth...].map { Float($0) })
                }
            }
            return out
        }
    }

    /// The capture is a dense forward pass: counted as this share of the work in progress reports.
    static let captureShare = 0.1

    /// Captures every fused block's loss on `batches` (see `Prepared`); progress
    /// fractions are of the capture.
    public static func prepare(graph: Graph, batches: [[String: Tensor]], options: Options = .init(),
                               progress: (Progress) -> Void = { _ in }) throws -> Prepared {
        let start = Date()
        let blocks = try capture(graph: graph, batches: batches, options: options) { done, total in
            let f = Double(done) / Double(max(total, 1))
            progress(Progress(stage: .capture, fraction: f, elapsed: Date().timeIntervalSince(start), eta: nil, entered: 0, units: 0))
        }
        return Prepared(blocks: blocks, seconds: Date().timeIntervalSince(start))
    }

    /// The dynamics on captured block problems.
    static func solve(_ blocks: [BlockProblem], options o: Options,
                      progress: (Int, Int, Int) -> Void = { _, _, _ in }) throws -> Result {
        // One currency for every block: the mean loss of removing a single unit, so that ν means
        // the same whatever the block sizes.
        let singles = blocks.flatMap(\.singleRemovalLosses)
        let normaliser = max(singles.reduce(0, +) / Double(max(singles.count, 1)), 1e-30)
        let states = blocks.enumerated().map { i, b in BlockState(b, index: i, normaliser: normaliser, options: o) }
        let units = states.reduce(0) { $0 + $1.units }
        let threads = o.threads > 0 ? o.threads : ProcessInfo.processInfo.activeProcessorCount
        // Blocks run concurrently, each with single-threaded BLAS.
        Linear.setThreads(1)
        Linalg.setThreads(1)
        defer {
            Linear.setThreads(ProcessInfo.processInfo.activeProcessorCount)
            Linalg.setThreads(ProcessInfo.processInfo.activeProcessorCount)
        }
        var trace: [(iteration: Int, entered: Int)] = []
        let chunk = max(1, o.recordEvery)
        var k = 0
        progress(0, 0, units)
        while k < o.iterations {
            let end = min(o.iterations, k + chunk)
            let from = k
            if threads <= 1 || states.count <= 1 {
                for s in states { for i in from..<end { s.step(i) } }
            } else {
                // Expensive blocks (attention) first, so the two workers finish together.
                let order = states.indices.sorted { (states[$0].cost, $0) > (states[$1].cost, $1) }
                DispatchQueue.concurrentPerform(iterations: order.count) { j in
                    let s = states[order[j]]
                    for i in from..<end { s.step(i) }
                }
            }
            k = end
            let entered = states.reduce(0) { $0 + $1.enteredCount }
            trace.append((k, entered))
            progress(k, entered, units)
        }
        var scores = UnitScores()
        var entries: [String: [Double?]] = [:]
        var blockScale: [String: Double] = [:]
        for s in states {
            let score = s.scores(iterations: o.iterations)
            entries[s.node] = s.entry.map { $0 < 0 ? nil : $0 }
            blockScale[s.node] = s.problem.lossAtZero / normaliser
            switch s.problem {
            case .feedForward:
                scores.feedForward[s.node] = score
            case let .attention(_, p):
                scores.queryKey[s.node] = UnitScores.perHead(score.prefix(p.qkWidth), ranks: p.qkRanks)
                scores.valueOutput[s.node] = UnitScores.perHead(score.dropFirst(p.qkWidth), ranks: p.voRanks)
            }
        }
        return Result(scores: scores, entries: entries, trace: trace, normaliser: normaliser, blockScale: blockScale, seconds: (0, 0))
    }
}

/// The state of one block's dynamics.
final class BlockState {
    let problem: BlockProblem
    let node: String
    let units: Int
    let options: SolutionPath.Options
    /// 1 / c: all block losses in one currency.
    let lossScale: Double
    var m: [Double], z: [Double], gamma: [Double], first: [Double], second: [Double]
    /// Iteration (fractional) at which each unit entered, −1 before.
    var entry: [Double]
    var enteredCount = 0
    var rng: SplitMix64
    let scratch = AttentionScratch()
    var order: [Int] = [], cursor = 0
    var gradient: [Double]

    init(_ problem: BlockProblem, index: Int, normaliser: Double, options: SolutionPath.Options) {
        self.problem = problem
        node = problem.node
        units = problem.units
        self.options = options
        lossScale = 1 / normaliser
        m = [Double](repeating: 1, count: units)
        (z, gamma, first, second) = ([Double](repeating: 0, count: units), [Double](repeating: 0, count: units),
                                     [Double](repeating: 0, count: units), [Double](repeating: 0, count: units))
        entry = [Double](repeating: -1, count: units)
        gradient = [Double](repeating: 0, count: units)
        rng = SplitMix64(seed: options.seed &+ UInt64(index) &* 0x9E37_79B9)
    }

    /// Relative cost of one step, for scheduling.
    var cost: Int {
        switch problem {
        case let .feedForward(_, l): return l.size * l.size
        case let .attention(_, p): return p.voWidth * p.voWidth + options.tokensPerStep * (p.voWidth * p.voWidth / 8 + 64 * (p.qkWidth + p.voWidth))
        }
    }

    /// Z step of iteration k: geometric from alpha / stepGrowth to alpha.
    func alpha(_ k: Int) -> Double {
        let n = max(options.iterations - 1, 1)
        let growth = max(options.stepGrowth, 1)
        return options.alpha * pow(growth, Double(k) / Double(n) - 1)
    }

    func step(_ k: Int) {
        for i in 0..<units { gradient[i] = 0 }
        lossGradient()
        let o = options
        let t = Double(k + 1)
        let c1 = 1 - pow(o.beta1, t), c2 = 1 - pow(o.beta2, t)
        let a = alpha(k)
        for i in 0..<units {
            let g = gradient[i] + (m[i] - gamma[i]) / o.nu
            first[i] = o.beta1 * first[i] + (1 - o.beta1) * g
            second[i] = o.beta2 * second[i] + (1 - o.beta2) * g * g
            let update = (first[i] / c1) / ((second[i] / c2).squareRoot() + o.epsilon)
            let previous = m[i]
            m[i] -= o.learningRate * (update + o.weightDecay * m[i])
            // Z and Γ from the mask the step started from (the LBI's explicit scheme).
            let zBefore = z[i]
            z[i] += a * (previous - gamma[i])
            gamma[i] = o.kappa * max(z[i] - o.lambda, 0)
            if entry[i] < 0 && gamma[i] > 0 {
                // Interpolate the crossing of λ within the step.
                let f = z[i] > zBefore ? (o.lambda - zBefore) / (z[i] - zBefore) : 1
                entry[i] = Double(k) + min(max(f, 0), 1)
                enteredCount += 1
            }
        }
    }

    /// gradient += ∇L(m) / c.
    func lossGradient() {
        switch problem {
        case let .feedForward(_, loss):
            loss.addGradient(m, scale: lossScale, into: &gradient)
        case let .attention(_, p):
            let mvoD = Array(m[p.qkWidth...])
            var gvo = [Double](repeating: 0, count: p.voWidth)
            p.voQuadratic.addGradient(mvoD, scale: lossScale, into: &gvo)
            for i in 0..<p.voWidth { gradient[p.qkWidth + i] += gvo[i] }
            guard options.tokensPerStep > 0, !p.sequences.isEmpty else { return }
            var picked: [Int] = []
            var tokens = 0
            while tokens < options.tokensPerStep && picked.count < p.sequences.count {
                if cursor >= order.count {
                    order = Array(p.sequences.indices)
                    order.shuffle(using: &rng)
                    cursor = 0
                }
                picked.append(order[cursor])
                tokens += p.sequences[order[cursor]].queries
                cursor += 1
            }
            let mqk = m[0..<p.qkWidth].map { Float($0) }
            let mvo = mvoD.map { Float($0) }
            let scale = lossScale / Double(max(tokens, 1))
            gradient.withUnsafeMutableBufferPointer { g in
                for s in picked {
                    p.evaluate(p.sequences[s], mqk: mqk, mvo: mvo, scratch: scratch, gqk: g.baseAddress!,
                               gvo: g.baseAddress! + p.qkWidth, gradientScale: scale, controlVariate: true)
                }
            }
        }
    }

    /// Entered units score in (1, 2] by how early they entered; the others below 1, by Z / λ.
    func scores(iterations: Int) -> [Double] {
        let n = Double(max(iterations, 1))
        return (0..<units).map { i in
            entry[i] >= 0 ? 1 + (n - entry[i]) / n : min(z[i] / max(options.lambda, 1e-30), 1 - 1e-9)
        }
    }
}
