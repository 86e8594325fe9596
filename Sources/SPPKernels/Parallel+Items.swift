import CKernels

extension Parallel {
    /// Calls `body(i, thread)` for every `i` in `0..<count` on up to `threads`
    /// threads of the same pool (`thread` in `0..<threads`, for per-thread
    /// buffers), each taking the next item when it finishes one: for work of
    /// uneven size, such as reading a model's tensors. `body` must not throw;
    /// collect failures per item. `spread`: each thread is bound to a CPU of its own
    /// for the call (`spp_parallel_items`): this VM's scheduler was seen to leave a new
    /// worker time-sliced with the caller on one core for tens of milliseconds while
    /// the other core idled.
    public static func forEachItem(_ count: Int, threads: Int, spread: Bool = false, _ body: (_ item: Int, _ thread: Int) -> Void) {
        let workers = min(max(threads, 1), count)
        if workers <= 1 {
            for i in 0..<count { body(i, 0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var job = body
            withUnsafeMutablePointer(to: &job) { pointer in
                spp_parallel_items(UInt32(workers), count, spread ? 1 : 0, { context, item, thread in
                    context!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(item), Int(thread))
                }, pointer)
            }
        }
    }
}
