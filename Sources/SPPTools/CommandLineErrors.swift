import Foundation

/// Turns any error from the library into one line on stderr and exit status 1,
/// so every failure reads "error: <what, where>". Outputs are written
/// atomically, so exiting here never leaves a half-written file.
public enum CommandLineErrors {
    public static func report<T>(_ body: () throws -> T) -> T {
        do { return try body() } catch {
            Report.stderr("error: \(error)")
            exit(1)
        }
    }
}
