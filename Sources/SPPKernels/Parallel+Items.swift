import CKernels

extension Parallel {
    /// Calls `body(i)` for every `i` in `0..<count` on up to `threads` threads of
    /// the same pool, each taking the next item when it finishes one: for work
    /// of uneven size, such as reading a model's tensors. `body` must not throw;
    /// collect failures per item.
    public static func forEachItem(_ count: Int, threads: Int, _ body: (Int) -> Void) {
        let workers = min(max(threads, 1), count)
        if workers <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var job = body
            withUnsafeMutablePointer(to: &job) { pointer in
                spp_parallel_items(UInt32(workers), count, { context, item in
                    context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(item))
                }, pointer)
            }
        }
    }
}
