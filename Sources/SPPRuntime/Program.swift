import Dispatch
import SPPCore
import SPPFormat
import SPPGraph
import SPPKernels

/// Precision of the constant weight matrices of the GEMMs.
public enum WeightPrecision: String, CaseIterable, Sendable {
    case fp32
    /// int8 per output column, quantized when the program is prepared (after the
    /// pruning path and the repair made the weights), activations quantized per
    /// row as they run (`Linear.int8Gemm`): the projections of `spp.Attention`,
    /// W1 and W2 of `spp.FeedForward`, and MatMul/Gemm with a constant B.
    /// Weights a file stores in int8 are taken as stored.
    case int8

    /// What a file's weights run as unless told otherwise: int8 when it stores
    /// GEMM weights in int8, else fp32.
    public static func stored(in reader: SPPReader) -> WeightPrecision {
        // The repair's inverse factor is int8 in every file: it says nothing of the weights.
        let repair = Set((reader.pruningPath?.pairs ?? []).flatMap { $0.tensors.filter { $0.role == FeedForwardRepair.Role.inverseFactor }.flatMap(\.chunks) })
        return reader.tensorEntries.contains { $0.dtype == .int8 && $0.encoding != nil && !repair.contains($0.name) } ? .int8 : .fp32
    }
}

/// Options fixed when a program is prepared.
public struct RuntimeOptions: Sendable {
    /// Threads for the kernels (BLAS included). 0 means one per core.
    public var threads: Int
    /// nil: as the file stores them (`WeightPrecision.stored(in:)`); fp32 for a graph in memory.
    public var weights: WeightPrecision?
    /// The range int8 GEMMs quantize activations to; nil: the widest this CPU's
    /// kernels sum exactly (`ActivationRange.native`). Set to compare or test.
    public var activationRange: ActivationRange?
    /// Threads that read, decompress and pack the weights when a file is loaded;
    /// 0 (the default) means one per core: loading comes before any run, so it
    /// takes every core even where `threads` keeps the runs to fewer.
    public var loadThreads: Int

    public init(threads: Int = 0, weights: WeightPrecision? = nil, activationRange: ActivationRange? = nil, loadThreads: Int = 0) {
        self.threads = threads
        self.weights = weights
        self.activationRange = activationRange
        self.loadThreads = loadThreads
    }
}

/// An executable form of a graph: kernels chosen and attributes checked once,
/// values in numbered slots, and a release plan so intermediate buffers are
/// freed right after their last reader.
public final class Program: @unchecked Sendable {
    public let graph: Graph
    public let options: RuntimeOptions

    typealias KernelFunction = ([Tensor?]) throws -> [Tensor]

    struct Step {
        let node: Node
        let kernel: KernelFunction
        let inputSlots: [Int?]
        let outputSlots: [Int]
        /// Slots whose last reader is this step.
        let releases: [Int]
    }

    let steps: [Step]
    let slotCount: Int
    let inputSlots: [(info: ValueInfo, slot: Int)]
    let outputSlots: [(name: String, slot: Int)]
    let constants: [(slot: Int, tensor: Tensor)]

    /// Where runs take the buffers of their values and kernels' scratch.
    let buffers = BufferPool()

    // Outputs a caller still holds keep the pool alive; its free buffers need not wait for them.
    deinit { buffers.releaseFree() }

    /// Tables read by row on demand (a `.spp`'s token embeddings), by value name.
    let lookupTables: [String: LookupSource]

    /// Constants a prepared kernel took over (packed or quantized weights), and
    /// weights a file stores in int8 that int8 kernels took as they are: the
    /// program does not hold them as values, so `graph` lacks them; here are the
    /// types and shapes of their values (for shape inference and counts).
    public let releasedConstants: [String: (dtype: DType, shape: [Int])]

    /// Bytes of the weights the program holds: its constants, and in the form
    /// prepared kernels keep them what they took (int8 values, packed copies,
    /// scales and column sums; a prepared float32 layer counted as the weights it
    /// replaced).
    public let weightBytes: Int

    /// Parameters of the graph, the released constants included.
    public var parameterCount: Int {
        graph.parameterCount + releasedConstants.values.filter { $0.dtype.isFloatingPoint }.reduce(0) { $0 + $1.shape.reduce(1, *) }
    }

    /// Prepares `graph` to run. Weights that prepared kernels take over are
    /// dropped from it as they are prepared, so a caller that hands over its only
    /// copy never holds both forms of all weights at once.
    ///
    /// `int8Weights`: GEMM weights a file stores in int8 (`PathLoader`), which the
    /// graph's initializers lack. Int8 kernels take them as they are; a node that
    /// runs in float32 gets them dequantized. `packed`: the fused nodes' weights the
    /// loader put in their kernel's form (int8 ones packed, which only their int8
    /// kernels can take; float32 `[Wq | Wk | Wv]`, which their float32 kernels take).
    public init(graph: consuming Graph, options: RuntimeOptions = .init(), lookupTables: [String: LookupSource] = [:],
                int8Weights: [String: Int8Weight] = [:], packed: PackedWeights = .init()) throws {
        try graph.verify(alsoDefined: Set(lookupTables.keys).union(int8Weights.keys).union(packed.shapes.keys))
        self.lookupTables = lookupTables
        self.options = options
        // Preparing kernels already runs oneDNN (int8 quantizing and packing; each reorder on one
        // thread): on the threads asked for, not OpenMP's default of every core, whose extra
        // workers would spin against other work.
        Linear.setThreads(options.threads > 0 ? options.threads : ProcessInfoCores.count)
        var slots: [String: Int] = [:]
        func slot(_ name: String) -> Int {
            if let s = slots[name] { return s }
            slots[name] = slots.count
            return slots.count - 1
        }
        // Readers of each value: a taken constant is dropped when its last reader has taken it.
        var readers: [String: Int] = [:]
        for name in graph.nodes.flatMap(\.inputs) + graph.outputs.map(\.name) where !name.isEmpty { readers[name, default: 0] += 1 }
        var released: [String: (dtype: DType, shape: [Int])] = [:]
        var heldBytes = 0
        inputSlots = graph.inputs.map { ($0, slot($0.name)) }
        var lastUse: [Int: Int] = [:]
        var pending: [(Node, KernelFunction, [Int?], [Int])] = []
        for (i, node) in graph.nodes.enumerated() {
            var kernel = try lookupKernel(node, lookupTables)
            var taken: Set<Int> = []
            if kernel == nil {
                var weights = KernelWeights(constants: graph.initializers, int8: int8Weights, packed: packed)
                if let prepared = try Program.int8Kernel(node, &weights, options) {
                    kernel = prepared
                    heldBytes += weights.heldBytes
                } else if packed.holdsInt8(of: node) {
                    throw RuntimeError.nodeFailed(node: node.name, op: node.op.rawValue, reason: "its int8 weights were packed, but it has no int8 kernel")
                } else {
                    // A float32 kernel: weights stored in int8 become values.
                    for name in node.inputs where graph.initializers[name] == nil {
                        if let w = int8Weights[name] { graph.initializers[name] = w.dequantized() }
                    }
                    var floats = KernelWeights(constants: graph.initializers, int8: int8Weights, packed: packed)
                    kernel = try Program.float32Kernel(node, &floats)
                    if kernel != nil {
                        heldBytes += floats.heldBytes
                    } else if packed.float32QueryKeyValue[node.name] != nil {
                        throw RuntimeError.nodeFailed(node: node.name, op: node.op.rawValue, reason: "its [Wq | Wk | Wv] was read side by side, but its float32 kernel could not take it")
                    }
                }
                if kernel != nil { taken = Set(Program.preparedInputs(node.op) ?? []) }
            }
            for k in taken.sorted() {
                let name = node.inputs[k]
                readers[name, default: 1] -= 1
                guard readers[name] == 0 else { continue }
                if let t = graph.initializers.removeValue(forKey: name) {
                    released[name] = (t.dtype, t.shape)
                } else if let w = int8Weights[name] {
                    released[name] = (.float32, w.shape)
                } else if let shape = packed.shapes[name] {
                    released[name] = (.float32, shape)
                }
            }
            let ins = node.inputs.enumerated().map { k, name in name.isEmpty || lookupTables[name] != nil || taken.contains(k) ? nil : slot(name) }
            for s in ins.compactMap({ $0 }) { lastUse[s] = i }
            pending.append((node, try kernel ?? Program.makeKernel(node), ins, node.outputs.map(slot)))
        }
        outputSlots = graph.outputs.map { ($0.name, slot($0.name)) }
        constants = graph.initializers.sorted { $0.key < $1.key }.map { (slot($0.key), $0.value) }
        releasedConstants = released
        var distinct = Set<ObjectIdentifier>()
        weightBytes = heldBytes + constants.reduce(0) { $0 + (distinct.insert(ObjectIdentifier($1.tensor.storage)).inserted ? $1.tensor.byteCount : 0) }
        self.graph = graph
        // Constants, graph inputs and outputs are never released.
        let pinned = Set(constants.map(\.slot) + inputSlots.map(\.slot) + outputSlots.map(\.slot))
        var releasesAt: [Int: [Int]] = [:]
        for (s, i) in lastUse where !pinned.contains(s) { releasesAt[i, default: []].append(s) }
        steps = pending.enumerated().map { i, p in
            Step(node: p.0, kernel: p.1, inputSlots: p.2, outputSlots: p.3, releases: releasesAt[i] ?? [])
        }
        slotCount = slots.count
    }

    /// Runs the program on named inputs and returns the graph outputs by name,
    /// plus any intermediate values named in `retaining` (calibration captures
    /// what each block sees this way).
    /// With `profile`, each kernel's time is added to its op type; with `activations`,
    /// the bytes of intermediate values and kernel scratch alive at once are measured.
    public func run(_ inputs: [String: Tensor], retaining: Set<String> = [], profile: OpProfile? = nil,
                    activations: ActivationMeter? = nil) throws -> [String: Tensor] {
        if activations != nil { buffers.resetPeak() }
        defer { activations?.observe(poolPeak: buffers.peakLiveBytes) }
        return try buffers.run { try execute(inputs, retaining: retaining, profile: profile, activations: activations) }
    }

    private func execute(_ inputs: [String: Tensor], retaining: Set<String>, profile: OpProfile?,
                         activations: ActivationMeter?) throws -> [String: Tensor] {
        var retained: [String: Tensor] = [:]
        try validate(inputs)
        Linear.setThreads(options.threads > 0 ? options.threads : ProcessInfoCores.count)
        var values = [Tensor?](repeating: nil, count: slotCount)
        for (s, t) in constants { values[s] = t }
        for (info, s) in inputSlots { values[s] = inputs[info.name] }
        let notActivations = activations == nil ? [] : Set((constants.map(\.tensor) + inputs.values).map { ObjectIdentifier($0.storage) })
        for step in steps {
            let args = step.inputSlots.map { $0.flatMap { values[$0] } }
            let results: [Tensor]
            do {
                let start = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
                results = try step.kernel(args)
                profile?.add(step.node.op.rawValue, nanoseconds: DispatchTime.now().uptimeNanoseconds - start)
            } catch let KernelError.unsupportedDType(dtype, reason) {
                throw RuntimeError.unsupportedDType(node: step.node.name, op: step.node.op.rawValue, dtype: dtype, reason: reason)
            } catch let e as KernelError {
                throw RuntimeError.nodeFailed(node: step.node.name, op: step.node.op.rawValue, reason: e.description)
            } catch let e as GraphError {
                throw RuntimeError.nodeFailed(node: step.node.name, op: step.node.op.rawValue, reason: e.description)
            }
            for (k, s) in step.outputSlots.enumerated() where k < results.count {
                values[s] = results[k]
                if !retaining.isEmpty, retaining.contains(step.node.outputs[k]) { retained[step.node.outputs[k]] = results[k] }
            }
            activations?.observe(values, excluding: notActivations)
            for s in step.releases { values[s] = nil }
        }
        var out = retained
        for (name, s) in outputSlots { out[name] = values[s] }
        for name in retaining where out[name] == nil {
            out[name] = inputs[name] ?? graph.initializers[name]
        }
        return out
    }

    /// Where a run's time goes, by op type (`spp bench --profile`).
    public final class OpProfile: @unchecked Sendable {
        public private(set) var nanoseconds: [String: UInt64] = [:]
        public private(set) var calls: [String: Int] = [:]
        public init() {}
        func add(_ op: String, nanoseconds ns: UInt64) {
            nanoseconds[op, default: 0] += ns
            calls[op, default: 0] += 1
        }
    }

    /// The peak bytes of activations alive at once over runs (`spp bench`): the
    /// most the run's buffer pool lent at once (bytes asked for: intermediate values
    /// and kernel scratch — a fused block's hidden layer, its scores — of 16 KB and
    /// more), or, if more, the intermediate values alone after each step (the
    /// distinct buffers behind live values other than constants and graph inputs:
    /// views such as a Reshape share their buffer and count once).
    public final class ActivationMeter: @unchecked Sendable {
        public private(set) var peakBytes = 0
        public init() {}
        func observe(poolPeak: Int) { peakBytes = max(peakBytes, poolPeak) }
        func observe(_ values: [Tensor?], excluding: Set<ObjectIdentifier>) {
            var seen = Set<ObjectIdentifier>()
            var bytes = 0
            for case let t? in values where !excluding.contains(ObjectIdentifier(t.storage)) && seen.insert(ObjectIdentifier(t.storage)).inserted {
                bytes += t.storage.byteCount
            }
            peakBytes = max(peakBytes, bytes)
        }
    }

    /// Checks names, dtypes and fixed dims; a symbolic dim must have one size across all inputs.
    func validate(_ inputs: [String: Tensor]) throws {
        let names = graph.inputs.map(\.name)
        for name in inputs.keys where !names.contains(name) {
            throw RuntimeError.unknownInput(name: name, expected: names)
        }
        var symbols: [String: (Int, String)] = [:]
        for info in graph.inputs {
            guard let t = inputs[info.name] else { throw RuntimeError.missingInput(name: info.name) }
            if let dtype = info.dtype, dtype != t.dtype {
                throw RuntimeError.wrongInputType(name: info.name, expected: dtype, actual: t.dtype)
            }
            guard let shape = info.shape else { continue }
            guard shape.count == t.rank else {
                throw RuntimeError.wrongInputRank(name: info.name, expected: shape.count, actual: t.rank)
            }
            for (i, d) in shape.enumerated() {
                switch d {
                case let .fixed(n) where n != t.shape[i]:
                    throw RuntimeError.wrongInputDim(name: info.name, dim: i, expected: String(n), actual: t.shape[i])
                case let .symbol(s):
                    if let (n, other) = symbols[s], n != t.shape[i] {
                        throw RuntimeError.wrongInputDim(name: info.name, dim: i, expected: "\(s) = \(n) (as in input '\(other)')", actual: t.shape[i])
                    }
                    symbols[s] = (t.shape[i], info.name)
                default: break
                }
            }
        }
    }
}

import Foundation

enum ProcessInfoCores {
    static let count = ProcessInfo.processInfo.activeProcessorCount
}

/// A Gather on axis 0 from a lookup table reads its rows on demand.
private func lookupKernel(_ node: Node, _ tables: [String: LookupSource]) throws -> Program.KernelFunction? {
    guard node.op == .gather, let name = node.input(0), let table = tables[name] else { return nil }
    guard try node.int("axis", default: 0) == 0 else {
        throw RuntimeError.unsupportedOp(node: node.name, op: node.op.rawValue, reason: "lookup table '\(name)' is read on axis 0 only")
    }
    return { args in
        guard args.count > 1, let indices = args[1] else { throw KernelError.invalidArgument("required input 1 is missing") }
        return [try table.gather(indices)]
    }
}
