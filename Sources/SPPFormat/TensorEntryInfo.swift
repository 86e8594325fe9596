import SPPCore

/// One row of a file's tensor table: what the tensor is and where its frame
/// lies, known after reading the header alone. All sizes are validated
/// against the file and the `FormatLimits` when the reader opens the file.
public struct TensorEntryInfo: Sendable, Equatable {
    /// How a frame is stored.
    public enum Codec: Int32, Sendable {
        /// The frame is the raw element bytes.
        case none = 0
        /// The frame is one zstd frame.
        case zstd = 1
    }

    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let codec: Codec
    /// Absolute byte offset of the frame in the file (a multiple of 64 for
    /// files written by `SPPWriter`).
    public let fileOffset: Int
    /// Bytes of the stored frame.
    public let compressedSize: Int
    /// Bytes of the decoded tensor.
    public let rawSize: Int
    /// XXH64 of the stored frame.
    public let checksum: UInt64
    /// Set when the stored elements stand for float32 values at a lower
    /// precision (checked against the table when the file is opened).
    public let encoding: ValueEncoding?

    /// The dtype the graph sees: float32 for an encoded entry, else `dtype`.
    public var valueDType: DType { encoding?.valueDType ?? dtype }
}
