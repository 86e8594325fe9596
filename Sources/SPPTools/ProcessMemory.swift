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
