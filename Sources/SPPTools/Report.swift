import Foundation
import SPPCore
import SPPFormat
import SPPGraph
import SPPPasses

/// Human-readable figures for summaries.
public enum Report {
    public static func bytes(_ n: Int) -> String {
        let units = ["B", "KB", "MB", "GB"]
        var v = Double(n), u = 0
        while v >= 1000 && u < units.count - 1 { v /= 1000; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
    }

    public static func count(_ n: Int) -> String {
        if n >= 1_000_000 { return String(format: "%.2fM", Double(n) / 1e6) }
        if n >= 1_000 { return String(format: "%.1fK", Double(n) / 1e3) }
        return String(n)
    }

    public static func histogram(_ ops: [(OpType, Int)]) -> String {
        ops.map { "\($0.0.rawValue) \($0.1)" }.joined(separator: ", ")
    }

    public static func io(_ values: [ValueInfo]) -> [String] {
        values.map { "  \($0.name): \($0.typeDescription)" }
    }

    /// A progress line that rewrites itself on a terminal (stderr), and is quiet otherwise.
    public static func progress(_ line: String) {
        guard isatty(2) != 0 else { return }
        FileHandle.standardError.write(("\r\u{1B}[K" + line).data(using: .utf8)!)
    }

    /// Ends a progress line.
    public static func progressDone() {
        guard isatty(2) != 0 else { return }
        FileHandle.standardError.write("\r\u{1B}[K".data(using: .utf8)!)
    }

    /// Writes to standard error (progress and errors never mix with results on stdout).
    public static func stderr(_ line: String) {
        FileHandle.standardError.write((line + "\n").data(using: .utf8)!)
    }
}

extension Report {
    /// What a conversion stored below float32: "int8 84 tensors (10.6 MB), float16 121 tensors (24.0 MB)"; nil when nothing.
    public static func storage(_ r: StoragePrecision.Report) -> String? {
        guard !r.tensors.isEmpty || !r.keptFloat32.isEmpty else { return nil }
        var parts = r.tensors.sorted { $0.key.rawValue < $1.key.rawValue }.map { dtype, n in
            "\(dtype) \(n) tensors (\(bytes(r.bytes[dtype] ?? 0)))"
        }
        if let scales = r.bytes[.float32] { parts.append("int8 scales \(bytes(scales))") }
        if !r.keptFloat32.isEmpty { parts.append("\(r.keptFloat32.count) kept float32 (values float16 or int8 cannot hold)") }
        return parts.joined(separator: ", ")
    }

    /// How a file's tensors are stored: frames and stored bytes by dtype, those
    /// standing for float32 values marked, and how many frames are zstd.
    public static func storage(_ entries: [TensorEntryInfo]) -> String {
        var groups: [String: (count: Int, bytes: Int)] = [:]
        for e in entries {
            let key = e.encoding == nil ? "\(e.dtype)" : (e.dtype == .int8 ? "int8 (× scales) for float32" : "\(e.dtype) for float32")
            groups[key, default: (0, 0)].count += 1
            groups[key, default: (0, 0)].bytes += e.compressedSize
        }
        let zstd = entries.filter { $0.codec == .zstd }.count
        return groups.sorted { $0.value.bytes > $1.value.bytes }.map { "\($0.key) \($0.value.count) tensors \(bytes($0.value.bytes))" }
            .joined(separator: ", ") + "; \(zstd) of \(entries.count) frames zstd, the rest raw"
    }
}
