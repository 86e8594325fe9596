import SPPCore
import SPPGraph

/// Removes the shape computations exporters emit, using symbolic inference:
/// - a shape value that resolves to fixed integers (`Gather(Shape(x), 2)` when
///   dimension 2 is 384) becomes a constant;
/// - a Reshape whose target is built from its input's own dims
///   (`Concat(Gather(Shape(x), 0), Gather(Shape(x), 1), 12, 32)` =
///   `[batch, seq, 12, 32]` on `[batch, seq, 384]`) gets the constant target
///   `[0, 0, 12, 32]` (0 copies the input dim); one remaining unknown becomes -1.
/// The Shape/Gather/Concat chains left unread are removed by dead-node elimination.
public struct FoldShapeValues: GraphPass {
    public let name = "fold-shape-values"
    public init() {}

    public func run(on graph: inout Graph) throws -> Int {
        let analysis = try ShapeInference.analyze(graph)
        let outputs = Set(graph.outputs.map(\.name))
        var changes = 0
        var kept: [Node] = []
        for var node in graph.nodes {
            let names = node.outputs.filter { !$0.isEmpty }
            let fixed = names.map { name -> Tensor? in
                guard !outputs.contains(name), let info = analysis.infos[name], let values = analysis.values[name],
                      let shape = info.shape?.compactMap(\.fixedValue), shape.count == info.shape?.count else { return nil }
                return Self.tensor(values.compactMap(\.fixedValue), dtype: info.dtype, shape: shape, expected: values.count)
            }
            if !names.isEmpty, fixed.allSatisfy({ $0 != nil }) {
                for (name, t) in zip(names, fixed) { graph.initializers[name] = t! }
                changes += 1
                continue
            }
            if node.op == .reshape, let target = node.input(1), graph.initializers[target] == nil,
               try node.int("allowzero", default: 0) == 0,
               let values = analysis.values[target], let input = node.input(0),
               let inputShape = analysis.infos[input]?.shape,
               let constant = Self.reshapeTarget(values, inputShape: inputShape) {
                let name = "\(node.name)::shape"
                graph.initializers[name] = Tensor(constant.map(Int64.init), shape: [constant.count])
                node.inputs[1] = name
                changes += 1
            }
            kept.append(node)
        }
        graph.nodes = kept
        return changes
    }

    static func tensor(_ values: [Int], dtype: DType?, shape: [Int], expected: Int) -> Tensor? {
        guard values.count == expected else { return nil }
        switch dtype {
        case .int64: return Tensor(values.map { Int64($0) }, shape: shape)
        case .int32: return Tensor(values.map { Int32(truncatingIfNeeded: $0) }, shape: shape)
        default: return nil
        }
    }

    /// The constant Reshape target for symbolic `values`, or nil if more than one
    /// dim is neither fixed nor the input's dim at the same position.
    static func reshapeTarget(_ values: [Dim], inputShape: [Dim]) -> [Int]? {
        var target: [Int] = []
        var inferred = false
        for (i, v) in values.enumerated() {
            if let n = v.fixedValue, n >= 0 {
                target.append(n)  // 0 keeps its meaning: copy the input dim
            } else if i < inputShape.count, case .symbol = v, v == inputShape[i] {
                target.append(0)
            } else if !inferred, v.fixedValue == -1 || v.fixedValue == nil {
                // The element count fixes this one: Reshape keeps the count, so -1 resolves to it.
                inferred = true
                target.append(-1)
            } else {
                return nil
            }
        }
        return target
    }
}
