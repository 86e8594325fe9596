import Foundation

/// What can be wrong with a `.npy` file.
public enum NpyError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case notNpy(path: String)
    case truncated(path: String, expectedBytes: Int, actualBytes: Int)
    case badHeader(path: String, reason: String)
    case unsupportedDType(path: String, descr: String)
    case fortranOrder(path: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read \(path): \(reason)"
        case let .notNpy(path): return "\(path) is not a NumPy .npy file (bad magic)"
        case let .truncated(path, expected, actual):
            return "\(path) is truncated: its header promises \(expected) data bytes, the file has \(actual)"
        case let .badHeader(path, reason): return "\(path) has a malformed .npy header: \(reason)"
        case let .unsupportedDType(path, descr):
            return "\(path) has dtype '\(descr)'; supported: float32, float64, int64, int32, int16, int8, uint8, bool (little-endian)"
        case let .fortranOrder(path): return "\(path) is in Fortran order; save it with numpy.ascontiguousarray first"
        }
    }
}

/// NumPy `.npy` reading and writing (format versions 1–3, little-endian, C order).
public enum Npy {
    private static let descrs: [(String, DType)] = [
        ("<f4", .float32), ("<f8", .float64), ("<i8", .int64), ("<i4", .int32), ("<i2", .int16),
        ("|i1", .int8), ("|u1", .uint8), ("|b1", .bool), ("<u2", .uint16), ("<u4", .uint32),
        ("<u8", .uint64), ("<f2", .float16),
    ]

    public static func read(path: String) throws -> Tensor {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw NpyError.unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        return try decode(data, path: path)
    }

    public static func decode(_ data: Data, path: String = "<memory>") throws -> Tensor {
        let bytes = [UInt8](data)
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw NpyError.notNpy(path: path)
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw NpyError.notNpy(path: path) }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw NpyError.badHeader(path: path, reason: "unknown format version \(major)")
        }
        guard headerStart + headerLength <= bytes.count else {
            throw NpyError.badHeader(path: path, reason: "header length \(headerLength) runs past the end of the file")
        }
        guard let header = String(bytes: bytes[headerStart..<headerStart + headerLength], encoding: .utf8) else {
            throw NpyError.badHeader(path: path, reason: "header is not text")
        }
        let descr = try field("descr", in: header, path: path)
        let fortran = try field("fortran_order", in: header, path: path)
        let shapeText = try field("shape", in: header, path: path)
        if fortran.hasPrefix("True") { throw NpyError.fortranOrder(path: path) }
        let cleanDescr = descr.trimmingCharacters(in: CharacterSet(charactersIn: "'\" "))
        guard let dtype = descrs.first(where: { $0.0 == cleanDescr || ($0.0.dropFirst() == cleanDescr.dropFirst() && cleanDescr.first == "=") })?.1 else {
            throw NpyError.unsupportedDType(path: path, descr: cleanDescr)
        }
        let inner = shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "() "))
        var shape: [Int] = []
        for part in inner.split(separator: ",") {
            let s = part.trimmingCharacters(in: .whitespaces)
            if s.isEmpty { continue }
            guard let d = Int(s), d >= 0 else { throw NpyError.badHeader(path: path, reason: "bad shape '\(shapeText)'") }
            shape.append(d)
        }
        let (count, overflow) = shape.reduce((1, false)) { acc, d in
            let (p, o) = acc.0.multipliedReportingOverflow(by: d)
            return (p, acc.1 || o)
        }
        let (byteCount, overflow2) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, !overflow2 else { throw NpyError.badHeader(path: path, reason: "shape \(shapeText) is absurdly large") }
        let dataStart = headerStart + headerLength
        guard bytes.count - dataStart >= byteCount else {
            throw NpyError.truncated(path: path, expectedBytes: byteCount, actualBytes: bytes.count - dataStart)
        }
        let tensor = Tensor(dtype: dtype, shape: shape)
        bytes.withUnsafeBytes { raw in
            tensor.rawPointer.copyMemory(from: raw.baseAddress! + dataStart, byteCount: byteCount)
        }
        return tensor
    }

    /// The value text after `'key':` in the header dictionary.
    private static func field(_ key: String, in header: String, path: String) throws -> String {
        guard let keyRange = header.range(of: "'\(key)'") ?? header.range(of: "\"\(key)\"") else {
            throw NpyError.badHeader(path: path, reason: "no '\(key)' entry")
        }
        var rest = header[keyRange.upperBound...].drop(while: { $0 == " " || $0 == ":" })
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else { throw NpyError.badHeader(path: path, reason: "unclosed shape") }
            return String(rest[...close])
        }
        if let end = rest.firstIndex(where: { $0 == "," || $0 == "}" }) { rest = rest[..<end] }
        return rest.trimmingCharacters(in: .whitespaces)
    }

    public static func encode(_ tensor: Tensor) -> Data {
        let descr = descrs.first(where: { $0.1 == tensor.dtype })!.0
        let shapeText = tensor.shape.isEmpty ? "()" :
            tensor.shape.count == 1 ? "(\(tensor.shape[0]),)" : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let n = header.utf8.count
        data.append(contentsOf: [UInt8(n & 0xff), UInt8(n >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.append(Data(bytes: tensor.rawPointer, count: tensor.byteCount))
        return data
    }

    /// Writes atomically: a temp file then a rename, so no half-written file is left.
    public static func write(_ tensor: Tensor, path: String) throws {
        try AtomicFile.write(encode(tensor), to: path)
    }
}

/// Whole-file writes that either complete or leave nothing behind.
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        // Data.write(.atomic) writes a temporary file beside the target and renames it.
        try data.write(to: url, options: .atomic)
    }
}
