// LAPACK through its C interface (liblapacke, backed by OpenBLAS's LAPACK on Debian).
// Conversion-time only: SVD, QR, Cholesky and solves for the pruning passes.
#include <lapacke.h>
