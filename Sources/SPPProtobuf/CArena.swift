#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CProtobuf

/// Owns the C memory behind a protobuf-c message tree while it is being built
/// and packed, or after it was unpacked; everything is freed together when the
/// arena goes away. Why:
/// protobuf-c messages are plain C structs of pointers, and tracking each
/// allocation separately in Swift would be error-prone.
public final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []
    /// Free space at the end of the newest block.
    private var next: UnsafeMutableRawPointer?
    private var remaining = 0
    /// Small allocations are carved out of blocks this large (a header unpacks
    /// into tens of thousands of them: one malloc each was most of its time).
    static let blockSize = 64 << 10

    public init() {}

    deinit { for b in blocks { free(b) } }

    /// `byteCount` zeroed bytes, 16-byte aligned; nil when memory runs out.
    private func carve(_ byteCount: Int) -> UnsafeMutableRawPointer? {
        let size = (max(byteCount, 1) + 15) & ~15
        if size > remaining {
            let large = size > Self.blockSize / 4
            guard let block = calloc(1, large ? size : Self.blockSize) else { return nil }
            blocks.append(block)
            // A large one gets a block of its own; the current block keeps its space.
            if large { return block }
            (next, remaining) = (block, Self.blockSize)
        }
        let p = next!
        (next, remaining) = (p + size, remaining - size)
        return p
    }

    /// `count` zeroed values of `T`.
    public func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let bytes = max(1, count) * MemoryLayout<T>.stride
        guard let p = carve(bytes) else { fatalError("out of memory allocating \(bytes) bytes") }
        return p.bindMemory(to: T.self, capacity: max(1, count))
    }

    /// A protobuf-c allocator that draws from the arena and never frees: what an
    /// `unpack` through it makes is freed with the arena (not `free_unpacked`); out
    /// of memory, the unpack fails. Valid while the arena is.
    public var protobufAllocator: ProtobufCAllocator {
        ProtobufCAllocator(alloc: { data, size in Unmanaged<CArena>.fromOpaque(data!)._withUnsafeGuaranteedRef { $0.carve(size) } },
                           free: { _, _ in }, allocator_data: Unmanaged.passUnretained(self).toOpaque())
    }

    /// A message of type `T`, initialised by protobuf-c's `init` function.
    public func message<T>(_ initialize: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T> {
        let p = allocate(T.self, count: 1)
        initialize(p)
        return p
    }

    /// An array of message pointers, one per element of `items`.
    public func messages<S: Collection, T>(_ items: S, _ make: (S.Element) -> UnsafeMutablePointer<T>)
        -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<T>?>?) {
        guard !items.isEmpty else { return (0, nil) }
        let array = allocate(UnsafeMutablePointer<T>?.self, count: items.count)
        for (i, item) in items.enumerated() { array[i] = make(item) }
        return (items.count, array)
    }

    /// A NUL-terminated copy of `s`.
    public func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let utf8 = Array(s.utf8)
        let p = allocate(CChar.self, count: utf8.count + 1)
        utf8.withUnsafeBytes { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress!, byteCount: utf8.count) }
        return p
    }

    public func strings(_ items: [String]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
        guard !items.isEmpty else { return (0, nil) }
        let array = allocate(UnsafeMutablePointer<CChar>?.self, count: items.count)
        for (i, s) in items.enumerated() { array[i] = string(s) }
        return (items.count, array)
    }

    public func bytes(_ s: String) -> ProtobufCBinaryData {
        let utf8 = Array(s.utf8)
        return utf8.withUnsafeBytes { bytes($0) }
    }

    public func bytes(_ src: UnsafeRawBufferPointer) -> ProtobufCBinaryData {
        guard src.count > 0 else { return ProtobufCBinaryData(len: 0, data: nil) }
        let p = allocate(UInt8.self, count: src.count)
        UnsafeMutableRawPointer(p).copyMemory(from: src.baseAddress!, byteCount: src.count)
        return ProtobufCBinaryData(len: src.count, data: p)
    }

    public func array<T>(_ items: [T]) -> (Int, UnsafeMutablePointer<T>?) {
        guard !items.isEmpty else { return (0, nil) }
        let p = allocate(T.self, count: items.count)
        for (i, v) in items.enumerated() { p[i] = v }
        return (items.count, p)
    }
}
