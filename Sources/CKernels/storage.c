#if defined(__linux__)
#define _GNU_SOURCE  // sched_getcpu, sched_setaffinity
#include <sched.h>
#endif
#include "spp_storage.h"
#include "bfloat.h"
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);

// Clones as in kernels.c: x86-64-v3 and v4 have F16C, so half conversions
// compile to vcvtph2ps / vcvtps2ph; the baseline clone converts in software.
#if defined(__x86_64__)
#define SPP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SPP_CLONES
#endif

SPP_CLONES void spp_half_to_float(const uint16_t *in, float *out, size_t n) {
    const _Float16 *h = (const _Float16 *)in;
    for (size_t i = 0; i < n; i++) out[i] = (float)h[i];
}

SPP_CLONES void spp_bfloat_to_float(const uint16_t *in, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = spp_bfloat_value(in[i]);
}

SPP_CLONES void spp_float_to_half(const float *in, uint16_t *out, size_t n) {
    _Float16 *h = (_Float16 *)out;
    for (size_t i = 0; i < n; i++) h[i] = (_Float16)in[i];
}

SPP_CLONES void spp_float_to_bfloat(const float *in, uint16_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = spp_bfloat_bits(in[i]);
}

SPP_CLONES void spp_int8_to_float(const int8_t *q, const float *scales, int per_row, size_t rows, size_t cols, float *out) {
    for (size_t r = 0; r < rows; r++) {
        const int8_t *qr = q + r * cols;
        float *o = out + r * cols;
        if (per_row) {
            float s = scales[r];
            for (size_t c = 0; c < cols; c++) o[c] = s * (float)qr[c];
        } else {
            for (size_t c = 0; c < cols; c++) o[c] = scales[c] * (float)qr[c];
        }
    }
}

int omp_get_thread_num(void);

struct spp_items {
    void (*body)(void *, size_t, int);
    void *ctx;
    size_t count;
    size_t next;
    // Spread: thread 0 (the caller) stays on caller_cpu, thread t on the t-th other CPU of `cpus`.
    int spread;
#if defined(__linux__)
    cpu_set_t cpus;
    int caller_cpu;
#endif
};

#if defined(__linux__)
// The CPU thread `thread` of a spread team runs on, or -1: the caller's, then the allowed
// CPUs after it in turn (so that teams of callers on different CPUs do not all pick the same).
static int spp_items_cpu(const struct spp_items *job, int thread) {
    if (thread == 0) return job->caller_cpu;
    int seen = 0;
    for (int step = 1; step < CPU_SETSIZE; step++) {
        int cpu = (job->caller_cpu + step) % CPU_SETSIZE;
        if (CPU_ISSET(cpu, &job->cpus) && ++seen == thread) return cpu;
    }
    return -1;
}
#endif

static void spp_items_run(void *p) {
    struct spp_items *job = p;
    int thread = omp_get_thread_num();
#if defined(__linux__)
    cpu_set_t saved;
    int pinned = 0, cpu = job->spread ? spp_items_cpu(job, thread) : -1;
    if (cpu >= 0 && sched_getaffinity(0, sizeof saved, &saved) == 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        pinned = sched_setaffinity(0, sizeof one, &one) == 0;
    }
#endif
    for (;;) {
        size_t i = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (i >= job->count) break;
        job->body(job->ctx, i, thread);
    }
#if defined(__linux__)
    if (pinned) sched_setaffinity(0, sizeof saved, &saved);
#endif
}

void spp_parallel_items(unsigned threads, size_t count, int spread, void (*body)(void *ctx, size_t item, int thread), void *ctx) {
    struct spp_items job = {body, ctx, count, 0, 0};
#if defined(__linux__)
    // Only where every thread gets a CPU of its own among those the caller may use.
    if (spread && threads > 1 && sched_getaffinity(0, sizeof job.cpus, &job.cpus) == 0 && CPU_COUNT(&job.cpus) >= (int)threads) {
        job.caller_cpu = sched_getcpu();
        job.spread = job.caller_cpu >= 0 && CPU_ISSET(job.caller_cpu, &job.cpus);
    }
#endif
    GOMP_parallel(spp_items_run, &job, threads, 0);
}

void spp_release_free_memory(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}
