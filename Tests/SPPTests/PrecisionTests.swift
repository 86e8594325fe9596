import Foundation
import SPPCore
import SPPKernels
import Synchronization
import Testing

/// The storage-precision kernels against naive references: Swift's own Float16
/// conversions, a nearest-even bfloat16 rounding done in Double, plain loops.
@Suite struct PrecisionTests {
    /// bfloat16 by definition: the nearest of the two bfloat16 values around x
    /// (the float32s whose low 16 bits are zero), ties to the even one.
    static func bfloat16(_ x: Float) -> UInt16 {
        if x.isNaN { return UInt16(x.bitPattern >> 16) | 0x40 }
        if x.isInfinite { return UInt16(x.bitPattern >> 16) }
        let down = x.bitPattern & 0xffff_0000
        let up = down + 0x1_0000  // the next one away from zero; past the largest it is ±∞, which rounds as ±2¹²⁸
        let upValue = Float(bitPattern: up).isInfinite ? (x < 0 ? -1 : 1) * pow(2.0, 128) : Double(Float(bitPattern: up))
        let dDown = abs(Double(x) - Double(Float(bitPattern: down)))
        let dUp = abs(upValue - Double(x))
        if dDown < dUp || (dDown == dUp && (down >> 16) & 1 == 0) { return UInt16(down >> 16) }
        return UInt16(up >> 16)
    }

    /// The 16-bit elements of a tensor, copied while it is alive.
    static func bits(_ t: Tensor) -> [UInt16] {
        withExtendedLifetime(t) { Array(t.buffer(as: UInt16.self)) }
    }

    static func samples() -> [Float] {
        var rng = SplitMix64(seed: 11)
        var xs: [Float] = [0, -0, 1, -1, 0.1, 65504, 65519.99, 65520, -65536, 1e-8, 6e-5, 5.96e-8, 1e30, -1e-40,
                           .infinity, -.infinity, .greatestFiniteMagnitude, .leastNonzeroMagnitude,
                           Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3f81_8000), Float(bitPattern: 0x3f80_8001), Float(bitPattern: 0x7f7f_ffff)]
        for _ in 0..<5000 { xs.append(Float(rng.signedUnit()) * Float(pow(10, Double(Int(rng.next() % 12)) - 6))) }
        return xs
    }

    @Test func halfExpandsExactlyForEveryBitPattern() {
        let bits = (0...UInt16.max).map { $0 }
        var out = [Float](repeating: 0, count: bits.count)
        bits.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { Precision.expand(src.baseAddress!, .float16, count: bits.count, into: $0.baseAddress!) } }
        for (b, v) in zip(bits, out) {
            let expected = Float(Float16(bitPattern: b))
            #expect(v.bitPattern == expected.bitPattern || (v.isNaN && expected.isNaN), "half 0x\(String(b, radix: 16))")
        }
    }

    @Test func bfloat16ExpandsByShifting() {
        let bits: [UInt16] = [0, 0x8000, 0x3f80, 0xbf80, 0x7f80, 0x0001, 0x4049, 0x7fc0]
        var out = [Float](repeating: 0, count: bits.count)
        bits.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { Precision.expand(src.baseAddress!, .bfloat16, count: bits.count, into: $0.baseAddress!) } }
        #expect(out.map(\.bitPattern) == bits.map { UInt32($0) << 16 })
        #expect(out[2] == 1 && out[3] == -1 && out[4] == .infinity && out[6] == 3.140625)
    }

    @Test func narrowingRoundsToNearestEven() {
        let xs = Self.samples()
        let t = Tensor(xs, shape: [xs.count])
        let half = Self.bits(Precision.narrowed(t, to: .float16))
        let bf = Self.bits(Precision.narrowed(t, to: .bfloat16))
        for (i, x) in xs.enumerated() {
            #expect(half[i] == Float16(x).bitPattern, "float16 of \(x)")
            #expect(bf[i] == Self.bfloat16(x), "bfloat16 of \(x)")
        }
        // Hand-checked: 1 + 2⁻⁸ is a tie between 1 and 1 + 2⁻⁷ and goes to the even 1; 1 + 3·2⁻⁸ goes up.
        #expect(Self.bfloat16(Float(bitPattern: 0x3f80_8000)) == 0x3f80 && Self.bfloat16(Float(bitPattern: 0x3f81_8000)) == 0x3f82)
        let nan = Self.bits(Precision.narrowed(Tensor([Float.nan, -Float.nan], shape: [2]), to: .bfloat16))
        #expect(nan.allSatisfy { Float(bitPattern: UInt32($0) << 16).isNaN })
        #expect(!Precision.fitsHalf(Tensor([Float(1), 65520], shape: [2])) && Precision.fitsHalf(Tensor([Float(-65504), 3], shape: [2])))
        #expect(!Precision.fitsHalf(Tensor([.nan], shape: [1])))
    }

    @Test func int8DequantizesPerRowAndPerColumn() {
        var rng = SplitMix64(seed: 5)
        for (rows, cols) in [(1, 1), (3, 17), (33, 5)] {
            let values = Tensor(dtype: .int8, shape: [rows, cols])
            let q = values.pointer(as: Int8.self)
            for i in 0..<values.count { q[i] = Int8(truncatingIfNeeded: Int(rng.next() % 255) - 127) }
            let rowScales = Tensor((0..<rows).map { Float($0 + 1) * 0.25 }, shape: [rows, 1])
            let colScales = Tensor((0..<cols).map { Float($0) * 0.5 + 0.125 }, shape: [1, cols])
            // With [1, 1] scales on a one-row matrix the row reading wins; that is the same value.
            for (scales, perRow) in [(rowScales, true), (colScales, rows == 1 && cols == 1)] {
                let out = Precision.dequantized(values, scales: scales).floats
                let s = scales.buffer(as: Float.self)
                for r in 0..<rows {
                    for c in 0..<cols {
                        #expect(out[r * cols + c] == Float(q[r * cols + c]) * s[perRow ? r : c], "[\(r), \(c)] of \(rows)×\(cols)")
                    }
                }
            }
        }
    }

    @Test func gatherTransposedIsGatherThenTranspose() throws {
        var rng = SplitMix64(seed: 9)
        for (rows, cols) in [(1, 1), (17, 33), (70, 5), (64, 64), (130, 3), (40, 50)] {
            let x = Tensor((0..<rows * cols).map { _ in rng.signedUnit() }, shape: [rows, cols])
            let bytes = Tensor(dtype: .int8, shape: [rows, cols])
            for i in 0..<bytes.count { bytes.pointer(as: Int8.self)[i] = Int8(truncatingIfNeeded: rng.next()) }
            var order = (0..<rows).map(Int64.init)
            order.shuffle(using: &rng)
            let picked = Array(order.prefix(max(1, rows - 2)))
            for t in [x, bytes] {
                for o in [nil, picked] {
                    let got = try DataMovement.gatherTransposed(t, order: o)
                    let gathered = try DataMovement.gather(t, indices: Tensor(o ?? (0..<rows).map(Int64.init), shape: [o?.count ?? rows]), axis: 0)
                    let expected = try DataMovement.transpose(gathered, perm: [1, 0])
                    #expect(got.shape == expected.shape)
                    #expect(memcmp(got.rawPointer, expected.rawPointer, got.byteCount) == 0, "\(t.dtype) \(rows)×\(cols) order \(o == nil ? "none" : "picked")")
                    // Into columns [3, 3 + n) of a wider matrix: those written, the rest left as they were.
                    let n = expected.shape[1], size = t.dtype.size, ld = n + 5
                    var wide = [UInt8](repeating: 0xA5, count: cols * ld * size)
                    try wide.withUnsafeMutableBytes {
                        try DataMovement.gatherTransposed(t.rawPointer, rows: rows, columns: cols, dtype: t.dtype, order: o,
                                                          into: $0.baseAddress! + 3 * size, ld: ld)
                    }
                    let e = UnsafeRawBufferPointer(start: expected.rawPointer, count: expected.byteCount)
                    let placed = (0..<cols).allSatisfy { c in
                        (0..<ld * size).allSatisfy { b in
                            let j = b / size - 3
                            return wide[(c * ld) * size + b] == (j >= 0 && j < n ? e[(c * n + j) * size + b % size] : 0xA5)
                        }
                    }
                    #expect(placed, "\(t.dtype) \(rows)×\(cols) into rows of \(ld)")
                }
            }
        }
        #expect(throws: KernelError.self) { try DataMovement.gatherTransposed(Tensor([Float(1), 2], shape: [2, 1]), order: [2]) }
        #expect(throws: KernelError.self) { try DataMovement.gatherTransposed(Tensor([Int64(1)], shape: [1, 1]), order: nil) }
    }

    @Test func parallelItemsRunEachItemOnce() {
        for (count, threads) in [(0, 2), (1, 2), (7, 1), (1000, 2), (5, 8)] {
            var seen = [Int](repeating: 0, count: count)
            var threadOK = [Bool](repeating: true, count: count)
            seen.withUnsafeMutableBufferPointer { s in
                threadOK.withUnsafeMutableBufferPointer { ok in
                    Parallel.forEachItem(count, threads: threads) { i, thread in
                        s[i] += 1
                        ok[i] = thread >= 0 && thread < max(1, min(threads, count))
                    }
                }
            }
            #expect(seen.allSatisfy { $0 == 1 } && threadOK.allSatisfy { $0 }, "\(count) items on \(threads) threads")
        }
    }

    /// The CPUs the calling thread may run on, as the kernel lists them ("0-1").
    static func allowedCPUs() -> String {
        let status = (try? String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
            .map { $0.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces) } ?? ""
    }

    /// A spread team binds its two threads to a CPU each while the call lasts and gives the
    /// caller its CPU mask back.
    @Test(.enabled(if: allowedCPUs().contains("-") || allowedCPUs().contains(","), "needs two CPUs"))
    func spreadItemsRunOnCPUsOfTheirOwn() {
        let before = Self.allowedCPUs()
        // The masks of a team's two threads. Every item waits (up to 10 s) until both threads
        // have arrived, so each thread takes one.
        func masks(spread: Bool) -> [String] {
            let arrived = Atomic<Int>(0)
            var masks = ["", ""]
            masks.withUnsafeMutableBufferPointer { masks in
                Parallel.forEachItem(2, threads: 2, spread: spread) { _, thread in
                    masks[thread] = Self.allowedCPUs()
                    arrived.add(1, ordering: .relaxed)
                    let start = Date()
                    while arrived.load(ordering: .relaxed) < 2 && Date().timeIntervalSince(start) < 10 {}
                }
            }
            return masks
        }
        let unbound = masks(spread: false)
        let spread = masks(spread: true)
        #expect(spread.allSatisfy { Int($0) != nil } && spread[0] != spread[1], "each thread on a CPU of its own: \(spread)")
        #expect(Self.allowedCPUs() == before, "the caller's mask given back")
        #expect(masks(spread: false) == unbound, "the worker's mask given back: \(unbound)")
    }
}
