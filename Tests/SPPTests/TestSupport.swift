import Foundation
import SPPCore

/// Where test data lives: committed fixtures beside this file, and ../shared
/// beside the package (absent on some machines: tests that need it skip).
enum TestPaths {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = packageRoot.appendingPathComponent("Tests/SPPTests/Fixtures")
    static let shared = packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static var hasShared: Bool { FileManager.default.fileExists(atPath: shared.appendingPathComponent("models").path) }
    static let miniLM = shared.appendingPathComponent("models/all-MiniLM-L6-v2/model.onnx")

    static func temporaryDirectory() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("spp-tests-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Difference between a result and its reference.
struct Comparison: CustomStringConvertible {
    var maxAbsError: Double = 0
    var worstIndex = 0
    var mismatch: String? = nil

    var description: String { mismatch ?? "max abs error \(maxAbsError) at element \(worstIndex)" }

    /// Elementwise |a − b| ≤ atol + rtol·|b| for floats, exact for the rest.
    static func compare(_ actual: Tensor, _ expected: Tensor, atol: Double, rtol: Double) -> (ok: Bool, Comparison) {
        var c = Comparison()
        guard actual.dtype == expected.dtype else {
            c.mismatch = "dtype \(actual.dtype), expected \(expected.dtype)"
            return (false, c)
        }
        guard actual.shape == expected.shape else {
            c.mismatch = "shape \(Tensor.describe(actual.shape)), expected \(Tensor.describe(expected.shape))"
            return (false, c)
        }
        let a = values(actual), e = values(expected)
        var ok = true
        for i in 0..<a.count {
            let (x, y) = (a[i], e[i])
            if x.isNaN && y.isNaN { continue }
            if x == y { continue }  // also equal infinities
            let d = abs(x - y)
            if !(d <= atol + rtol * abs(y)) { ok = false }
            if d > c.maxAbsError || d.isNaN { c.maxAbsError = d; c.worstIndex = i }
        }
        return (ok, c)
    }

    static func values(_ t: Tensor) -> [Double] {
        switch t.dtype {
        case .float32: return t.buffer(as: Float.self).map(Double.init)
        case .float64: return Array(t.buffer(as: Double.self))
        case .float16: return t.buffer(as: Float16.self).map(Double.init)
        case .bool: return t.buffer(as: Bool.self).map { $0 ? 1 : 0 }
        case .uint64: return t.buffer(as: UInt64.self).map(Double.init)
        case .bfloat16: return t.buffer(as: UInt16.self).map { Double(Float(bitPattern: UInt32($0) << 16)) }
        default: return (t.integers ?? []).map(Double.init)
        }
    }
}
