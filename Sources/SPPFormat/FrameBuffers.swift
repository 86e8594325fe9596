import CZstd

/// What one thread reuses from one tensor read to the next: a zstd context and
/// buffers that grow to the largest frame and decoded tensor seen, and two for
/// the caller's own use between reads. A fresh
/// buffer per frame costs a page fault per 4 KiB touched — on a model of
/// hundreds of row chunks that was most of the load time.
///
/// Not thread-safe: one per thread.
public final class FrameBuffers {
    private var dctx: OpaquePointer?
    private var frameBytes: UnsafeMutableRawPointer?
    private var frameCapacity = 0
    private var scratchBytes: UnsafeMutableRawPointer?
    private var scratchCapacity = 0
    private var workspaceBytes: [UnsafeMutableRawPointer?] = [nil, nil]
    private var workspaceCapacity = [0, 0]

    public init() {}

    deinit {
        if let dctx { ZSTD_freeDCtx(dctx) }
        frameBytes?.deallocate()
        scratchBytes?.deallocate()
        for p in workspaceBytes { p?.deallocate() }
    }

    /// A zstd decompression context, made on first use (raw frames need none);
    /// nil when zstd cannot allocate one.
    func context() -> OpaquePointer? {
        if dctx == nil { dctx = ZSTD_createDCtx() }
        return dctx
    }

    /// Room for a stored frame of `count` bytes.
    func frame(_ count: Int) -> UnsafeMutableRawPointer {
        Self.grow(&frameBytes, &frameCapacity, to: count)
    }

    /// Room for a decoded tensor of `count` bytes.
    func scratch(_ count: Int) -> UnsafeMutableRawPointer {
        Self.grow(&scratchBytes, &scratchCapacity, to: count)
    }

    /// Room for `count` bytes of the caller's, kept until the next call for the
    /// same `slot` (0 or 1: one can hold what is being assembled while the other
    /// takes reads); reads do not touch either.
    public func workspace(_ count: Int, slot: Int = 0) -> UnsafeMutableRawPointer {
        Self.grow(&workspaceBytes[slot], &workspaceCapacity[slot], to: count)
    }

    private static func grow(_ p: inout UnsafeMutableRawPointer?, _ capacity: inout Int, to count: Int) -> UnsafeMutableRawPointer {
        if let p, capacity >= count { return p }
        p?.deallocate()
        capacity = max(count, 1)
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        p = fresh
        return fresh
    }
}
