import SPPCore

/// One row of a file's tensor table: what the tensor is and where its frame
/// lies, known after reading the header alone. All sizes are validated
/// against the file and the `FormatLimits` when the reader opens the file.
/// A class: a load passes each of its thousands of entries through several
/// lists, and copying a struct of three reference-counted fields cost ~2 ms.
public final class TensorEntryInfo: Sendable {
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

    init(name: String, dtype: DType, shape: [Int], codec: Codec, fileOffset: Int, compressedSize: Int, rawSize: Int,
         checksum: UInt64, encoding: ValueEncoding?) {
        (self.name, self.dtype, self.shape, self.codec) = (name, dtype, shape, codec)
        (self.fileOffset, self.compressedSize, self.rawSize, self.checksum, self.encoding) = (fileOffset, compressedSize, rawSize, checksum, encoding)
    }

    /// The dtype the graph sees: float32 for an encoded entry, else `dtype`.
    public var valueDType: DType { encoding?.valueDType ?? dtype }
}
