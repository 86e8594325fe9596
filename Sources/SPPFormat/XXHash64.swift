#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// XXH64, the 64-bit xxHash, written from the public algorithm description
/// (github.com/Cyan4973/xxHash, doc/xxhash_spec.md). It checksums the `.spp`
/// header and every data frame, and fingerprints the source model.
///
/// Why this hash: it is fast (several GB/s in one thread, so checking a frame
/// costs little next to decompressing it), it has a published specification
/// and test vectors, and it is the hash zstd itself uses for frame checksums.
public struct XXHash64: Sendable {
    static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    private let seed: UInt64
    private var v1, v2, v3, v4: UInt64
    private var totalLength: UInt64 = 0
    /// Bytes not yet consumed as a whole 32-byte stripe.
    private var pending: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var pendingCount = 0

    /// A streaming hasher: `update` any number of times, then `finalize`.
    public init(seed: UInt64 = 0) {
        self.seed = seed
        v1 = seed &+ Self.p1 &+ Self.p2
        v2 = seed &+ Self.p2
        v3 = seed
        v4 = seed &- Self.p1
    }

    /// The hash of `bytes` in one call.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        guard let base = bytes.baseAddress else { return finish(seed &+ p5, tail: nil, count: 0, total: 0) }
        let n = bytes.count
        var offset = 0
        var h: UInt64
        if n >= 32 {
            var a = seed &+ p1 &+ p2, b = seed &+ p2, c = seed, d = seed &- p1
            let limit = n - 32
            while offset <= limit {
                a = round(a, base.loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian)
                b = round(b, base.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self).littleEndian)
                c = round(c, base.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self).littleEndian)
                d = round(d, base.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self).littleEndian)
                offset += 32
            }
            h = converge(a, b, c, d)
        } else {
            h = seed &+ p5
        }
        return finish(h, tail: base + offset, count: n - offset, total: UInt64(n))
    }

    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    /// Feeds more bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var p = bytes.baseAddress else { return }
        var n = bytes.count
        totalLength &+= UInt64(n)
        if pendingCount > 0 {
            let take = min(32 - pendingCount, n)
            withUnsafeMutableBytes(of: &pending) { buf in
                (buf.baseAddress! + pendingCount).copyMemory(from: p, byteCount: take)
            }
            pendingCount += take
            p += take
            n -= take
            if pendingCount < 32 { return }
            let (a, b, c, d) = pending
            v1 = Self.round(v1, a.littleEndian)
            v2 = Self.round(v2, b.littleEndian)
            v3 = Self.round(v3, c.littleEndian)
            v4 = Self.round(v4, d.littleEndian)
            pendingCount = 0
        }
        var (a, b, c, d) = (v1, v2, v3, v4)
        while n >= 32 {
            a = Self.round(a, p.loadUnaligned(as: UInt64.self).littleEndian)
            b = Self.round(b, p.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian)
            c = Self.round(c, p.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian)
            d = Self.round(d, p.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian)
            p += 32
            n -= 32
        }
        (v1, v2, v3, v4) = (a, b, c, d)
        if n > 0 {
            withUnsafeMutableBytes(of: &pending) { $0.baseAddress!.copyMemory(from: p, byteCount: n) }
            pendingCount = n
        }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Size and hash (seed 0) of a whole file, read in 4 MiB pieces; for the
    /// provenance of a converted model.
    ///
    /// - Throws: `FormatError.readFailed`.
    public static func hashFile(at path: String) throws -> (size: Int, hash: UInt64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError.readFailed(path: path, reason: FileIO.lastError) }
        defer { close(fd) }
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        var hasher = XXHash64()
        var offset = 0
        while true {
            let n = try FileIO.pread(fd, buffer, count: chunk, at: offset, path: path)
            hasher.update(UnsafeRawBufferPointer(start: buffer, count: n))
            offset += n
            if n < chunk { break }
        }
        return (offset, hasher.finalize())
    }

    /// The hash of everything fed so far (the hasher can keep being updated).
    public func finalize() -> UInt64 {
        let h = totalLength >= 32 ? Self.converge(v1, v2, v3, v4) : seed &+ Self.p5
        var tail = pending
        return withUnsafeBytes(of: &tail) { buf in
            Self.finish(h, tail: buf.baseAddress!, count: pendingCount, total: totalLength)
        }
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always)
    private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    @inline(__always)
    private static func merge(_ acc: UInt64, _ v: UInt64) -> UInt64 {
        (acc ^ round(0, v)) &* p1 &+ p4
    }

    private static func converge(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) -> UInt64 {
        var h = rotl(a, 1) &+ rotl(b, 7) &+ rotl(c, 12) &+ rotl(d, 18)
        h = merge(h, a)
        h = merge(h, b)
        h = merge(h, c)
        return merge(h, d)
    }

    /// Adds the length, consumes the last `count` (< 32) bytes, and avalanches.
    private static func finish(_ start: UInt64, tail: UnsafeRawPointer?, count: Int, total: UInt64) -> UInt64 {
        var h = start &+ total
        var i = 0
        if let p = tail {
            while i + 8 <= count {
                h ^= round(0, p.loadUnaligned(fromByteOffset: i, as: UInt64.self).littleEndian)
                h = rotl(h, 27) &* p1 &+ p4
                i += 8
            }
            if i + 4 <= count {
                h ^= UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt32.self).littleEndian) &* p1
                h = rotl(h, 23) &* p2 &+ p3
                i += 4
            }
            while i < count {
                h ^= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) &* p5
                h = rotl(h, 11) &* p1
                i += 1
            }
        }
        h ^= h >> 33
        h = h &* p2
        h ^= h >> 29
        h = h &* p3
        h ^= h >> 32
        return h
    }
}
