import CZstd
import SPPCore

/// What one thread reuses from one tensor read to the next: a zstd context and
/// buffers that grow to the largest frame and decoded tensor seen, and two for
/// the caller's own use between reads. A fresh
/// buffer per frame costs a page fault per 4 KiB touched — on a model of
/// hundreds of row chunks that was most of the load time.
///
/// Not thread-safe: one per thread.
public final class FrameBuffers {
    /// One buffer; a large one is whole huge pages (`HugePages`: they fault in ~8× faster per byte).
    private struct Buffer {
        var bytes: UnsafeMutableRawPointer?
        var capacity = 0
        var mapped = false

        static let hugeFrom = 1 << 20

        mutating func grow(to count: Int) -> UnsafeMutableRawPointer {
            if let bytes, capacity >= count { return bytes }
            free()
            if count >= Self.hugeFrom, let size = HugePages.roundUp(count), let p = HugePages.map(size) {
                (bytes, capacity, mapped) = (p, size, true)
            } else {
                (bytes, capacity, mapped) = (UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64), max(count, 1), false)
            }
            return bytes!
        }

        mutating func free() {
            guard let bytes else { return }
            if mapped { HugePages.unmap(bytes, capacity) } else { bytes.deallocate() }
            self = Buffer()
        }
    }

    private var dctx: OpaquePointer?
    private var frameBuffer = Buffer()
    private var scratchBuffer = Buffer()
    private var workspaces = [Buffer(), Buffer()]

    public init() {}

    deinit {
        if let dctx { ZSTD_freeDCtx(dctx) }
        frameBuffer.free()
        scratchBuffer.free()
        for i in workspaces.indices { workspaces[i].free() }
    }

    /// A zstd decompression context, made on first use (raw frames need none);
    /// nil when zstd cannot allocate one.
    func context() -> OpaquePointer? {
        if dctx == nil { dctx = ZSTD_createDCtx() }
        return dctx
    }

    /// Room for a stored frame of `count` bytes.
    func frame(_ count: Int) -> UnsafeMutableRawPointer {
        frameBuffer.grow(to: count)
    }

    /// Room for a decoded tensor of `count` bytes.
    func scratch(_ count: Int) -> UnsafeMutableRawPointer {
        scratchBuffer.grow(to: count)
    }

    /// Room for `count` bytes of the caller's, kept until the next call for the
    /// same `slot` (0 or 1: one can hold what is being assembled while the other
    /// takes reads); reads do not touch either.
    public func workspace(_ count: Int, slot: Int = 0) -> UnsafeMutableRawPointer {
        workspaces[slot].grow(to: count)
    }
}
