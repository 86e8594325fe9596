// oneDNN (Debian libdnnl-dev): row-major sgemm and u8s8s32 gemm with runtime
// CPU dispatch (AVX2, AVX-512, VNNI). It threads through OpenMP (libgomp), so the
// runtime sets the OpenMP thread count of each calling thread itself.
#include <dnnl.h>
int omp_get_max_threads(void);
void omp_set_num_threads(int);
