#if canImport(Glibc)
import Glibc
#endif
import Testing
import SPPCore

/// The memory a load puts its weights in (`WeightArena`) and large scratch (`HugePages`).
@Suite struct WeightArenaTests {
    static let huge = HugePages.bytes

    @Test func tensorsAreCarvedAlignedApartAndFromTheHeapPastCapacity() throws {
        let arena = WeightArena(capacity: 3 << 20)
        let a = arena.tensor(dtype: .float32, shape: [100])
        let b = arena.tensor(dtype: .int8, shape: [1000])
        let c = arena.tensor(dtype: .float32, shape: [10, 1000])
        let base = Int(bitPattern: a.rawPointer)
        #expect(base % Self.huge == 0, "the reservation starts on a huge page")
        // In order, each 64-byte aligned right after the one before: 400 → 448, 1000 → 1024.
        #expect(Int(bitPattern: b.rawPointer) - base == 448)
        #expect(Int(bitPattern: c.rawPointer) - base == 448 + 1024)
        for (i, t) in [a, c].enumerated() { for j in 0..<t.count { t.pointer(as: Float.self)[j] = Float(i * 100_000 + j) } }
        for j in 0..<b.count { b.pointer(as: Int8.self)[j] = Int8(truncatingIfNeeded: j) }
        #expect(a.floats == (0..<100).map(Float.init))
        #expect(c.floats == (0..<10_000).map { Float(100_000 + $0) })
        #expect(b.buffer(as: Int8.self).elementsEqual((0..<1000).map { Int8(truncatingIfNeeded: $0) }))
        // 3 MiB rounds up to 4: 4 MiB more does not fit and comes from the heap, outside the reservation.
        let d = arena.tensor(dtype: .float32, shape: [1 << 20])
        let offset = Int(bitPattern: d.rawPointer) - base
        #expect(offset < 0 || offset >= 4 << 20)
        d.pointer(as: Float.self)[(1 << 20) - 1] = 7
        #expect(d.pointer(as: Float.self)[(1 << 20) - 1] == 7)
    }

    #if os(Linux)
    /// Pages of `t`'s bytes (whole pages only) that are resident.
    static func residentPages(_ start: UnsafeMutableRawPointer, _ byteCount: Int) -> Int {
        let page = BufferPool.pageBytes
        var status = [UInt8](repeating: 0, count: byteCount / page)
        guard mincore(start, status.count * page, &status) == 0 else { return -1 }
        return status.filter { $0 & 1 == 1 }.count
    }

    @Test func aReleasedTensorGivesItsWholePagesBackAndLeavesItsNeighbours() throws {
        let arena = WeightArena(capacity: 8 << 20)
        let before = arena.tensor(dtype: .float32, shape: [100])
        var middle: Tensor? = arena.tensor(dtype: .float32, shape: [1 << 20])
        let after = arena.tensor(dtype: .float32, shape: [100])
        for t in [before, middle!, after] { for j in 0..<t.count { t.pointer(as: Float.self)[j] = Float(j % 1000) + 0.5 } }
        // The middle tensor's whole pages: from the first page boundary in it to the last.
        let page = BufferPool.pageBytes
        let first = (Int(bitPattern: middle!.rawPointer) + page - 1) / page * page
        let pages = (Int(bitPattern: middle!.rawPointer) + middle!.byteCount) / page - first / page
        let start = UnsafeMutableRawPointer(bitPattern: first)!
        #expect(Self.residentPages(start, pages * page) == pages)
        middle = nil
        #expect(Self.residentPages(start, pages * page) == 0)
        // Its neighbours share its first and last pages, which stay.
        #expect(before.floats == (0..<100).map { Float($0) + 0.5 })
        #expect(after.floats == (0..<100).map { Float($0) + 0.5 })
    }
    #endif

    @Test func aHugePagePoolHandsOutWholeAlignedHugePages() throws {
        let pool = BufferPool(hugePages: true)
        let (first, second) = pool.run {
            var first: UnsafeMutableRawPointer?
            do { first = TensorStorage(byteCount: 100_000).bytes }
            // Freed, then reused for a larger request that still fits.
            return (first!, TensorStorage(byteCount: 1_500_000).bytes)
        }
        #expect(Int(bitPattern: first) % Self.huge == 0)
        #expect(second == first)
        #expect(pool.heldBytes == Self.huge)
        pool.releaseFree()
        #expect(pool.heldBytes == 0)
    }
}
