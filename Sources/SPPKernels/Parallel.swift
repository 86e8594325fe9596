import CKernels

/// Work split across the cores the runtime was given (`Linear.setThreads`,
/// once per run), for the parts of the kernels oneDNN does not thread itself
/// (softmax rows, attention heads, blocks of int8 GEMM columns).
///
/// The threads are libgomp's, the pool oneDNN's GEMMs use: one pool, whose
/// workers spin briefly between regions, so a fork and join costs about a
/// microsecond (a wake-up through GCD took tens of microseconds on a VM's idle
/// vCPU, more than a short GEMM). oneDNN calls inside a region run on their thread.
public enum Parallel {
    /// Calls `body` on consecutive ranges covering `0..<count`, concurrently
    /// when there is enough work: at least `minimumChunk` items per range.
    static func forEachChunk(_ count: Int, minimumChunk: Int, _ body: (Range<Int>) -> Void) {
        let workers = min(kernelThreads, count / max(minimumChunk, 1))
        if workers <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        let chunk = (count + workers - 1) / workers
        withoutActuallyEscaping(body) { body in
            var job = Job(body: body, count: count, chunk: chunk, workers: workers)
            withUnsafeMutablePointer(to: &job) { pointer in
                spp_parallel(UInt32(workers), { context, thread, threads in
                    let job = context!.assumingMemoryBound(to: Job.self).pointee
                    // The team may be smaller than asked for: its threads share the chunks.
                    for w in stride(from: Int(thread), to: job.workers, by: max(Int(threads), 1)) {
                        let range = (w * job.chunk)..<min(job.count, (w + 1) * job.chunk)
                        if !range.isEmpty { job.body(range) }
                    }
                }, pointer)
            }
        }
    }

    private struct Job {
        let body: (Range<Int>) -> Void
        let count: Int, chunk: Int, workers: Int
    }
}
