import SPPCore

/// Everything that can be wrong with a `.spp` file, or with writing one. Each
/// case names the file and says what and where, so that a user can act on the
/// message alone ("tensor 'encoder.0.w' fails its checksum" rather than "bad file").
public enum FormatError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file does not start with the `.spp` magic.
    case notSPPFile(path: String)
    /// The preamble's version is not one this reader understands.
    case unsupportedVersion(path: String, found: UInt32, readable: [UInt32])
    /// The preamble sets flag bits this reader does not know.
    case unsupportedFlags(path: String, flags: UInt32)
    /// The file ends before `section` does: `expected` bytes were needed at
    /// byte `offset`, only `available` are there.
    case truncated(path: String, section: String, offset: Int, expected: Int, available: Int)
    case headerChecksumMismatch(path: String, stored: UInt64, computed: UInt64)
    /// protobuf-c could not decode the header (`spp__model__unpack` returned NULL).
    case headerUndecodable(path: String, length: Int)
    /// The header decodes but contradicts itself or the preamble.
    case headerInconsistent(path: String, reason: String)
    case tensorChecksumMismatch(path: String, tensor: String, stored: UInt64, computed: UInt64)
    /// zstd refused the frame; `reason` is zstd's error name.
    case decompressionFailed(path: String, tensor: String, reason: String)
    case decompressedSizeMismatch(path: String, tensor: String, expected: Int, actual: Int)
    /// A tensor (or value, or attribute: `tensor` says which) has a data type
    /// code this project does not support.
    case unknownDType(path: String, tensor: String, code: Int32)
    case unknownCodec(path: String, tensor: String, code: Int32)
    /// Negative dimensions, an element count that overflows, or a byte size
    /// that does not match the shape.
    case absurdShape(path: String, tensor: String, shape: [Int64], reason: String)
    /// The tensor's frame does not lie inside the data section.
    case frameOutOfBounds(path: String, tensor: String, offset: UInt64, size: UInt64, dataSize: UInt64)
    /// The tensor's decoded bytes are not valid for its dtype (a bool that is not 0 or 1, a negative scale).
    case invalidTensorData(path: String, tensor: String, reason: String)
    /// The tensor's storage precision (`value_dtype`, `scales`) is inconsistent:
    /// int8 without scales, scales missing or of the wrong shape or type, a dtype
    /// that cannot stand for its value.
    case invalidEncoding(path: String, tensor: String, reason: String)
    /// A `FormatLimits` bound was exceeded; `limit` is the field's name.
    case limitExceeded(path: String, limit: String, value: UInt64, maximum: Int)
    case unknownOp(path: String, node: String, op: String)
    case badAttribute(path: String, node: String, attribute: String, reason: String)
    /// `SPPReader.tensor(named:)` was asked for a tensor the file does not hold.
    case noSuchTensor(path: String, name: String)
    /// Opening or reading the file failed (`reason` is the system's message).
    case readFailed(path: String, reason: String)
    /// Writing failed or the model cannot be written; no output was left behind.
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .notSPPFile(path):
            return "\(path) is not an .spp model (bad magic)"
        case let .unsupportedVersion(path, found, readable):
            return "\(path) has .spp format version \(found); this build reads versions \(readable.map(String.init).joined(separator: ", "))"
        case let .unsupportedFlags(path, flags):
            return "\(path) sets unknown format flags 0x\(String(flags, radix: 16)); it was written by a newer tool"
        case let .truncated(path, section, offset, expected, available):
            return "\(path) is truncated or corrupted: \(section) needs \(expected) bytes at byte offset \(offset), the file has \(available)"
        case let .headerChecksumMismatch(path, stored, computed):
            return "\(path) is corrupted: header checksum is \(hex(computed)), the file says \(hex(stored))"
        case let .headerUndecodable(path, length):
            return "\(path) is corrupted: its \(length)-byte header does not decode as spp.Model"
        case let .headerInconsistent(path, reason):
            return "\(path) has an inconsistent header: \(reason)"
        case let .tensorChecksumMismatch(path, tensor, stored, computed):
            return "\(path) is corrupted at tensor '\(tensor)': frame checksum is \(hex(computed)), the header says \(hex(stored))"
        case let .decompressionFailed(path, tensor, reason):
            return "\(path) is corrupted at tensor '\(tensor)': zstd failed (\(reason))"
        case let .decompressedSizeMismatch(path, tensor, expected, actual):
            return "\(path) is corrupted at tensor '\(tensor)': it decompresses to \(actual) bytes, expected \(expected)"
        case let .unknownDType(path, tensor, code):
            return "\(path): \(tensor) has data type \(DType.onnxName(code)) (code \(code)), which spp does not support"
        case let .unknownCodec(path, tensor, code):
            return "\(path): tensor '\(tensor)' uses codec \(code), which this build does not know"
        case let .absurdShape(path, tensor, shape, reason):
            return "\(path): \(tensor) has shape [\(shape.map(String.init).joined(separator: ", "))]: \(reason)"
        case let .frameOutOfBounds(path, tensor, offset, size, dataSize):
            return "\(path): tensor '\(tensor)' frame (\(size) bytes at data offset \(offset)) lies outside the \(dataSize)-byte data section"
        case let .invalidTensorData(path, tensor, reason):
            return "\(path): tensor '\(tensor)' holds invalid data: \(reason)"
        case let .invalidEncoding(path, tensor, reason):
            return "\(path): tensor '\(tensor)' has an inconsistent storage precision: \(reason)"
        case let .limitExceeded(path, limit, value, maximum):
            return "\(path): \(limit) is \(value), above the limit of \(maximum) (FormatLimits.\(limit))"
        case let .unknownOp(path, node, op):
            return "\(path): node '\(node)' has op '\(op)', which this build does not know"
        case let .badAttribute(path, node, attribute, reason):
            return "\(path): node '\(node)' attribute '\(attribute)': \(reason)"
        case let .noSuchTensor(path, name):
            return "\(path) has no tensor named '\(name)'"
        case let .readFailed(path, reason):
            return "cannot read \(path): \(reason)"
        case let .writeFailed(path, reason):
            return "cannot write \(path): \(reason)"
        }
    }
}

private func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: 16 - s.count) + s
}
