import Foundation
import SPPFormat
import SPPRuntime

/// What `spp inspect` says about a pruning path and its cost table.
public enum PathSummary {
    public static func lines(_ path: PruningPath, costTable: [CostLevel]) -> [String] {
        var lines = ["pruning path: \(path.method), \(path.pairs.count) pairs, \(path.pairs.reduce(0) { $0 + $1.ranks.count }) units, "
            + "\(Report.count(path.prunableParameters)) prunable + \(Report.count(path.fixedParameters)) fixed parameters"]
        for kind in PrunablePair.Kind.allCases {
            let pairs = path.pairs.filter { $0.kind == kind }
            guard !pairs.isEmpty else { continue }
            lines.append("  \(kind.rawValue): \(pairs.count) pairs, \(pairs.reduce(0) { $0 + $1.ranks.count }) units")
        }
        let repairable = path.pairs.filter { $0.tensors.contains { $0.role == FeedForwardRepair.Role.inverseFactor } }.count
        if repairable > 0 {
            lines.append("  repair: \(repairable) FFN pairs refit W2 by least squares below full size (--no-repair to skip)")
        }
        guard !costTable.isEmpty else { return lines }
        let length = costTable.first?.referenceLength ?? 0
        lines.append("cost per keep level (FLOPs of the pruned blocks for one sequence of \(length) tokens):")
        lines.append("  keep   parameters   GFLOPs   weights")
        let shown: Set<Int> = [10, 25, 30, 50, 75, 90, 100]
        for c in costTable where shown.contains(Int((c.keep * 100).rounded())) {
            lines.append(String(format: "  %4.2f   %10@   %6.2f   %@", c.keep, Report.count(c.parameters), Double(c.flops) / 1e9, Report.bytes(c.weightBytes)))
        }
        return lines
    }
}
