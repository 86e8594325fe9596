import Dispatch

/// Work split across the cores the runtime was given (`Linear.setThreads`,
/// once per run), for the elementwise parts of the
/// fused kernels that BLAS does not cover (softmax rows, activations).
enum Parallel {
    /// Calls `body` on consecutive ranges covering `0..<count`, concurrently
    /// when there is enough work: at least `minimumChunk` items per range.
    static func forEachChunk(_ count: Int, minimumChunk: Int, _ body: (Range<Int>) -> Void) {
        let workers = min(kernelThreads, count / max(minimumChunk, 1))
        if workers <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        let chunk = (count + workers - 1) / workers
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let range = (w * chunk)..<min(count, (w + 1) * chunk)
            if !range.isEmpty { body(range) }
        }
    }
}
