import Testing
import SPPCore
import SPPGraph
import SPPRuntime

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
}
