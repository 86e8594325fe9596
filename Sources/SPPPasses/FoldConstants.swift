import SPPCore
import SPPGraph
import SPPRuntime

/// Evaluates at conversion time every node whose inputs are all constants and
/// stores its outputs as initializers (work done once, not on every run).
public struct FoldConstants: GraphPass {
    public let name = "fold-constants"
    /// Outputs larger than this stay computed at run time rather than bloating the file.
    public var maxFoldedElements = 1 << 24

    public init() {}

    public func run(on graph: inout Graph) throws -> Int {
        var kept: [Node] = []
        var folded = 0
        for node in graph.nodes {
            let inputs = node.inputs.map { $0.isEmpty ? nil : graph.initializers[$0] }
            let allConstant = zip(node.inputs, inputs).allSatisfy { $0.0.isEmpty || $0.1 != nil }
            guard allConstant, let results = try? Program.evaluate(node, inputs: inputs),
                  results.count >= node.outputs.filter({ !$0.isEmpty }).count,
                  results.allSatisfy({ $0.count <= maxFoldedElements }) else {
                kept.append(node)
                continue
            }
            for (name, tensor) in zip(node.outputs, results) where !name.isEmpty {
                graph.initializers[name] = tensor
            }
            folded += 1
        }
        graph.nodes = kept
        return folded
    }
}
