import CKernels

extension Parallel {
    /// Calls `body(i, thread)` for every `i` in `0..<count` on up to `threads`
    /// threads of the same pool (`thread` in `0..<threads`, for per-thread
    /// buffers), each taking the next item when it finishes one: for work of
    /// uneven size, such as reading a model's tensors. `body` must not throw;
    /// collect failures per item.
    public static func forEachItem(_ count: Int, threads: Int, _ body: (_ item: Int, _ thread: Int) -> Void) {
        let workers = min(max(threads, 1), count)
        if workers <= 1 {
            for i in 0..<count { body(i, 0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var job = body
            withUnsafeMutablePointer(to: &job) { pointer in
                spp_parallel_items(UInt32(workers), count, { context, item, thread in
                    context!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(item), Int(thread))
                }, pointer)
            }
        }
    }
}

extension Parallel {
    /// Runs `body` on this thread while the pool's other `threads − 1` threads start
    /// (they join a team with nothing to do). A process's first parallel region starts
    /// them, which took 0.2–4 ms on this VM (median ~1 ms, a wake-up of an idle vCPU):
    /// a serial step ahead of parallel work hides it.
    public static func whileStartingThreads<R>(_ threads: Int, _ body: () throws -> R) throws -> R {
        guard threads > 1 else { return try body() }
        var result: Result<R, Error>?
        withoutActuallyEscaping({ result = Result { try body() } }) { run in
            var job = run
            withUnsafeMutablePointer(to: &job) { pointer in
                spp_parallel(UInt32(threads), { context, thread, _ in
                    if thread == 0 { context!.assumingMemoryBound(to: (() -> Void).self).pointee() }
                }, pointer)
            }
        }
        return try result!.get()
    }
}
