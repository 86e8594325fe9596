import Foundation
import SPPCore
import SPPGraph

/// One named graph rewrite. `run` returns how many things it changed, so every
/// conversion can say what each pass did.
public protocol GraphPass: Sendable {
    var name: String { get }
    func run(on graph: inout Graph) throws -> Int
}

/// What one pass did.
public struct PassReport: Sendable {
    public let name: String
    public let changes: Int
    public let seconds: Double
}

/// The passes a conversion runs, in order.
public enum PassPipeline {
    /// Order matters: Identity removal exposes constants to folding; shape
    /// values resolved by inference become constants that constant folding
    /// then propagates; block discovery needs both (its patterns read Reshape
    /// targets and scales as constants) and replaces each attention and
    /// feed-forward block by one fused node; folding and fusion leave dead
    /// subgraphs behind (shape chains, mask expansions, the weights copied
    /// into the fused nodes), and dead-node elimination removes them together
    /// with initializers nothing reads any more.
    public static let standard: [GraphPass] = simplify + [DiscoverBlocks(), EliminateDeadNodes()]

    /// The passes that prepare a graph for block discovery (what `spp inspect`
    /// runs on an ONNX model before it reports the blocks).
    public static let simplify: [GraphPass] = [RemoveIdentity(), FoldShapeValues(), FoldConstants()]

    /// Runs `passes` except those named in `disabled`; with `verify`, checks the
    /// graph after each pass (tests turn it on).
    public static func run(_ graph: inout Graph, passes: [GraphPass] = standard, disabled: Set<String> = [],
                           verify: Bool = false) throws -> [PassReport] {
        var reports: [PassReport] = []
        for pass in passes where !disabled.contains(pass.name) {
            let start = Date()
            let changes = try pass.run(on: &graph)
            if verify { try graph.verify() }
            reports.append(PassReport(name: pass.name, changes: changes, seconds: Date().timeIntervalSince(start)))
        }
        return reports
    }
}
