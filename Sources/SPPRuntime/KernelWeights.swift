import SPPCore
import SPPGraph
import SPPKernels

/// What one node's kernel is built from. For an int8 kernel a GEMM weight comes as
/// int8 — the one the file stored (`Int8Weight`, no float32 copy ever made) or the
/// float32 constant quantized here — and biases as float32 constants; a float32
/// kernel takes float32 constants. Counts the bytes the kernel will hold.
struct KernelWeights {
    let constants: [String: Tensor]
    let int8: [String: Int8Weight]
    let packed: PackedWeights
    /// Bytes of what the kernel holds, as counted by `hold` and `constant`.
    private(set) var heldBytes = 0

    init(constants: [String: Tensor], int8: [String: Int8Weight], packed: PackedWeights) {
        self.constants = constants
        self.int8 = int8
        self.packed = packed
    }

    /// The float32 `[Wq | Wk | Wv]` the loader read side by side for attention node `node`.
    mutating func float32QueryKeyValue(_ node: Node) -> Tensor? {
        guard let t = packed.float32QueryKeyValue[node.name] else { return nil }
        heldBytes += t.byteCount
        return t
    }

    /// The `[Wq | Wk | Wv]` the loader packed for attention node `node`.
    mutating func queryKeyValue(_ node: Node) -> QuantizedMatrix? {
        packed.int8QueryKeyValue[node.name].map { hold($0) }
    }

    /// Input `i` of `node` as int8 values `[K, N]` of a product with `N` outputs
    /// and their column scales `[N]`; `transposed`: the graph's tensor is `[N, K]`
    /// (a Gemm's B with transB). `scale` multiplies every column scale. Nil when
    /// the input is not a constant matrix, its inner size could overflow int32
    /// sums, or stored scales do not run along the outputs.
    func parts(_ node: Node, _ i: Int, transposed: Bool = false, scale: Float = 1) throws -> (values: Tensor, scales: Tensor)? {
        guard let name = node.input(i) else { return nil }
        if let w = int8[name] { return try w.parts(transposed: transposed, scale: scale) }
        guard let t = constants[name], t.dtype == .float32, t.rank == 2,
              (transposed ? t.shape[1] : t.shape[0]) <= QuantizedMatrix.maximumRows else { return nil }
        return try QuantizedMatrix.quantize(transposed ? try DataMovement.transpose(t, perm: [1, 0]) : t, scale: scale)
    }

    /// `parts` as the matrix the int8 GEMM reads.
    mutating func matrix(_ node: Node, _ i: Int, transposed: Bool = false, scale: Float = 1) throws -> QuantizedMatrix? {
        if !transposed, scale == 1, let m = node.input(i).flatMap({ packed.int8Matrices[$0] }) { return hold(m) }
        guard let p = try parts(node, i, transposed: transposed, scale: scale) else { return nil }
        return hold(try QuantizedMatrix(values: p.values, scales: p.scales))
    }

    /// Counts a matrix the kernel keeps.
    @discardableResult
    mutating func hold(_ m: QuantizedMatrix) -> QuantizedMatrix {
        heldBytes += m.byteCount
        return m
    }

    /// Input `i` of `node` if it is a float32 constant.
    mutating func constant(_ node: Node, _ i: Int) -> Tensor? {
        guard let name = node.input(i), let t = constants[name], t.dtype == .float32 else { return nil }
        heldBytes += t.byteCount
        return t
    }
}
