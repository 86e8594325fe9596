import Dispatch
import Foundation
import Synchronization
import Testing
import SPPFormat
import SPPCore
import SPPGraph
@testable import SPPRuntime

/// `Program`'s bookkeeping around the kernels.
@Suite struct ProgramTests {
    @Test func activationMeterCountsLiveBuffersOnce() throws {
        // x [1000] → Relu → a → Reshape → v → Reshape → w → ReduceSum → out [1]. The reshapes are views of a's
        // buffer: at most a's 4000 bytes and out's 4 are alive together (8000+ if views counted twice).
        let shape = Tensor([Int64(1000)], shape: [1])
        let graph = Graph(inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.fixed(1000)])],
                          outputs: [ValueInfo(name: "out", dtype: .float32, shape: nil)],
                          initializers: ["shape": shape],
                          nodes: [Node(name: "r", op: .relu, inputs: ["x"], outputs: ["a"]),
                                  Node(name: "v", op: .reshape, inputs: ["a", "shape"], outputs: ["v"]),
                                  Node(name: "w", op: .reshape, inputs: ["v", "shape"], outputs: ["w"]),
                                  Node(name: "s", op: .reduceSum, inputs: ["w"], outputs: ["out"], attributes: ["keepdims": .int(0)])])
        let meter = Program.ActivationMeter()
        let x = Tensor((0..<1000).map { Float($0) - 500 }, shape: [1000])
        let out = try Program(graph: graph).run(["x": x], activations: meter)["out"]!
        #expect(out.floats == [Float((1...499).reduce(0, +))])
        #expect(meter.peakBytes == 4000 + 4)
    }

    /// x → Relu → a → Neg → b → Abs → out (= relu(x)), all [rows, 128] float32: 64 KiB
    /// each at 128 rows, large enough for the pool; b is an output too.
    static let chain = Graph(inputs: [ValueInfo(name: "x", dtype: .float32, shape: [.symbol("rows"), .fixed(128)])],
                             outputs: [ValueInfo(name: "out", dtype: .float32, shape: nil), ValueInfo(name: "b", dtype: .float32, shape: nil)],
                             initializers: [:],
                             nodes: [Node(name: "r", op: .relu, inputs: ["x"], outputs: ["a"]),
                                     Node(name: "n", op: .neg, inputs: ["a"], outputs: ["b"]),
                                     Node(name: "abs", op: .abs, inputs: ["b"], outputs: ["out"])])

    static func input(rows: Int, seed: Float) -> Tensor {
        Tensor((0..<(rows * 128)).map { Float($0 % 7) - 3 + seed }, shape: [rows, 128])
    }

    static func relu(_ x: Tensor) -> [Float] { x.floats.map { max($0, 0) } }

    @Test func runsTakeTheirBuffersFromThePoolAndReuseThem() throws {
        let program = try Program(graph: Self.chain)
        let x1 = Self.input(rows: 128, seed: 0), x2 = Self.input(rows: 128, seed: 0.5)
        let first = try program.run(["x": x1])
        // a, b and out, 64 KiB each: out took a's buffer once Neg had read it.
        #expect(program.buffers.heldBytes == 2 * 65536)
        let second = try program.run(["x": x2])
        // b and out of the first run are still the caller's: two more.
        #expect(program.buffers.heldBytes == 4 * 65536)
        // The first run's outputs are the caller's: the second did not write over them.
        #expect(first["out"]!.floats == Self.relu(x1) && first["b"]!.floats == Self.relu(x1).map { -$0 })
        #expect(second["out"]!.floats == Self.relu(x2) && second["b"]!.floats == Self.relu(x2).map { -$0 })
    }

    @Test func theActivationMeterCountsWhatThePoolLentAtOnce() throws {
        let program = try Program(graph: Self.chain)
        // x → a → b → out, 100 rows of 128 floats (51,200 bytes, a buffer of whole pages each): at
        // most two of them live at once (a step's input and output), counted as asked for.
        let meter = Program.ActivationMeter()
        let outputs = try program.run(["x": Self.input(rows: 100, seed: 0)], activations: meter)
        #expect(meter.peakBytes == 2 * 100 * 128 * 4)
        // The meter's peak is the pool's: what the run took from it at once.
        #expect(meter.peakBytes == program.buffers.peakLiveBytes)
        // A peak starts again from what is still lent: the outputs the caller holds.
        let pool = program.buffers
        pool.resetPeak()
        #expect(pool.peakLiveBytes == 2 * 100 * 128 * 4, "b and out are still the caller's")
        withExtendedLifetime(outputs) {}
    }

    @Test func loadTasksStartLeadFirstThenLargestFirst() throws {
        var graph = Self.chain
        for n in [10, 40, 20, 30, 50] { graph.initializers["c\(n)"] = Tensor([Float](repeating: 1, count: n), shape: [n]) }
        let dir = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.spp").path
        try SPPWriter.write(SPPModel(graph: graph, provenance: Provenance()), to: file)
        let reader = try SPPReader(path: file)
        let started = Mutex<[String]>([])
        func task(_ name: String, _ order: TensorDecoder.Task.Order) throws -> TensorDecoder.Task {
            let e = try #require(reader.entry(named: name))
            return TensorDecoder.Task(entries: [e], order: order) { _, _ in started.withLock { $0.append(name) } }
        }
        // One thread takes them one at a time, in the order the run starts them.
        var decoder = TensorDecoder(reader: reader, threads: 1)
        try decoder.run([task("c10", .lead), task("c20", .bySize), task("c30", .lead), task("c40", .bySize), task("c50", .bySize)])
        #expect(started.withLock { $0 } == ["c30", "c10", "c50", "c40", "c20"])
    }

    @Test func aPoolBufferTooSmallForAUseIsOutgrownNotKeptBeside() throws {
        // One use at a time, growing as a pruned model's ragged layers do: 20, 30, then 50 KB.
        let pool = BufferPool()
        func run() -> [UnsafeMutableRawPointer] {
            pool.run { [20_000, 30_000, 50_000].map { TensorStorage(byteCount: $0).bytes } }
        }
        let first = run()
        // Each larger use freed the buffer before it: one buffer, the last size in whole pages.
        let pages = (50_000 + BufferPool.pageBytes - 1) / BufferPool.pageBytes * BufferPool.pageBytes
        #expect(pool.heldBytes == pages)
        // The next run of the same uses takes that buffer every time: nothing new is allocated.
        let second = run()
        #expect(second == [first[2], first[2], first[2]])
        #expect(pool.heldBytes == pages)
    }

    @Test func aRunFreesThePoolBuffersItDidNotTake() throws {
        let program = try Program(graph: Self.chain)
        _ = try program.run(["x": Self.input(rows: 512, seed: 0)])
        #expect(program.buffers.heldBytes == 2 * 512 * 128 * 4)
        // 8 rows are 4 KiB a value, below the pool's minimum: the run takes nothing and frees it all.
        _ = try program.run(["x": Self.input(rows: 8, seed: 0)])
        #expect(program.buffers.heldBytes == 0)
    }

    @Test func aProgramsFreeBuffersGoWithIt() throws {
        var program: Program? = try Program(graph: Self.chain)
        let x = Self.input(rows: 128, seed: 0)
        let kept = try program!.run(["x": x])
        _ = try program!.run(["x": x])
        // kept's b and out are taken; the second run's went back: 4 buffers of 64 KiB.
        let pool = program!.buffers
        #expect(pool.heldBytes == 4 * 65536)
        program = nil
        #expect(pool.heldBytes == 2 * 65536, "only what the caller still holds")
        #expect(kept["out"]!.floats == Self.relu(x))
    }

    @Test func concurrentRunsGetTheirOwnBuffers() throws {
        let program = try Program(graph: Self.chain)
        let inputs = (0..<16).map { Self.input(rows: 128, seed: Float($0) / 16) }
        let results = Mutex<[Int: [Float]]>([:])
        DispatchQueue.concurrentPerform(iterations: 64) { j in
            let out = try? program.run(["x": inputs[j % 16]])["out"]!.floats
            results.withLock { $0[j] = out }
        }
        for j in 0..<64 { #expect(results.withLock { $0[j] } == Self.relu(inputs[j % 16]), "run \(j)") }
    }
}
