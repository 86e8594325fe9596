// CBLAS and LAPACK from OpenBLAS (pkg-config openblas adds the include path).
#include <cblas.h>
