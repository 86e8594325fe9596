import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import SPPONNX
import SPPRuntime

/// A model file given on the command line: ONNX or native, told apart by content.
public enum ModelFile {
    case onnx(ONNXModel)
    case spp(SPPReader)

    /// Opens `path`. A `.spp` is recognised by its magic; anything else is read as ONNX.
    public static func open(_ path: String) throws -> ModelFile {
        if isSPP(path) { return .spp(try SPPReader(path: path)) }
        return .onnx(try ONNXImporter.load(path: path))
    }

    static func isSPP(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: SPPFormat.magic.count)) ?? Data()
        return [UInt8](head) == SPPFormat.magic
    }

    /// Types and shapes of the lookup tables a `.spp` reads by row at run time
    /// (a loaded model's graph reads them without holding them as constants).
    public var lookupTableShapes: [String: (dtype: DType?, shape: [Int])] {
        guard case let .spp(reader) = self else { return [:] }
        var out: [String: (dtype: DType?, shape: [Int])] = [:]
        for table in reader.lookupTables {
            guard let first = table.chunks.first.flatMap({ reader.entry(named: $0) }) else { continue }
            out[table.name] = (first.dtype, [table.chunkRows.reduce(0, +)] + first.shape.dropFirst())
        }
        return out
    }

    /// A runnable model, at `keep` for a `.spp` with a pruning path.
    public func makeModel(keep: Double = 1, repair: Bool = true, options: RuntimeOptions) throws -> Model {
        switch self {
        case let .onnx(m):
            guard keep == 1 else { throw RuntimeError.noPruningPath }
            return try Model(graph: m.graph, options: options)
        case let .spp(reader): return try Model(reader: reader, keep: keep, repair: repair, options: options)
        }
    }
}
