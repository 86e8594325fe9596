import Foundation

/// Resident memory of this process, from Linux's /proc/self/status: now
/// (`VmRSS`), its file-backed part (`RssFile`: mapped library code and data)
/// and the high-water mark (`VmHWM`), which `resetPeak` sets back to the
/// current size (writing 5 to /proc/self/clear_refs) so that a later peak
/// covers only what ran after it. Nil where /proc does not say.
public enum ProcessMemory {
    public static var residentBytes: Int? { status("VmRSS") }
    public static var fileBytes: Int? { status("RssFile") }
    public static var peakBytes: Int? { status("VmHWM") }

    /// Resident bytes of anonymous executable mappings: kernels compiled at run
    /// time (oneDNN's JIT code — its sgemm alone makes ~3.3 MB of it once per
    /// process). Code like a library's, not memory the model holds.
    public static var compiledCodeBytes: Int? {
        // Read to the end: /proc files report size 0, and a sized read stops at the first page.
        guard let data = FileHandle(forReadingAtPath: "/proc/self/smaps")?.readDataToEndOfFile() else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        var total = 0, anonymousExecutable = false
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = fields.first else { continue }
            if first.contains("-"), fields.count >= 5, first.allSatisfy({ $0.isHexDigit || $0 == "-" }) {
                // "start-end perms offset dev inode [path]": no path means anonymous.
                anonymousExecutable = fields[1].contains("x") && fields.count == 5
            } else if anonymousExecutable, first == "Rss:", fields.count >= 2, let kb = Int(fields[1]) {
                total += kb * 1024
            }
        }
        return total
    }

    /// Whether the peak could be reset.
    @discardableResult
    public static func resetPeak() -> Bool {
        guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? handle.close() }
        return (try? handle.write(contentsOf: Data("5".utf8))) != nil
    }

    private static func status(_ key: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            // "VmRSS:     12345 kB"
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
        }
        return nil
    }
}
