import Foundation
import SPPCore
import SPPGraph

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
