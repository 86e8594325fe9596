import CDNNL
import SPPCore
import Synchronization

/// A constant weight matrix `W [K, N]` reordered once into the blocked layout
/// of oneDNN's matmul primitive, with the primitives that multiply by it, one
/// per row count, and what they fuse into the product's epilogue (float32: a
/// bias row and an activation).
///
/// oneDNN's GEMM functions repack W on every call and cannot use its brgemm
/// kernels; the matmul primitive with weights in its own layout can. Measured
/// here (one thread, AVX-512): int8 935 vs 685 GOP/s at 32×384×384 and 970 vs 865
/// at 128×384×384; float32 223 vs 204 GFLOP/s at 128×3072×768, with the bias and
/// GELU free. A primitive is fixed to its row count M (with a run-time M oneDNN
/// falls back to the repacking GEMM), so one is made per M on first use and
/// kept; the weight layout does not depend on M.
///
/// `init` returns nil where packing gains nothing: when oneDNN would use plain
/// row-major weights on this CPU (no brgemm kernels: AVX2, or int8 without
/// VNNI), and the caller keeps its GEMM path.
final class PackedMatrix: @unchecked Sendable {
    let rows: Int, columns: Int
    /// int8 (u8 activations × s8 weights → s32) or float32.
    let int8: Bool
    private let weights: dnnl_memory_t
    private let weightsDescriptor: dnnl_memory_desc_t
    private let bias: dnnl_memory_t?
    private let biasTensor: Tensor?
    private let activation: FeedForward.Activation?
    private let primitives = Mutex<[Int: Primitive]>([:])

    /// Row counts kept at once; past it the least recently made is dropped.
    static let cachedRowCounts = 16

    /// One CPU engine for the process.
    nonisolated(unsafe) static let engine: dnnl_engine_t? = {
        var e: dnnl_engine_t?
        return dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success ? e : nil
    }()

    /// A matmul primitive for one row count.
    final class Primitive: @unchecked Sendable {
        let handle: dnnl_primitive_t
        let serial: Int
        init(_ handle: dnnl_primitive_t, serial: Int) { (self.handle, self.serial) = (handle, serial) }
        deinit { dnnl_primitive_destroy(handle) }
    }

    /// Reorders `values` (int8 or float32 `[K, N]`, row-major) into the primitive's
    /// layout. `bias` (float32 `[N]`) and `activation` apply to float32 only.
    init?(_ values: Tensor, bias: Tensor? = nil, activation: FeedForward.Activation? = nil) {
        guard values.dtype == .int8 || values.dtype == .float32, values.rank == 2, let engine = Self.engine else { return nil }
        int8 = values.dtype == .int8
        (rows, columns) = (values.shape[0], values.shape[1])
        guard rows > 0, columns > 0, !int8 || (bias == nil && activation == nil),
              bias.map({ $0.dtype == .float32 && $0.count == values.shape[1] }) ?? true else { return nil }
        (biasTensor, self.activation) = (bias, activation)
        let type = int8 ? dnnl_s8 : dnnl_f32
        // The layout the primitive wants, asked of one made for 128 rows.
        guard let pd = Self.descriptor(m: 128, k: rows, n: columns, int8: int8, weights: nil, bias: bias != nil, activation: activation) else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        guard let wanted = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) else { return nil }
        var plain = Self.matrix(rows, columns, type, dnnl_ab)
        guard dnnl_memory_desc_equal(wanted, &plain) == 0 else { return nil }
        var layout = wanted.pointee
        guard let packed = Self.reordered(values, from: &plain, to: &layout, engine) else { return nil }
        var biasMemory: dnnl_memory_t?
        if let bias {
            var md = Self.matrix(1, columns, dnnl_f32, dnnl_ab)
            guard dnnl_memory_create(&biasMemory, &md, engine, bias.rawPointer) == dnnl_success else {
                dnnl_memory_destroy(packed)
                return nil
            }
        }
        (weights, weightsDescriptor, self.bias) = (packed, layout, biasMemory)
    }

    /// Bytes of the reordered weights.
    var byteCount: Int {
        var descriptor = weightsDescriptor
        return dnnl_memory_desc_get_size(&descriptor)
    }

    deinit {
        dnnl_memory_destroy(weights)
        if let bias { dnnl_memory_destroy(bias) }
    }

    /// `c[m×N] = a[m×K] · W` (+ bias, then the activation), row-major with leading
    /// dimensions K and N — u8 → s32 for int8 weights, float32 → float32 otherwise —
    /// on `threads` threads. False if oneDNN refused (the caller multiplies another way).
    func multiply(_ a: UnsafeRawPointer, m: Int, _ c: UnsafeMutableRawPointer, threads: Int) -> Bool {
        guard let primitive = primitive(m: m), let engine = Self.engine else { return false }
        var src = Self.matrix(m, rows, int8 ? dnnl_u8 : dnnl_f32, dnnl_ab), dst = Self.matrix(m, columns, int8 ? dnnl_s32 : dnnl_f32, dnnl_ab)
        var am: dnnl_memory_t?, cm: dnnl_memory_t?, stream: dnnl_stream_t?
        defer {
            if let am { dnnl_memory_destroy(am) }
            if let cm { dnnl_memory_destroy(cm) }
            if let stream { dnnl_stream_destroy(stream) }
        }
        guard dnnl_memory_create(&am, &src, engine, UnsafeMutableRawPointer(mutating: a)) == dnnl_success,
              dnnl_memory_create(&cm, &dst, engine, c) == dnnl_success,
              dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue) == dnnl_success else { return false }
        Linear.setOpenMPThreads(threads)
        var args = [dnnl_exec_arg_t(arg: Self.argSource, memory: am), dnnl_exec_arg_t(arg: Self.argWeights, memory: weights),
                    dnnl_exec_arg_t(arg: Self.argDestination, memory: cm)]
        if let bias { args.append(dnnl_exec_arg_t(arg: Self.argBias, memory: bias)) }
        return withExtendedLifetime((primitive, biasTensor)) {
            dnnl_primitive_execute(primitive.handle, stream, Int32(args.count), &args) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success
        }
    }

    /// The primitive for `m` rows, made on first use.
    private func primitive(m: Int) -> Primitive? {
        if let p = primitives.withLock({ $0[m] }) { return p }
        guard let pd = Self.descriptor(m: m, k: rows, n: columns, int8: int8, weights: weightsDescriptor, bias: bias != nil, activation: activation) else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        var handle: dnnl_primitive_t?
        guard dnnl_primitive_create(&handle, pd) == dnnl_success, let handle else { return nil }
        return primitives.withLock { cache in
            if let p = cache[m] { dnnl_primitive_destroy(handle); return p }
            let serial = (cache.values.map(\.serial).max() ?? 0) + 1
            if cache.count >= Self.cachedRowCounts, let oldest = cache.min(by: { $0.value.serial < $1.value.serial }) {
                cache[oldest.key] = nil
            }
            let p = Primitive(handle, serial: serial)
            cache[m] = p
            return p
        }
    }

    /// A `[m, k] × [k, n]` matmul descriptor (int8: u8 × s8 → s32; else float32);
    /// `weights` nil lets oneDNN choose their layout.
    private static func descriptor(m: Int, k: Int, n: Int, int8: Bool, weights: dnnl_memory_desc_t?,
                                   bias: Bool, activation: FeedForward.Activation?) -> dnnl_primitive_desc_t? {
        var src = matrix(m, k, int8 ? dnnl_u8 : dnnl_f32, dnnl_ab), dst = matrix(m, n, int8 ? dnnl_s32 : dnnl_f32, dnnl_ab)
        var w = weights ?? matrix(k, n, int8 ? dnnl_s8 : dnnl_f32, dnnl_format_tag_any)
        var b = matrix(1, n, dnnl_f32, dnnl_ab)
        var desc = dnnl_matmul_desc_t()
        guard (bias ? dnnl_matmul_desc_init(&desc, &src, &w, &b, &dst) : dnnl_matmul_desc_init(&desc, &src, &w, nil, &dst)) == dnnl_success else { return nil }
        var attr: dnnl_primitive_attr_t?
        defer { if let attr { dnnl_primitive_attr_destroy(attr) } }
        if let activation {
            var ops: dnnl_post_ops_t?
            guard dnnl_primitive_attr_create(&attr) == dnnl_success, dnnl_post_ops_create(&ops) == dnnl_success, let ops else { return nil }
            defer { dnnl_post_ops_destroy(ops) }
            let kind: dnnl_alg_kind_t = switch activation {
            case .gelu: dnnl_eltwise_gelu_erf
            case .geluTanh: dnnl_eltwise_gelu_tanh
            case .relu: dnnl_eltwise_relu
            }
            guard dnnl_post_ops_append_eltwise(ops, 1, kind, 0, 0) == dnnl_success,
                  dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success else { return nil }
        }
        var pd: dnnl_primitive_desc_t?
        guard dnnl_primitive_desc_create(&pd, &desc, attr, engine, nil) == dnnl_success else { return nil }
        return pd
    }

    /// `values` copied into a new library-owned buffer of layout `to`.
    private static func reordered(_ values: Tensor, from: inout dnnl_memory_desc_t, to: inout dnnl_memory_desc_t,
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
        guard dnnl_memory_create(&source, &from, engine, values.rawPointer) == dnnl_success,
              dnnl_reorder_primitive_desc_create(&reorderDesc, &from, engine, &to, engine, nil) == dnnl_success,
              dnnl_primitive_create(&reorder, reorderDesc) == dnnl_success,
              dnnl_stream_create(&stream, engine, dnnl_stream_default_flags.rawValue) == dnnl_success else {
            dnnl_memory_destroy(packed)
            return nil
        }
        args[0].memory = source
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
    static let argWeights: Int32 = 33, argBias: Int32 = 41
}
