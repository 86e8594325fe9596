import CDNNL
import SPPCore
import Synchronization

/// A constant int8 weight matrix `W [K, N]` reordered once into the blocked
/// layout of oneDNN's matmul primitive, which multiplies u8 activations by it
/// into int32.
///
/// `dnnl_gemm_u8s8s32` repacks W on every call and cannot use oneDNN's brgemm
/// kernels; the matmul primitive with weights in its own layout can. Measured
/// here (one thread, AVX-512 VNNI): 935 vs 685 GOP/s at 32×384×384, 970 vs 865 at
/// 128×384×384. A primitive is fixed to its shape, row count M included (with a
/// run-time M oneDNN falls back to the repacking GEMM), so one is made per shape
/// on first use and kept for every matrix of that shape; the weight layout does
/// not depend on M. (Float32 weights are not packed:
/// see `Projection`.)
///
/// `init` returns nil where packing gains nothing: when oneDNN would use plain
/// row-major weights on this CPU (no brgemm int8 kernels, e.g. AVX2), and the
/// caller keeps its GEMM path.
final class PackedMatrix: @unchecked Sendable {
    let rows: Int, columns: Int
    private let weights: dnnl_memory_t
    private let weightsDescriptor: dnnl_memory_desc_t
    /// Primitives by shape, shared by every matrix of that size: a primitive depends
    /// only on the shape, and each holds its JIT-compiled kernels (all-MiniLM's 24
    /// products have 4 shapes at keep 1: 3.3 MB of kernel code made 6 times over).
    private static let primitives = Mutex<[Shape: Primitive]>([:])

    struct Shape: Hashable { let m: Int, k: Int, n: Int }

    /// Primitives kept at once; past it the least recently made is dropped.
    static let cachedPrimitives = 64

    /// One CPU engine for the process.
    nonisolated(unsafe) static let engine: dnnl_engine_t? = {
        var e: dnnl_engine_t?
        return dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success ? e : nil
    }()

    /// A matmul primitive for one shape, and the scratch memory each run of it needs.
    final class Primitive: @unchecked Sendable {
        let handle: dnnl_primitive_t
        let scratchpad: dnnl_memory_desc_t
        let serial: Int
        init(_ handle: dnnl_primitive_t, scratchpad: dnnl_memory_desc_t, serial: Int) {
            (self.handle, self.scratchpad, self.serial) = (handle, scratchpad, serial)
        }
        deinit { dnnl_primitive_destroy(handle) }
    }

    /// Reorders int8 `W [K, N]` at `values` into the primitive's layout: row-major,
    /// or `unitMajor` (stored as its transpose `[N, K]`, a row per output, as a file keeps
    /// units) — the reorder reads either, so a transposed copy is never made.
    init?(_ values: UnsafeRawPointer, rows: Int, columns: Int, unitMajor: Bool = false) {
        guard rows > 0, columns > 0, let engine = Self.engine else { return nil }
        (self.rows, self.columns) = (rows, columns)
        // The layout the primitive wants, asked of one made for 128 rows.
        guard let pd = Self.descriptor(m: 128, k: rows, n: columns, weights: nil) else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        guard let wanted = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) else { return nil }
        var plain = Self.matrix(rows, columns, dnnl_s8, dnnl_ab)
        guard dnnl_memory_desc_equal(wanted, &plain) == 0 else { return nil }
        var source = unitMajor ? Self.matrix(rows, columns, dnnl_s8, dnnl_ba) : plain
        var layout = wanted.pointee
        guard let packed = Self.reordered(values, from: &source, to: &layout, engine) else { return nil }
        (weights, weightsDescriptor) = (packed, layout)
    }

    /// Bytes of the reordered weights.
    var byteCount: Int {
        var descriptor = weightsDescriptor
        return dnnl_memory_desc_get_size(&descriptor)
    }

    deinit { dnnl_memory_destroy(weights) }

    /// `acc[m×N] = a[m×K] · W` in int32 (a: u8), row-major with leading dimensions
    /// K and N, on `threads` threads. False if oneDNN failed (the caller throws: the values are held only here).
    func multiply(_ a: UnsafeRawPointer, m: Int, _ acc: UnsafeMutableRawPointer, threads: Int) -> Bool {
        guard let primitive = primitive(m: m), let engine = Self.engine else { return false }
        var src = Self.matrix(m, rows, dnnl_u8, dnnl_ab), dst = Self.matrix(m, columns, dnnl_s32, dnnl_ab)
        var scratchDescriptor = primitive.scratchpad
        let scratchpad = TensorStorage(byteCount: dnnl_memory_desc_get_size(&scratchDescriptor))
        let scratch = scratchpad.bytes
        var am: dnnl_memory_t?, cm: dnnl_memory_t?, sm: dnnl_memory_t?, stream: dnnl_stream_t?
        defer {
            if let am { dnnl_memory_destroy(am) }
            if let cm { dnnl_memory_destroy(cm) }
            if let sm { dnnl_memory_destroy(sm) }
            if let stream { dnnl_stream_destroy(stream) }
            withExtendedLifetime(scratchpad) {}
        }
        guard dnnl_memory_create(&am, &src, engine, UnsafeMutableRawPointer(mutating: a)) == dnnl_success,
              dnnl_memory_create(&cm, &dst, engine, acc) == dnnl_success,
              dnnl_memory_create(&sm, &scratchDescriptor, engine, scratch) == dnnl_success,
              dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue) == dnnl_success else { return false }
        Linear.setOpenMPThreads(threads)
        var args = [dnnl_exec_arg_t(arg: Self.argSource, memory: am), dnnl_exec_arg_t(arg: Self.argWeights, memory: weights),
                    dnnl_exec_arg_t(arg: Self.argDestination, memory: cm), dnnl_exec_arg_t(arg: Self.argScratchpad, memory: sm)]
        return withExtendedLifetime(primitive) {
            dnnl_primitive_execute(primitive.handle, stream, Int32(args.count), &args) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success
        }
    }

    /// The primitive for `m` rows, made on first use.
    private func primitive(m: Int) -> Primitive? {
        let shape = Shape(m: m, k: rows, n: columns)
        if let p = Self.primitives.withLock({ $0[shape] }) { return p }
        guard let pd = Self.descriptor(m: m, k: rows, n: columns, weights: weightsDescriptor) else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        var handle: dnnl_primitive_t?
        guard let scratchpad = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0),
              dnnl_primitive_create(&handle, pd) == dnnl_success, let handle else { return nil }
        return Self.primitives.withLock { cache in
            if let p = cache[shape] { dnnl_primitive_destroy(handle); return p }
            let serial = (cache.values.map(\.serial).max() ?? 0) + 1
            if cache.count >= Self.cachedPrimitives, let oldest = cache.min(by: { $0.value.serial < $1.value.serial }) {
                cache[oldest.key] = nil
            }
            let p = Primitive(handle, scratchpad: scratchpad.pointee, serial: serial)
            cache[shape] = p
            return p
        }
    }

    /// A u8 `[m, k]` × s8 `[k, n]` → s32 matmul descriptor; `weights` nil lets oneDNN choose their layout.
    /// Each run passes its own scratchpad: a primitive keeping its own (this oneDNN's default)
    /// must not run on two threads at once, and one primitive serves every matrix of its shape,
    /// in every model a process runs.
    private static func descriptor(m: Int, k: Int, n: Int, weights: dnnl_memory_desc_t?) -> dnnl_primitive_desc_t? {
        var src = matrix(m, k, dnnl_u8, dnnl_ab), dst = matrix(m, n, dnnl_s32, dnnl_ab)
        var w = weights ?? matrix(k, n, dnnl_s8, dnnl_format_tag_any)
        var desc = dnnl_matmul_desc_t()
        var attr: dnnl_primitive_attr_t?
        guard dnnl_primitive_attr_create(&attr) == dnnl_success, let attr else { return nil }
        defer { dnnl_primitive_attr_destroy(attr) }
        var pd: dnnl_primitive_desc_t?
        guard dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success,
              dnnl_matmul_desc_init(&desc, &src, &w, nil, &dst) == dnnl_success,
              dnnl_primitive_desc_create(&pd, &desc, attr, engine, nil) == dnnl_success else { return nil }
        return pd
    }

    /// `values` copied into a new library-owned buffer of layout `to`.
    private static func reordered(_ values: UnsafeRawPointer, from: inout dnnl_memory_desc_t, to: inout dnnl_memory_desc_t,
                                  _ engine: dnnl_engine_t) -> dnnl_memory_t? {
        var packed: dnnl_memory_t?
        guard dnnl_memory_create(&packed, &to, engine, UnsafeMutableRawPointer(bitPattern: -1)) == dnnl_success, let packed else { return nil }
        var source: dnnl_memory_t?, reorderDesc: dnnl_primitive_desc_t?, reorder: dnnl_primitive_t?, stream: dnnl_stream_t?
        defer {
            if let source { dnnl_memory_destroy(source) }
            if let reorder { dnnl_primitive_destroy(reorder) }
            if let reorderDesc { dnnl_primitive_desc_destroy(reorderDesc) }
            if let stream { dnnl_stream_destroy(stream) }
        }
        var args = [dnnl_exec_arg_t(arg: argFrom, memory: nil), dnnl_exec_arg_t(arg: argTo, memory: packed)]
        guard dnnl_memory_create(&source, &from, engine, UnsafeMutableRawPointer(mutating: values)) == dnnl_success,
              dnnl_reorder_primitive_desc_create(&reorderDesc, &from, engine, &to, engine, nil) == dnnl_success,
              dnnl_primitive_create(&reorder, reorderDesc) == dnnl_success,
              dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue) == dnnl_success else {
            dnnl_memory_destroy(packed)
            return nil
        }
        args[0].memory = source
        // One thread: a weight matrix is too small to split (on two threads oneDNN's reorder ran
        // 20 times slower here), and a loader packs several at once (`Int8Pack`).
        Linear.setOpenMPThreads(1)
        guard dnnl_primitive_execute(reorder, stream, 2, &args) == dnnl_success, dnnl_stream_wait(stream) == dnnl_success else {
            dnnl_memory_destroy(packed)
            return nil
        }
        return packed
    }

    private static func matrix(_ r: Int, _ c: Int, _ type: dnnl_data_type_t, _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t {
        var md = dnnl_memory_desc_t()
        // dnnl_dims_t is a fixed array of DNNL_MAX_NDIMS (12) that the call reads in full.
        var dims: dnnl_dims_t = (Int64(r), Int64(c), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        _ = withUnsafePointer(to: &dims) {
            $0.withMemoryRebound(to: Int64.self, capacity: 12) { dnnl_memory_desc_init_by_tag(&md, 2, $0, type, tag) }
        }
        return md
    }

    // DNNL_ARG_* (dnnl_types.h).
    static let argSource: Int32 = 1, argFrom: Int32 = 1
    static let argDestination: Int32 = 17, argTo: Int32 = 17
    static let argWeights: Int32 = 33
    static let argScratchpad: Int32 = 80
}
