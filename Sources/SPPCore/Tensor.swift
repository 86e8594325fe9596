/// Owned, 64-byte aligned bytes behind a tensor. A class so that reshapes can
/// share it. Made while a `BufferPool` is current, a large one comes from that
/// pool and goes back to it when released.
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawPointer
    public let byteCount: Int
    private let pool: BufferPool?
    private let capacity: Int

    public init(byteCount: Int) {
        self.byteCount = byteCount
        if byteCount >= BufferPool.minimumBytes, let pool = BufferPool.current {
            (bytes, capacity) = pool.take(byteCount)
            self.pool = pool
        } else {
            // Never allocate zero bytes: a valid pointer keeps empty tensors simple.
            bytes = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
            (pool, capacity) = (nil, byteCount)
        }
    }

    deinit {
        if let pool { pool.give(bytes, capacity: capacity, byteCount: byteCount) } else { bytes.deallocate() }
    }
}

/// Scratch memory for `count` elements of `T` while `body` runs: from the current
/// `BufferPool` when there is one and it is large, else from the heap.
public func withScratch<T, R>(_ type: T.Type, count: Int, _ body: (UnsafeMutablePointer<T>) throws -> R) rethrows -> R {
    let storage = TensorStorage(byteCount: max(count, 1) * MemoryLayout<T>.stride)
    return try withExtendedLifetime(storage) { try body(storage.bytes.bindMemory(to: T.self, capacity: max(count, 1))) }
}

/// A dense, contiguous, row-major tensor.
public struct Tensor: @unchecked Sendable {
    public let dtype: DType
    public let shape: [Int]
    public let storage: TensorStorage

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var byteCount: Int { count * dtype.size }

    /// A new tensor; its contents are uninitialised unless `zeroed`.
    public init(dtype: DType, shape: [Int], zeroed: Bool = false) {
        self.dtype = dtype
        self.shape = shape
        let bytes = shape.reduce(1, *) * dtype.size
        storage = TensorStorage(byteCount: bytes)
        if zeroed { storage.bytes.initializeMemory(as: UInt8.self, repeating: 0, count: bytes) }
    }

    /// A tensor over existing storage (which must hold at least the shape's bytes).
    public init(dtype: DType, shape: [Int], storage: TensorStorage) {
        precondition(shape.reduce(1, *) * dtype.size <= storage.byteCount, "storage smaller than shape")
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    /// Same bytes seen with another shape of the same element count (no copy).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "reshape changes element count")
        return Tensor(dtype: dtype, shape: newShape, storage: storage)
    }

    public var rawPointer: UnsafeMutableRawPointer { storage.bytes }

    /// Typed pointer to the elements. `T` must match `dtype` in size.
    public func pointer<T>(as: T.Type) -> UnsafeMutablePointer<T> {
        precondition(MemoryLayout<T>.stride == dtype.size, "element type does not match \(dtype)")
        return storage.bytes.assumingMemoryBound(to: T.self)
    }

    public func buffer<T>(as type: T.Type) -> UnsafeMutableBufferPointer<T> {
        UnsafeMutableBufferPointer(start: pointer(as: type), count: count)
    }

    /// A deep copy.
    public func copy() -> Tensor {
        let t = Tensor(dtype: dtype, shape: shape)
        t.storage.bytes.copyMemory(from: storage.bytes, byteCount: byteCount)
        return t
    }
}

extension Tensor {
    public init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *))
        self.init(dtype: .float32, shape: shape)
        values.withUnsafeBufferPointer { pointer(as: Float.self).update(from: $0.baseAddress!, count: values.count) }
    }

    public init(_ values: [Int64], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *))
        self.init(dtype: .int64, shape: shape)
        values.withUnsafeBufferPointer { pointer(as: Int64.self).update(from: $0.baseAddress!, count: values.count) }
    }

    public init(_ values: [Int32], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *))
        self.init(dtype: .int32, shape: shape)
        values.withUnsafeBufferPointer { pointer(as: Int32.self).update(from: $0.baseAddress!, count: values.count) }
    }

    public init(_ values: [Bool], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *))
        self.init(dtype: .bool, shape: shape)
        let p = pointer(as: Bool.self)
        for (i, v) in values.enumerated() { p[i] = v }
    }

    public var floats: [Float] { Array(buffer(as: Float.self)) }
    public var int64s: [Int64] { Array(buffer(as: Int64.self)) }

    /// The elements of an integer tensor as `Int`, whatever its integer dtype
    /// (shape-like inputs: Reshape shapes, Slice starts, axes). Nil for other dtypes.
    public var integers: [Int]? {
        switch dtype {
        case .int64: return buffer(as: Int64.self).map { Int($0) }
        case .int32: return buffer(as: Int32.self).map { Int($0) }
        case .int16: return buffer(as: Int16.self).map { Int($0) }
        case .int8: return buffer(as: Int8.self).map { Int($0) }
        case .uint8: return buffer(as: UInt8.self).map { Int($0) }
        case .uint16: return buffer(as: UInt16.self).map { Int($0) }
        case .uint32: return buffer(as: UInt32.self).map { Int($0) }
        case .uint64: return buffer(as: UInt64.self).map { Int(truncatingIfNeeded: $0) }
        case .bool, .float32, .float64, .float16, .bfloat16: return nil
        }
    }

    /// Shape written like `[2, 7, 384]`.
    public static func describe(_ shape: [Int]) -> String {
        "[" + shape.map(String.init).joined(separator: ", ") + "]"
    }
}

extension Tensor {
    /// A copy of rows `range` (along the first dimension).
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0], "row range out of bounds")
        let rowBytes = shape.dropFirst().reduce(1, *) * dtype.size
        let out = Tensor(dtype: dtype, shape: [range.count] + shape.dropFirst())
        out.rawPointer.copyMemory(from: rawPointer + range.lowerBound * rowBytes, byteCount: range.count * rowBytes)
        return out
    }
}
