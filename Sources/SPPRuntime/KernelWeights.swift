import SPPCore
import SPPGraph
import SPPKernels

/// The constants int8 kernels are built from, and what each takes over: a kernel
/// asks for a GEMM weight as an int8 matrix — the one the file stored
/// (`Int8Weight`, no float32 copy ever made) or the float32 constant quantized
/// here — and for float32 constants such as biases. What a kernel took, only it
/// holds: `Program` does not keep a float32 copy of it.
final class KernelWeights {
    let constants: [String: Tensor]
    let int8: [String: Int8Weight]
    /// Value names the current node's kernel asked for, and the bytes it holds.
    private(set) var taken: Set<String> = []
    private(set) var takenBytes = 0

    init(constants: [String: Tensor], int8: [String: Int8Weight]) {
        self.constants = constants
        self.int8 = int8
    }

    /// Starts a node: forgets what the previous one asked for.
    func startNode() {
        taken = []
        takenBytes = 0
    }

    /// Input `i` of `node` as the int8 matrix `[K, N]` of a product with `N`
    /// outputs; `transposed`: the graph's tensor is `[N, K]` (a Gemm's B with
    /// transB). `scale` multiplies every column scale. Nil when the input is not
    /// a constant matrix, its inner size could overflow int32 sums, or stored
    /// int8 scales do not run along the outputs.
    func matrix(_ node: Node, _ i: Int, transposed: Bool = false, scale: Float = 1) throws -> QuantizedMatrix? {
        guard let name = node.input(i) else { return nil }
        let m: QuantizedMatrix
        if let w = int8[name] {
            guard let stored = try w.matrix(transposed: transposed, scale: scale) else { return nil }
            m = stored
        } else if let t = constants[name], t.dtype == .float32, t.rank == 2 {
            let b = transposed ? try DataMovement.transpose(t, perm: [1, 0]) : t
            guard b.shape[0] <= QuantizedMatrix.maximumRows else { return nil }
            m = try QuantizedMatrix(quantizing: b, scale: scale)
        } else {
            return nil
        }
        taken.insert(name)
        takenBytes += m.values.byteCount + m.scales.byteCount + m.columnSums.byteCount
        return m
    }

    /// Input `i` of `node` if it is a float32 constant.
    func constant(_ node: Node, _ i: Int) -> Tensor? {
        guard let name = node.input(i), let t = constants[name], t.dtype == .float32 else { return nil }
        taken.insert(name)
        takenBytes += t.byteCount
        return t
    }
}
