// The `.spp` container, format version 1. This comment and docs/format.md are
// the specification; keep them in step.
//
// Every integer is little-endian. Offsets are from the start of the file.
//
//   offset     size  field
//   0          8     magic "SPPMODEL" (53 50 50 4D 4F 44 45 4C)
//   8          4     u32 format version (1)
//   12         4     u32 flags: bit 0 = some tensors are stored at a lower
//                    precision than their value (TensorEntry value_dtype,
//                    scales); a reader rejects a file that sets a bit it does
//                    not know
//   16         8     u64 header length H
//   24         H     header: protobuf message spp.Model (schemas/spp_model.proto):
//                    graph, tensor table, data_size, provenance
//   24+H       8     u64 header checksum: XXH64, seed 0, of bytes [0, 24+H)
//   32+H       P     zero bytes, P = (64 - (32+H) % 64) % 64
//   D = 32+H+P       start of the data section (a multiple of 64)
//   D+offset_i c_i   frame of tensor i (offset_i from its TensorEntry, a
//                    multiple of 64; c_i = compressed_size). Frames follow in
//                    table order with zero padding between them.
//   D+data_size      end of the file (data_size from the header = end of the
//                    last frame; 0 when there are no tensors)
//
// A frame is one zstd frame (codec ZSTD: content size and content checksum
// set, level 3 by default) or the raw element bytes (codec NONE). The tensor
// table's checksum is XXH64 (seed 0) of the stored frame bytes, so a reader
// can reject a corrupted frame before decompressing it. Decoded bytes are
// row-major, little-endian elements of the entry's dtype (ONNX type codes).
// An entry with value_dtype set stores float32 values as float16, bfloat16
// or int8 (times its scales tensor: one scale per row or per column).
//
// Frames are independent and located by the header alone, so a reader can
// fetch any subset of tensors with one positioned read each.

/// Constants of the `.spp` container (layout above and in docs/format.md).
public enum SPPFormat {
    /// The first 8 bytes of every `.spp` file.
    public static let magic: [UInt8] = Array("SPPMODEL".utf8)
    /// The version `SPPWriter` writes.
    public static let currentVersion: UInt32 = 1
    /// The versions `SPPReader` accepts. See "History of breaking changes" in docs/format.md.
    public static let readableVersions: [UInt32] = [1]
    /// Flag bit 0: the file has tensors stored at a lower precision than their
    /// value (`ValueEncoding`). Set only then, so that files without them stay
    /// readable by readers that predate it.
    public static let encodedTensorsFlag: UInt32 = 1
    /// Flag bits this build understands.
    public static let knownFlags: UInt32 = encodedTensorsFlag
    /// Alignment of the data section and of every frame in it, in bytes.
    public static let alignment = 64
    /// Bytes before the header: magic, version, flags, header length.
    static let preambleSize = 24
    static let checksumSize = 8

    /// `n` rounded up to a multiple of `alignment`; nil on overflow.
    static func aligned(_ n: Int) -> Int? {
        let (sum, overflow) = n.addingReportingOverflow(alignment - 1)
        return overflow ? nil : sum & ~(alignment - 1)
    }
}
