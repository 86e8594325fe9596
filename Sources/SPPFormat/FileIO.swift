#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Thin loops over the POSIX calls, which may transfer fewer bytes than asked.
enum FileIO {
    /// The system's message for the current `errno`.
    static var lastError: String { String(cString: strerror(errno)) }

    /// Reads up to `count` bytes at `offset`; returns how many were read
    /// (fewer only at the end of the file). Throws on an I/O error.
    static func pread(_ fd: Int32, _ dst: UnsafeMutableRawPointer, count: Int, at offset: Int, path: String) throws -> Int {
        var done = 0
        while done < count {
            // Linux transfers at most ~2 GiB per call; ask for at most 1 GiB.
            let chunk = min(count - done, 1 << 30)
            let n = systemPread(fd, dst + done, chunk, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError.readFailed(path: path, reason: lastError)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Writes all `count` bytes at the current position.
    static func write(_ fd: Int32, _ src: UnsafeRawPointer, count: Int, path: String) throws {
        var done = 0
        while done < count {
            let chunk = min(count - done, 1 << 30)
            let n = systemWrite(fd, src + done, chunk)
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError.writeFailed(path: path, reason: lastError)
            }
            done += n
        }
    }

    private static func systemPread(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int, _ o: off_t) -> Int {
        #if canImport(Glibc)
        return Glibc.pread(fd, p, n, o)
        #else
        return Darwin.pread(fd, p, n, o)
        #endif
    }

    private static func systemWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
        #if canImport(Glibc)
        return Glibc.write(fd, p, n)
        #else
        return Darwin.write(fd, p, n)
        #endif
    }
}
