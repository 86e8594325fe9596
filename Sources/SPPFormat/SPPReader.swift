#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CProtobuf
import SPPProtobuf
import CZstd
import Foundation
import SPPCore
import SPPGraph

/// Reads `.spp` files. Opening reads and checks only the preamble and header;
/// each tensor is then fetched on demand with one positioned read of its frame,
/// so a loader that needs some tensors (a pruned model) reads only those.
///
/// The file is treated as untrusted: every count, offset, length, dtype and
/// shape is checked against the file size and `FormatLimits` before use, and
/// every problem is a `FormatError`. A reader is immutable once open and its
/// methods may be called from several threads at once.
public final class SPPReader: Sendable {
    /// The file this reader reads.
    public let path: String
    /// The format version in the file (one of `SPPFormat.readableVersions`).
    public let formatVersion: UInt32
    /// Bytes in the file when it was opened.
    public let fileSize: Int
    /// The bounds this reader checked the file against.
    public let limits: FormatLimits
    /// The graph's nodes, inputs and outputs; `initializers` is empty (see
    /// `tensorEntries`, `tensor(named:)` and `loadModel()`).
    public let graphStructure: Graph
    public let provenance: Provenance
    /// The pruning path of a pruned model; nil for a dense one.
    public let pruningPath: PruningPath?
    /// Cost per keep level (with a path).
    public let costTable: [CostLevel]
    /// Constants stored in row chunks.
    public let lookupTables: [LookupTable]
    /// The tensor table in file order.
    public let tensorEntries: [TensorEntryInfo]
    /// Absolute offset of the data section.
    public let dataOffset: Int
    /// Entries some encoded entry names as its scales.
    public let scalesNames: Set<String>

    /// Reads the tensors' frames: what a loaded model keeps to read more later
    /// (lookup-table rows) without the header's tables.
    public let frames: FrameReader
    private let index: [String: Int]

    /// Opens `path` and reads its header.
    ///
    /// - Throws: `FormatError` (not an spp file, unsupported version,
    ///   truncated, checksum mismatch, limits exceeded, unknown op or dtype...).
    public init(path: String, limits: FormatLimits = .init()) throws {
        self.path = path
        self.limits = limits
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError.readFailed(path: path, reason: FileIO.lastError) }
        let fileSize: Int, version: UInt32, header: DecodedHeader
        do {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw FormatError.readFailed(path: path, reason: FileIO.lastError) }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw FormatError.readFailed(path: path, reason: "not a regular file") }
            fileSize = Int(st.st_size)
            (version, header) = try Self.readHeader(fd: fd, path: path, fileSize: fileSize, limits: limits)
        } catch {
            close(fd)
            throw error
        }
        // From here the frame reader owns the descriptor (closed with it).
        scalesNames = Set(header.entries.compactMap { $0.encoding?.scales })
        frames = FrameReader(path: path, fd: fd, scalesNames: scalesNames)
        self.fileSize = fileSize
        formatVersion = version
        graphStructure = header.graph
        provenance = header.provenance
        pruningPath = header.pruningPath
        costTable = header.costTable
        lookupTables = header.lookupTables
        dataOffset = header.dataOffset
        tensorEntries = header.entries
        index = header.index
    }

    /// The table row of tensor `name`, if the file has it.
    public func entry(named name: String) -> TensorEntryInfo? {
        index[name].map { tensorEntries[$0] }
    }

    /// The table row of tensor `name`; `FormatError.noSuchTensor` if the file lacks it.
    public func requiredEntry(named name: String) throws -> TensorEntryInfo {
        guard let e = entry(named: name) else { throw FormatError.noSuchTensor(path: path, name: name) }
        return e
    }

    /// Reads, checks and decodes one tensor.
    ///
    /// - Throws: `FormatError.noSuchTensor`, or the frame's problem
    ///   (truncated, checksum mismatch, decompression failed, size mismatch).
    public func tensor(named name: String) throws -> Tensor {
        try tensor(requiredEntry(named: name))
    }

    /// Reads, checks and decodes the tensor of a table row from this reader, as
    /// stored (an encoded entry gives its stored elements: see `ValueEncoding`).
    public func tensor(_ e: TensorEntryInfo) throws -> Tensor {
        try frames.tensor(e)
    }

    /// Reads, checks and decodes several tensors as stored, in `entries` order;
    /// throws the first failing entry's error.
    public func tensors(_ entries: [TensorEntryInfo]) throws -> [Tensor] {
        let buffers = FrameBuffers()
        return try entries.map { e in
            let tensor = Tensor(dtype: e.dtype, shape: e.shape)
            try frames.decode(e, into: tensor.rawPointer, buffers: buffers)
            return tensor
        }
    }

    /// Reads everything as stored: the graph with all its initializers (encoded
    /// ones as their stored elements, with `encodings`), and the provenance.
    public func loadModel() throws -> SPPModel {
        var graph = graphStructure
        for (e, t) in zip(tensorEntries, try tensors(tensorEntries)) { graph.initializers[e.name] = t }
        var encodings: [String: ValueEncoding] = [:]
        for e in tensorEntries { if let encoding = e.encoding { encodings[e.name] = encoding } }
        return SPPModel(graph: graph, provenance: provenance, pruningPath: pruningPath, costTable: costTable,
                        lookupTables: lookupTables, encodings: encodings)
    }

    /// See `FrameReader.prefetch`.
    public func prefetch(_ entries: [TensorEntryInfo]) { frames.prefetch(entries) }

    /// Reads, checks and decodes the stored bytes of `e` into `dst` (`FrameReader.decode`).
    public func decode(_ e: TensorEntryInfo, into dst: UnsafeMutableRawPointer, buffers: FrameBuffers) throws {
        try frames.decode(e, into: dst, buffers: buffers)
    }

    /// `decode` into the buffers' scratch space (`FrameReader.decode`).
    public func decode(_ e: TensorEntryInfo, buffers: FrameBuffers) throws -> UnsafeRawPointer {
        try frames.decode(e, buffers: buffers)
    }

    // MARK: header

    /// Reads and checks the preamble and the header, then checks that the data
    /// section the header describes is all there.
    private static func readHeader(fd: Int32, path: String, fileSize: Int, limits: FormatLimits) throws -> (UInt32, DecodedHeader) {
        let pre = SPPFormat.preambleSize
        var preamble = [UInt8](repeating: 0, count: pre)
        let got = try preamble.withUnsafeMutableBytes { try FileIO.pread(fd, $0.baseAddress!, count: pre, at: 0, path: path) }
        let magic = SPPFormat.magic
        guard got >= magic.count else {
            // A file shorter than the magic that starts like it was cut short; anything else is not ours.
            if Array(preamble[0..<got]) == Array(magic[0..<got]) {
                throw FormatError.truncated(path: path, section: "magic", offset: 0, expected: magic.count, available: got)
            }
            throw FormatError.notSPPFile(path: path)
        }
        guard Array(preamble[0..<magic.count]) == magic else { throw FormatError.notSPPFile(path: path) }
        guard got == pre else {
            throw FormatError.truncated(path: path, section: "preamble", offset: 0, expected: pre, available: got)
        }
        let version = UInt32(preamble, at: 8)
        guard SPPFormat.readableVersions.contains(version) else {
            throw FormatError.unsupportedVersion(path: path, found: version, readable: SPPFormat.readableVersions)
        }
        let flags = UInt32(preamble, at: 12)
        guard flags & ~SPPFormat.knownFlags == 0 else { throw FormatError.unsupportedFlags(path: path, flags: flags) }
        let headerLength64 = UInt64(preamble, at: 16)
        guard headerLength64 <= UInt64(clamping: limits.maxHeaderBytes) else {
            throw FormatError.limitExceeded(path: path, limit: "maxHeaderBytes", value: headerLength64, maximum: limits.maxHeaderBytes)
        }
        let headerLength = Int(headerLength64)
        let available = fileSize - pre
        guard available >= SPPFormat.checksumSize, headerLength <= available - SPPFormat.checksumSize else {
            throw FormatError.truncated(path: path, section: "header", offset: pre,
                                        expected: headerLength + SPPFormat.checksumSize, available: max(0, available))
        }

        // Header and its checksum in one read; checksum over preamble + header.
        var n = 0
        let bytes = try [UInt8](unsafeUninitializedCapacity: headerLength + SPPFormat.checksumSize) { buffer, initialized in
            n = try FileIO.pread(fd, buffer.baseAddress!, count: buffer.count, at: pre, path: path)
            initialized = n
        }
        guard n == headerLength + SPPFormat.checksumSize else {
            throw FormatError.truncated(path: path, section: "header", offset: pre, expected: bytes.count, available: n)
        }
        let stored = UInt64(bytes, at: headerLength)
        var hasher = XXHash64()
        hasher.update(preamble)
        bytes.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<headerLength])) }
        let computed = hasher.finalize()
        guard stored == computed else {
            throw FormatError.headerChecksumMismatch(path: path, stored: stored, computed: computed)
        }

        // Unpacked into an arena, freed with it.
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        var allocator = arena.protobufAllocator
        guard let model = bytes.withUnsafeBytes({ buf in
            spp__model__unpack(&allocator, headerLength, buf.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }) else {
            throw FormatError.headerUndecodable(path: path, length: headerLength)
        }
        let dataOffset = SPPFormat.aligned(pre + headerLength + SPPFormat.checksumSize)!
        let decoded = try HeaderDecoder(path: path, limits: limits, formatVersion: version, flags: flags, dataOffset: dataOffset).decode(model)

        // The data section must be all there; name the first frame that is cut.
        let (end, overflow) = dataOffset.addingReportingOverflow(decoded.dataSize)
        if overflow || end > fileSize {
            let cut = decoded.entries
                .sorted { $0.fileOffset < $1.fileOffset }
                .first { $0.fileOffset + $0.compressedSize > fileSize }
            if let e = cut {
                let at = e.fileOffset
                throw FormatError.truncated(path: path, section: "tensor '\(e.name)'", offset: at,
                                            expected: e.compressedSize, available: max(0, fileSize - at))
            }
            throw FormatError.truncated(path: path, section: "data section", offset: min(dataOffset, fileSize),
                                        expected: overflow ? Int.max : end - min(dataOffset, fileSize),
                                        available: max(0, fileSize - dataOffset))
        }
        return (version, decoded)
    }
}

extension FixedWidthInteger {
    /// A little-endian integer from `bytes` at `offset` (which the caller has bounds-checked).
    init(_ bytes: [UInt8], at offset: Int) {
        self = bytes.withUnsafeBytes { Self(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: Self.self)) }
    }
}
