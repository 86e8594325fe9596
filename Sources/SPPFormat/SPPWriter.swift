#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CZstd
import Dispatch
import Foundation
import SPPCore
import SPPGraph

/// Writes `.spp` files (layout in SPPFormat.swift and docs/format.md).
public enum SPPWriter {
    /// Writes `model` to `path` atomically: the bytes go to a temporary file in
    /// the same directory, which is synced and then renamed over `path`. On any
    /// error the temporary file is removed, so `path` is either the complete new
    /// file or untouched.
    ///
    /// - Parameter compressionLevel: zstd level for the tensor frames (3 by
    ///   default; zstd's negative "fast" levels are allowed); frames zstd does not
    ///   shrink by 1/`minimumSaving` are stored raw. `0` stores every tensor
    ///   uncompressed (codec NONE).
    /// - Throws: `FormatError.writeFailed` naming the path and the reason.
    public static func write(_ model: SPPModel, to path: String, compressionLevel: Int = 3) throws {
        if compressionLevel != 0, compressionLevel < Int(ZSTD_minCLevel()) || compressionLevel > Int(ZSTD_maxCLevel()) {
            throw FormatError.writeFailed(path: path, reason:
                "compression level \(compressionLevel) is outside zstd's \(ZSTD_minCLevel())...\(ZSTD_maxCLevel()) (0 = uncompressed)")
        }
        try validate(model.graph, path: path)
        try validate(model.encodings, of: model.graph.initializers, path: path)

        // Tensors in name order: the file does not depend on dictionary order.
        let tensors = model.graph.initializers.sorted { $0.key < $1.key }
        let frames = try compress(tensors.map(\.value), level: compressionLevel, path: path, names: tensors.map(\.key))

        var entries: [PlannedEntry] = []
        entries.reserveCapacity(tensors.count)
        var offset = 0
        var dataSize = 0
        for (i, (name, tensor)) in tensors.enumerated() {
            let f = frames[i]
            entries.append(PlannedEntry(name: name, dtype: tensor.dtype, shape: tensor.shape, codec: f.codec, offset: offset,
                                        compressedSize: f.count, rawSize: tensor.byteCount, checksum: f.checksum,
                                        encoding: model.encodings[name]))
            dataSize = offset + f.count
            offset = SPPFormat.aligned(dataSize)!
        }

        let header = HeaderEncoder.encode(graph: model.graph, provenance: model.provenance, path: model.pruningPath,
                                          costTable: model.costTable, lookupTables: model.lookupTables,
                                          entries: entries, dataSize: dataSize)
        var head: [UInt8] = SPPFormat.magic
        appendLE(&head, SPPFormat.currentVersion)
        appendLE(&head, model.encodings.isEmpty ? 0 : SPPFormat.encodedTensorsFlag)
        appendLE(&head, UInt64(header.count))
        head += header
        appendLE(&head, XXHash64.hash(head))
        head += [UInt8](repeating: 0, count: SPPFormat.aligned(head.count)! - head.count)

        try writeAtomically(path: path) { fd in
            try FileIO.write(fd, head, count: head.count, path: path)
            let zeros = [UInt8](repeating: 0, count: SPPFormat.alignment)
            var position = 0
            for (i, e) in entries.enumerated() {
                try FileIO.write(fd, zeros, count: e.offset - position, path: path)
                try frames[i].withBytes { try FileIO.write(fd, $0.baseAddress!, count: $0.count, path: path) }
                position = e.offset + e.compressedSize
            }
        }
    }

    // MARK: validation

    /// Refuses what a reader would reject, so that a bad graph fails at write
    /// time with a clear message rather than producing an unreadable file.
    private static func validate(_ g: Graph, path: String) throws {
        for (role, values) in [("graph input", g.inputs), ("graph output", g.outputs)] {
            for v in values {
                for d in v.shape ?? [] {
                    if case let .fixed(n) = d, n < 0 {
                        throw FormatError.writeFailed(path: path, reason: "\(role) '\(v.name)' has negative dimension \(n)")
                    }
                }
            }
        }
        for n in g.nodes {
            for (key, a) in n.attributes {
                if case let .tensor(t) = a, t.tensor.dtype == .bool, firstInvalidBool(t.tensor.rawPointer, count: t.tensor.byteCount) != nil {
                    throw FormatError.writeFailed(path: path, reason: "attribute '\(key)' of node '\(n.name)' holds a bool that is neither 0 nor 1")
                }
            }
        }
    }

    /// Every encoding names an initializer and follows `ValueEncoding`'s rules,
    /// and every scale is finite and not negative — what the reader checks.
    private static func validate(_ encodings: [String: ValueEncoding], of tensors: [String: Tensor], path: String) throws {
        for (name, encoding) in encodings.sorted(by: { $0.key < $1.key }) {
            guard let t = tensors[name] else {
                throw FormatError.writeFailed(path: path, reason: "tensor '\(name)' has a storage precision but is not in the model")
            }
            let problem = ValueEncoding.problem(encoding, dtype: t.dtype, shape: t.shape) { other in
                tensors[other].map { ($0.dtype, $0.shape, encodings[other] != nil) }
            }
            if let problem { throw FormatError.writeFailed(path: path, reason: "tensor '\(name)': \(problem)") }
            if let scales = encoding.scales.flatMap({ tensors[$0] }), let bad = scales.buffer(as: Float.self).first(where: { !($0.isFinite && $0 >= 0) }) {
                throw FormatError.writeFailed(path: path, reason: "tensor '\(name)' has scale \(bad); scales are finite and not negative")
            }
        }
    }

    // MARK: compression

    /// A stored frame: either zstd output or the tensor's own bytes (codec NONE).
    private struct Frame {
        var codec: TensorEntryInfo.Codec
        var compressed: [UInt8]
        var tensor: Tensor?
        var checksum: UInt64

        var count: Int { tensor?.byteCount ?? compressed.count }

        func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
            if let tensor {
                // A valid pointer even for an empty tensor: storage is never zero-sized.
                return try body(UnsafeRawBufferPointer(start: tensor.rawPointer, count: tensor.byteCount))
            }
            return try compressed.withUnsafeBytes(body)
        }
    }

    /// A frame is stored compressed only if zstd saves at least 1/`minimumSaving`
    /// of its bytes. Weights barely compress (float32, float16 and int8 by 8–11%;
    /// int8 W2 and Wo rows, whose weak units hold small values, by 15–17%) and
    /// zstd decodes them at 1–1.6 GB/s per core, where a raw frame is read and
    /// checked at memory speed: raw loads several times faster for a file a few
    /// percent larger (an int8 all-MiniLM-L6 file: 3.6% more bytes, its keep-1
    /// load ~3 ms shorter).
    public static let minimumSaving = 4

    /// Compresses every tensor, on two threads: zstd level 3 runs at a few
    /// hundred MB/s per core, so this is the slow part of writing.
    private static func compress(_ tensors: [Tensor], level: Int, path: String, names: [String]) throws -> [Frame] {
        var frames = [Frame?](repeating: nil, count: tensors.count)
        var failure: FormatError?
        let lock = NSLock()
        var next = 0
        let workers = min(2, tensors.count)
        frames.withUnsafeMutableBufferPointer { out in
            DispatchQueue.concurrentPerform(iterations: workers) { _ in
                let cctx = level == 0 ? nil : ZSTD_createCCtx()
                defer { if let cctx { ZSTD_freeCCtx(cctx) } }
                if let cctx {
                    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(level))
                    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
                    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)
                }
                while true {
                    lock.lock()
                    let i = next
                    next += 1
                    let stop = failure != nil
                    lock.unlock()
                    if stop || i >= tensors.count { return }
                    let t = tensors[i]
                    let src = UnsafeRawBufferPointer(start: t.rawPointer, count: t.byteCount)
                    guard let cctx else {
                        out[i] = Frame(codec: .none, compressed: [], tensor: t, checksum: XXHash64.hash(src))
                        continue
                    }
                    var errorName: String?
                    let bytes = [UInt8](unsafeUninitializedCapacity: ZSTD_compressBound(t.byteCount)) { buf, count in
                        let r = ZSTD_compress2(cctx, buf.baseAddress, buf.count, src.baseAddress, src.count)
                        if ZSTD_isError(r) != 0 {
                            errorName = String(cString: ZSTD_getErrorName(r))
                            count = 0
                        } else {
                            count = r
                        }
                    }
                    if let errorName {
                        lock.lock()
                        failure = failure ?? .writeFailed(path: path, reason: "zstd failed on tensor '\(names[i])': \(errorName)")
                        lock.unlock()
                        return
                    }
                    if bytes.count > t.byteCount - t.byteCount / minimumSaving {
                        out[i] = Frame(codec: .none, compressed: [], tensor: t, checksum: XXHash64.hash(src))
                    } else {
                        out[i] = Frame(codec: .zstd, compressed: bytes, tensor: nil,
                                       checksum: bytes.withUnsafeBytes { XXHash64.hash($0) })
                    }
                }
            }
        }
        if let failure { throw failure }
        return frames.map { $0! }
    }

    // MARK: atomic file

    /// Runs `body` on a fresh temporary file beside `path`, then syncs and
    /// renames it to `path`; on any failure removes the temporary file.
    private static func writeAtomically(path: String, _ body: (Int32) throws -> Void) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        var template = Array("\(dir)/.\(url.lastPathComponent).tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw FormatError.writeFailed(path: path, reason: "cannot create a temporary file in \(dir): \(FileIO.lastError)")
        }
        let tempPath = String(cString: template)
        var open = true
        do {
            // mkstemp creates the file private to its owner; a model is an ordinary file.
            fchmod(fd, 0o644)
            try body(fd)
            guard fsync(fd) == 0 else { throw FormatError.writeFailed(path: path, reason: "fsync: \(FileIO.lastError)") }
            open = false
            guard close(fd) == 0 else { throw FormatError.writeFailed(path: path, reason: "close: \(FileIO.lastError)") }
            guard rename(tempPath, path) == 0 else {
                throw FormatError.writeFailed(path: path, reason: "cannot rename the temporary file into place: \(FileIO.lastError)")
            }
        } catch {
            if open { close(fd) }
            unlink(tempPath)
            throw error
        }
    }

    private static func appendLE<T: FixedWidthInteger>(_ bytes: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}
