// Storage precision (`spp convert --weights`, loading a .spp): conversions
// between the stored element types and float32, int8 dequantisation, and a
// parallel loop over independent items of uneven size.
#ifndef SPP_STORAGE_H
#define SPP_STORAGE_H
#include <stddef.h>
#include <stdint.h>

/// IEEE half (binary16 bits) to float32, exactly (F16C where the CPU has it).
void spp_half_to_float(const uint16_t *in, float *out, size_t n);
/// bfloat16 (the top 16 bits of a float32) to float32, exactly.
void spp_bfloat_to_float(const uint16_t *in, float *out, size_t n);
/// float32 to half, rounding to nearest even; beyond ±65504 gives ±∞ (callers check the range).
void spp_float_to_half(const float *in, uint16_t *out, size_t n);
/// float32 to bfloat16, rounding to nearest even; a NaN stays a (quiet) NaN.
void spp_float_to_bfloat(const float *in, uint16_t *out, size_t n);
/// out[r, c] = q[r, c] · scales[r] (per_row) or · scales[c], for rows × cols row-major.
void spp_int8_to_float(const int8_t *q, const float *scales, int per_row, size_t rows, size_t cols, float *out);
/// Returns the heap memory the process freed to the system (glibc's malloc_trim;
/// nothing elsewhere): what a load freed would otherwise stay resident. Then has
/// glibc serve blocks up to 32 MiB from the heap and keep what is freed there:
/// kernels allocate scratch on every run, and a block mmap'd per allocation costs
/// a page fault per 4 KiB each time (glibc raises its threshold only after large
/// frees, so without this a process that loaded without any ran slower).
void spp_release_free_memory(void);
/// Calls body(ctx, i, thread) for every i < count on a team of `threads` threads
/// in libgomp's pool (as spp_parallel), each thread taking the next item as it
/// finishes one, so that items of uneven size keep all threads busy. `spread`
/// (Linux): for the call, each thread is bound to a CPU of its own among those the
/// caller may use (the caller to the one it is on), and given back its own CPU
/// mask after; nothing is bound when there are fewer CPUs than threads.
void spp_parallel_items(unsigned threads, size_t count, int spread, void (*body)(void *ctx, size_t item, int thread), void *ctx);

#endif
