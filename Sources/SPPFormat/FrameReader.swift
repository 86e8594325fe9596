#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CZstd
import SPPCore

/// Fetches tensors' frames from an open `.spp` file (its `SPPReader`'s
/// `frames`): one positioned read per frame, its checksum, zstd, and the checks
/// of decoded values. It holds the file open and little else, so a loaded model
/// keeps it to read lookup-table rows later without the header's tables.
/// Immutable; its methods may be called from several threads at once.
public final class FrameReader: Sendable {
    /// The file it reads.
    public let path: String
    private let fd: Int32
    /// Entries some encoded entry names as its scales (their values are checked when read).
    private let scalesNames: Set<String>

    /// Takes over `fd` (closed with the reader).
    init(path: String, fd: Int32, scalesNames: Set<String>) {
        (self.path, self.fd, self.scalesNames) = (path, fd, scalesNames)
    }

    deinit { close(fd) }

    /// Reads, checks and decodes the tensor of a table row as
    /// stored (an encoded entry gives its stored elements: see `ValueEncoding`).
    public func tensor(_ e: TensorEntryInfo) throws -> Tensor {
        let tensor = Tensor(dtype: e.dtype, shape: e.shape)
        try decode(e, into: tensor.rawPointer, buffers: FrameBuffers())
        return tensor
    }

    /// Reads, checks and decodes the stored bytes of `e` into `dst`, which holds
    /// `e.rawSize` bytes: one positioned read of the frame, its checksum, and zstd
    /// straight into `dst`. Safe to call from several threads, each with its own buffers.
    public func decode(_ e: TensorEntryInfo, into dst: UnsafeMutableRawPointer, buffers: FrameBuffers) throws {
        switch e.codec {
        case .none:
            try readFrame(e, into: dst)
            try verify(e, UnsafeRawBufferPointer(start: dst, count: e.compressedSize))
        case .zstd:
            // The frame is read and checked before anything is decompressed.
            let frame = buffers.frame(e.compressedSize)
            try readFrame(e, into: frame)
            let src = UnsafeRawBufferPointer(start: frame, count: e.compressedSize)
            try verify(e, src)
            try checkDeclaredSize(e, src)
            guard let context = buffers.context() else {
                throw FormatError.decompressionFailed(path: path, tensor: e.name, reason: "zstd cannot allocate a decompression context")
            }
            try decompress(e, src, into: dst, context: context)
        }
        if let reason = invalidData(e, UnsafeRawPointer(dst)) {
            throw FormatError.invalidTensorData(path: path, tensor: e.name, reason: reason)
        }
    }

    /// `decode` into the buffers' scratch space; the bytes stay valid until the
    /// buffers' next use. For callers that convert what they read (expanding
    /// float16, taking some rows).
    public func decode(_ e: TensorEntryInfo, buffers: FrameBuffers) throws -> UnsafeRawPointer {
        let dst = buffers.scratch(e.rawSize)
        try decode(e, into: dst, buffers: buffers)
        return UnsafeRawPointer(dst)
    }

    /// Why decoded bytes are not valid for the entry: a bool other than 0 or 1
    /// (undefined behaviour once read as a Swift `Bool`), a scale that is negative
    /// or not finite.
    private func invalidData(_ e: TensorEntryInfo, _ bytes: UnsafeRawPointer) -> String? {
        if e.dtype == .bool, let bad = firstInvalidBool(bytes, count: e.rawSize) {
            return "bool element \(bad) is neither 0 nor 1"
        }
        if e.dtype == .float32, scalesNames.contains(e.name) {
            let s = bytes.assumingMemoryBound(to: Float.self)
            for i in 0..<(e.rawSize / 4) where !(s[i].isFinite && s[i] >= 0) {
                return "scale \(i) is \(s[i]); scales are finite and not negative"
            }
        }
        return nil
    }

    /// Asks the kernel to start reading the frames of `entries` into the page cache now
    /// (`POSIX_FADV_WILLNEED`, nearby frames as one range), so that frames not cached (a
    /// first load, or pages since evicted) arrive while others are decoded, not one
    /// synchronous read at a time: the decoding threads read in size order, not the
    /// file's, which defeats the kernel's own readahead. A hint: nothing fails if it is ignored.
    public func prefetch(_ entries: [TensorEntryInfo]) {
        #if os(Linux)
        // Frames closer than this are read as one range (the gap costs less than another call).
        let gap = 1 << 16
        let frames = entries.map { (start: $0.fileOffset, end: $0.fileOffset + $0.compressedSize) }.sorted { $0.start < $1.start }
        var ranges: [(start: Int, end: Int)] = []
        for r in frames {
            if let last = ranges.last, r.start <= last.end + gap {
                ranges[ranges.count - 1].end = max(last.end, r.end)
            } else {
                ranges.append(r)
            }
        }
        for r in ranges { _ = posix_fadvise(fd, off_t(r.start), off_t(r.end - r.start), Int32(POSIX_FADV_WILLNEED)) }
        #endif
    }

    // MARK: frames

    private func readFrame(_ e: TensorEntryInfo, into dst: UnsafeMutableRawPointer) throws {
        let n = try FileIO.pread(fd, dst, count: e.compressedSize, at: e.fileOffset, path: path)
        guard n == e.compressedSize else {
            // The file shrank after it was opened.
            throw FormatError.truncated(path: path, section: "tensor '\(e.name)'", offset: e.fileOffset,
                                        expected: e.compressedSize, available: n)
        }
    }

    private func verify(_ e: TensorEntryInfo, _ frame: UnsafeRawBufferPointer) throws {
        let h = XXHash64.hash(frame)
        guard h == e.checksum else {
            throw FormatError.tensorChecksumMismatch(path: path, tensor: e.name, stored: e.checksum, computed: h)
        }
    }

    /// The content size a zstd frame declares must be the entry's raw size.
    private func checkDeclaredSize(_ e: TensorEntryInfo, _ src: UnsafeRawBufferPointer) throws {
        // ZSTD_CONTENTSIZE_UNKNOWN and ZSTD_CONTENTSIZE_ERROR (macros Swift does not import).
        let unknown = UInt64.max, invalid = UInt64.max - 1
        let declared = ZSTD_getFrameContentSize(src.baseAddress, src.count)
        if declared == invalid {
            throw FormatError.decompressionFailed(path: path, tensor: e.name, reason: "not a zstd frame")
        }
        if declared != unknown, declared != UInt64(e.rawSize) {
            throw FormatError.decompressedSizeMismatch(path: path, tensor: e.name, expected: e.rawSize,
                                                       actual: Int(clamping: declared))
        }
    }

    private func decompress(_ e: TensorEntryInfo, _ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawPointer,
                            context: OpaquePointer) throws {
        let r = ZSTD_decompressDCtx(context, dst, e.rawSize, src.baseAddress, src.count)
        if ZSTD_isError(r) != 0 {
            throw FormatError.decompressionFailed(path: path, tensor: e.name, reason: String(cString: ZSTD_getErrorName(r)))
        }
        guard r == e.rawSize else {
            throw FormatError.decompressedSizeMismatch(path: path, tensor: e.name, expected: e.rawSize, actual: r)
        }
    }

}
