import SPPCore
import SPPGraph

/// A constant the graph only reads by row — a token embedding table — stored
/// in row chunks so that a loader can fetch just the rows its inputs use.
public struct LookupTable: Sendable, Equatable {
    /// The value name the graph reads.
    public var name: String
    /// Tensor entries holding consecutive rows, in order.
    public var chunks: [String]
    public var chunkRows: [Int]

    public init(name: String, chunks: [String], chunkRows: [Int]) {
        self.name = name
        self.chunks = chunks
        self.chunkRows = chunkRows
    }

    /// Rows per chunk when splitting: small enough that a sentence reads little,
    /// large enough to keep the tensor table short. A 128-token debdesc description
    /// touches a median 21 chunks of all-MiniLM's vocabulary at 256 rows (4 MB of
    /// float16 read on a first run), 26 at 64 (1.2 MB; the table's frames 120 → 477).
    public static let rowsPerChunk = 64
    /// Constants smaller than this stay whole.
    public static let minimumBytes = 4 << 20

    /// Replaces every large constant that is read only as the data of Gather on
    /// axis 0 by row chunks, and returns the tables to record in the header.
    public static func split(_ graph: inout Graph, minimumBytes: Int = minimumBytes, rowsPerChunk: Int = rowsPerChunk) -> [LookupTable] {
        var readers: [String: [Node]] = [:]
        for node in graph.nodes { for name in node.inputs where !name.isEmpty { readers[name, default: []].append(node) } }
        let outputs = Set(graph.outputs.map(\.name))
        var tables: [LookupTable] = []
        for (name, tensor) in graph.initializers.sorted(by: { $0.key < $1.key }) {
            guard tensor.byteCount >= minimumBytes, tensor.rank >= 2, !outputs.contains(name),
                  let users = readers[name], users.allSatisfy({ n in
                      n.op == .gather && n.inputs.first == name && !n.inputs.dropFirst().contains(name)
                          && ((try? n.int("axis", default: 0)) ?? -1) == 0
                  }) else { continue }
            var table = LookupTable(name: name, chunks: [], chunkRows: [])
            var start = 0
            while start < tensor.shape[0] {
                let end = min(tensor.shape[0], start + rowsPerChunk)
                let chunk = "\(name)#rows\(table.chunks.count)"
                graph.initializers[chunk] = tensor.rows(start..<end)
                table.chunks.append(chunk)
                table.chunkRows.append(end - start)
                start = end
            }
            graph.initializers[name] = nil
            tables.append(table)
        }
        return tables
    }
}
