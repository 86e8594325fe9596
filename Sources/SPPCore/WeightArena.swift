#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Synchronization

/// Memory a load carves its weights from: one reservation, aligned to 2 MiB and,
/// on Linux, marked for transparent huge pages (`madvise` mode). Why: a fresh
/// 4 KiB page faulted in at 1.25–1.9 µs on the machine we measure on, a 2 MiB one
/// at ~0.15 µs per 4 KiB, and page faults were most of a load's CPU.
///
/// Tensors carved from it keep it mapped. When one goes, the whole pages inside it
/// go back to the system, so weights a load or a program replaces (float32 rows
/// quantized to int8, say) stay resident no longer than they would on the heap.
/// Space is never reused: the reservation is virtual, sized by the caller to what
/// the load can carve at most. Past it, tensors come from the heap as usual.
public final class WeightArena: @unchecked Sendable {
    private let base: UnsafeMutableRawPointer?
    private let capacity: Int
    private let carved = Atomic<Int>(0)

    /// Reserves `capacity` bytes of address space (pages are taken as they are written).
    /// A reservation the system refuses leaves an arena that carves nothing.
    public init(capacity: Int) {
        let size = HugePages.roundUp(capacity)
        base = size.flatMap { HugePages.map($0) }
        self.capacity = base == nil ? 0 : size!
    }

    deinit {
        if let base { HugePages.unmap(base, capacity) }
    }

    /// A new tensor in the arena (64-byte aligned, contents undefined), or on the
    /// heap when the arena is full. Safe from any thread.
    public func tensor(dtype: DType, shape: [Int]) -> Tensor {
        let byteCount = shape.reduce(1, *) * dtype.size
        let size = (max(byteCount, 1) + 63) & ~63
        let end = carved.add(size, ordering: .relaxed).newValue
        guard let base, end <= capacity else { return Tensor(dtype: dtype, shape: shape) }
        return Tensor(dtype: dtype, shape: shape, storage: TensorStorage(arena: self, bytes: base + (end - size), byteCount: byteCount))
    }

    /// Gives the whole pages of a released tensor's bytes back to the system.
    func release(_ bytes: UnsafeMutableRawPointer, byteCount: Int) {
        let page = BufferPool.pageBytes
        let start = (Int(bitPattern: bytes) + page - 1) / page * page
        let end = (Int(bitPattern: bytes) + byteCount) / page * page
        guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(p, end - start, MADV_DONTNEED)
    }
}

/// Mappings of whole transparent huge pages, for memory a load fills once: the
/// weights (`WeightArena`) and large scratch (`BufferPool(hugePages:)`, `FrameBuffers`).
public enum HugePages {
    /// A transparent huge page on x86-64 and arm64 with 4 KiB pages.
    public static let bytes = 2 << 20

    /// `byteCount` rounded up to whole huge pages (nil past what a size can hold).
    public static func roundUp(_ byteCount: Int) -> Int? {
        guard byteCount <= Int.max - 2 * bytes else { return nil }
        return (max(byteCount, 1) + bytes - 1) / bytes * bytes
    }

    /// `size` (whole huge pages) bytes of fresh address space starting on a huge page, marked
    /// for transparent huge pages (Linux); nil when the system refuses it. Freed with `unmap`.
    public static func map(_ size: Int) -> UnsafeMutableRawPointer? {
        // Over-reserve by one huge page, then unmap the ends so that the start is aligned.
        guard let raw = mmap(nil, size + bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              raw != MAP_FAILED else { return nil }
        let head = (bytes - Int(bitPattern: raw) % bytes) % bytes
        if head > 0 { munmap(raw, head) }
        munmap(raw + head + size, bytes - head)
        #if os(Linux)
        _ = madvise(raw + head, size, MADV_HUGEPAGE)
        #endif
        return raw + head
    }

    public static func unmap(_ p: UnsafeMutableRawPointer, _ size: Int) {
        munmap(p, size)
    }
}
