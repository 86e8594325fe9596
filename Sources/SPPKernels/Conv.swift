import SPPCore

public enum Convolution {
    public struct Parameters {
        public var strides: [Int]
        public var pads: [Int]        // begin pads then end pads, one per spatial dim each
        public var dilations: [Int]
        public var group: Int
        public init(strides: [Int], pads: [Int], dilations: [Int], group: Int) {
            self.strides = strides; self.pads = pads; self.dilations = dilations; self.group = group
        }
    }

    /// Resolves ONNX `auto_pad` into explicit pads for the given spatial sizes.
    public static func autoPads(_ mode: String, input: [Int], kernel: [Int], strides: [Int], dilations: [Int]) throws -> [Int]? {
        switch mode {
        case "NOTSET", "VALID": return mode == "VALID" ? [Int](repeating: 0, count: input.count * 2) : nil
        case "SAME_UPPER", "SAME_LOWER":
            var begin = [Int](), end = [Int]()
            for i in 0..<input.count {
                let out = (input[i] + strides[i] - 1) / strides[i]
                let total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - input[i])
                let small = total / 2
                begin.append(mode == "SAME_UPPER" ? small : total - small)
                end.append(mode == "SAME_UPPER" ? total - small : small)
            }
            return begin + end
        default: throw KernelError.invalidArgument("auto_pad '\(mode)' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
        }
    }

    /// 1-D or 2-D convolution, float32, NCHW, by im2col and one GEMM per image and group.
    public static func conv(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ p: Parameters) throws -> Tensor {
        guard x.dtype == .float32, w.dtype == .float32 else { throw KernelError.unsupportedDType(x.dtype, reason: "Conv runs in float32") }
        guard x.rank == 3 || x.rank == 4, w.rank == x.rank else {
            throw KernelError.shapeMismatch("Conv supports 1-D and 2-D inputs; got input \(Tensor.describe(x.shape)) and weights \(Tensor.describe(w.shape))")
        }
        // Treat 1-D as 2-D with height 1.
        let is1D = x.rank == 3
        let xs = is1D ? [x.shape[0], x.shape[1], 1, x.shape[2]] : x.shape
        let ws = is1D ? [w.shape[0], w.shape[1], 1, w.shape[2]] : w.shape
        let st = is1D ? [1] + p.strides : p.strides
        let dl = is1D ? [1] + p.dilations : p.dilations
        let pd = is1D ? [0, p.pads[0], 0, p.pads[1]] : p.pads
        let (batch, cIn, h, wd) = (xs[0], xs[1], xs[2], xs[3])
        let (cOut, cPerGroup, kh, kw) = (ws[0], ws[1], ws[2], ws[3])
        let g = p.group
        guard g >= 1, cIn == cPerGroup * g, cOut % g == 0 else {
            throw KernelError.shapeMismatch("Conv channels do not match: input \(cIn), weights \(Tensor.describe(w.shape)), group \(g)")
        }
        let oh = (h + pd[0] + pd[2] - ((kh - 1) * dl[0] + 1)) / st[0] + 1
        let ow = (wd + pd[1] + pd[3] - ((kw - 1) * dl[1] + 1)) / st[1] + 1
        guard oh > 0, ow > 0 else { throw KernelError.shapeMismatch("Conv output would be empty for input \(Tensor.describe(x.shape))") }
        if let bias, bias.count != cOut { throw KernelError.shapeMismatch("Conv bias has \(bias.count) values for \(cOut) output channels") }
        let out = Tensor(dtype: .float32, shape: is1D ? [batch, cOut, ow] : [batch, cOut, oh, ow])
        let colRows = cPerGroup * kh * kw, colCols = oh * ow
        var col = [Float](repeating: 0, count: colRows * colCols)
        let px = x.pointer(as: Float.self), pw = w.pointer(as: Float.self), po = out.pointer(as: Float.self)
        let oPerGroup = cOut / g
        for n in 0..<batch {
            for gi in 0..<g {
                // im2col: row (c, ky, kx), column (oy, ox).
                col.withUnsafeMutableBufferPointer { cb in
                    for c in 0..<cPerGroup {
                        let plane = px + ((n * cIn) + gi * cPerGroup + c) * h * wd
                        for ky in 0..<kh { for kx in 0..<kw {
                            let row = (c * kh + ky) * kw + kx
                            for oy in 0..<oh {
                                let iy = oy * st[0] - pd[0] + ky * dl[0]
                                for ox in 0..<ow {
                                    let ix = ox * st[1] - pd[1] + kx * dl[1]
                                    cb[row * colCols + oy * ow + ox] = (iy >= 0 && iy < h && ix >= 0 && ix < wd) ? plane[iy * wd + ix] : 0
                                }
                            }
                        } }
                    }
                    Linear.sgemm(transA: false, transB: false, m: oPerGroup, n: colCols, k: colRows, alpha: 1,
                                 a: pw + gi * oPerGroup * colRows, lda: colRows, b: cb.baseAddress!, ldb: colCols,
                                 beta: 0, c: po + (n * cOut + gi * oPerGroup) * colCols, ldc: colCols)
                }
            }
            if let bias {
                let pb = bias.pointer(as: Float.self)
                for o in 0..<cOut { let base = po + (n * cOut + o) * colCols; for i in 0..<colCols { base[i] += pb[o] } }
            }
        }
        return out
    }
}
