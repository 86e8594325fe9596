#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Synchronization

/// Buffers for what a program makes as it runs (values and kernel scratch), kept
/// from one run to the next. Without it, a first run frees its activations to
/// the heap around objects it creates and keeps (oneDNN's kernels for each new
/// shape, lookup-table chunks); the holes stay resident and the heap never
/// shrinks. Kept here they are reused by every run instead.
///
/// A run takes buffers while it is `current` (`run(_:)`); a buffer goes back
/// when its `TensorStorage` is released, whichever thread releases it. At the
/// end of each run the pool frees the free buffers nothing took or gave back
/// since that run began, so a change of input shape does not leave the old
/// shape's buffers behind.
public final class BufferPool: Sendable {
    /// The pool that storage made on this thread takes from (none: the heap).
    @TaskLocal public static var current: BufferPool?

    /// Smaller buffers come from the heap: their holes cost little.
    public static let minimumBytes = 16 << 10

    private struct Buffer {
        let bytes: UnsafeMutableRawPointer
        let capacity: Int
        /// The run that last took it.
        var run: Int
    }

    private struct State: ~Copyable {
        /// Free buffers, smallest first.
        var free: [Buffer] = []
        var runs = 0
        /// Bytes of all buffers the pool made and has not freed (free or taken).
        var held = 0
        /// Bytes asked for of the buffers taken now, and their peak since `resetPeak`.
        var live = 0, peakLive = 0
    }

    private let state = Mutex(State())

    public init() {}

    deinit {
        state.withLock { s in for b in s.free { Self.unmap(b.bytes, b.capacity) } }
    }

    /// Bytes the pool holds: free buffers and those taken.
    public var heldBytes: Int { state.withLock { $0.held } }

    /// The most bytes taken at once (as asked for, whatever the buffers' capacity) since `resetPeak`.
    public var peakLiveBytes: Int { state.withLock { $0.peakLive } }

    /// Starts `peakLiveBytes` again from what is taken now.
    public func resetPeak() {
        state.withLock { $0.peakLive = $0.live }
    }

    /// Runs `body` with this pool current, then frees the buffers the run did not take.
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        let run = state.withLock { s in
            s.runs += 1
            return s.runs
        }
        defer { release(notTakenSince: run) }
        return try BufferPool.$current.withValue(self, operation: body)
    }

    /// A buffer of at least `byteCount` bytes (64-byte aligned): the smallest free one
    /// that is large enough (so a block's scratch can reuse another block's), else a
    /// new one. When none is large enough, the largest free one is outgrown and freed:
    /// the pool then holds about one buffer per use a run has at once, each as large as
    /// the largest thing it served (the ragged widths of a pruned model's layers share
    /// one), and after the first run of a shape nothing is allocated.
    func take(_ byteCount: Int) -> (bytes: UnsafeMutableRawPointer, capacity: Int) {
        let (reused, outgrown): (Buffer?, Buffer?) = state.withLock { s in
            s.live += byteCount
            s.peakLive = max(s.peakLive, s.live)
            guard let i = s.free.firstIndex(where: { $0.capacity >= byteCount }) else {
                let outgrown = s.free.popLast()
                s.held -= outgrown?.capacity ?? 0
                return (nil, outgrown)
            }
            var b = s.free.remove(at: i)
            b.run = s.runs
            return (b, nil)
        }
        if let outgrown { Self.unmap(outgrown.bytes, outgrown.capacity) }
        if let reused { return (reused.bytes, reused.capacity) }
        let capacity = BufferPool.capacity(for: byteCount)
        let bytes = Self.map(capacity)
        state.withLock { $0.held += capacity }
        return (bytes, capacity)
    }

    /// The system's page size: buffers are whole pages.
    public static let pageBytes = max(Int(sysconf(Int32(_SC_PAGESIZE))), 4096)

    /// Whole pages.
    static func capacity(for byteCount: Int) -> Int {
        (max(byteCount, 1) + pageBytes - 1) / pageBytes * pageBytes
    }

    /// Buffers are pages of their own, not heap blocks: one the pool frees goes back
    /// to the system at once, where a heap block would stay resident among the
    /// blocks around it, so the memory a run costs is what the pool holds.
    static func map(_ capacity: Int) -> UnsafeMutableRawPointer {
        let p = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        // As the heap's allocation does: out of memory is not an error a run can recover from.
        guard let p, p != MAP_FAILED else { fatalError("out of memory: mapping \(capacity) bytes failed (errno \(errno))") }
        return p
    }

    static func unmap(_ bytes: UnsafeMutableRawPointer, _ capacity: Int) {
        munmap(bytes, capacity)
    }

    /// Takes back a buffer from `take` (asked for `byteCount`), dated to the latest run
    /// (it may be an output the caller held past its own run).
    func give(_ bytes: UnsafeMutableRawPointer, capacity: Int, byteCount: Int) {
        state.withLock { s in
            s.live -= byteCount
            let b = Buffer(bytes: bytes, capacity: capacity, run: s.runs)
            let i = s.free.firstIndex { $0.capacity >= capacity } ?? s.free.endIndex
            s.free.insert(b, at: i)
        }
    }

    /// Frees every free buffer (the program is gone; outputs still held come back later and stay).
    public func releaseFree() {
        release(notTakenSince: .max)
    }

    private func release(notTakenSince run: Int) {
        let stale: [Buffer] = state.withLock { s in
            let stale = s.free.filter { $0.run < run }
            s.free.removeAll { $0.run < run }
            s.held -= stale.reduce(0) { $0 + $1.capacity }
            return stale
        }
        for b in stale { Self.unmap(b.bytes, b.capacity) }
    }
}
