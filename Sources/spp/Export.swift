import ArgumentParser
import Foundation
import SPPTools

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a .spp at a keep ratio as a plain ONNX model (standard ops, opset 17) that onnxruntime runs as spp does.")

    @Argument(help: "A .spp model.") var model: String
    @Option(help: "Fraction of prunable parameters to keep (0 < R ≤ 1).") var keep: Double = 1
    @Option(name: .shortAndLong, help: "Where to write the .onnx file.") var output: String

    func run() throws {
        let s = CommandLineErrors.report { try ModelExport.export(input: model, keep: keep, output: output) }
        print("exported \(model) at keep \(keep) → \(output)")
        print("  nodes: \(s.nodes); parameters: \(Report.count(s.keptParameters)) kept, \(Report.count(s.writtenParameters)) written (with zero padding); \(Report.bytes(s.bytes))")
        print("  ops: \(Report.histogram(s.opHistogram))")
        if !s.lowering.rewritten.isEmpty {
            print("  rewritten: " + s.lowering.rewritten.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        for a in s.lowering.attention {
            let (qk, vo) = (a.qkRanks.reduce(0, +), a.voRanks.reduce(0, +))
            print("  \(a.node): heads \(a.heads)/\(a.qkRanks.count), qk \(qk) kept → \(a.heads)×\(a.qkPadded) = \(a.heads * a.qkPadded) padded, vo \(vo) kept → \(a.heads)×\(a.voPadded) = \(a.heads * a.voPadded) padded")
        }
    }
}
