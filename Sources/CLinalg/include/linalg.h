// BLAS and LAPACK for the conversion passes, from OpenBLAS and LAPACKE loaded
// on first use (dlopen) rather than linked: OpenBLAS starts a worker per core
// when it is loaded, and they spin for ~0.1 s, fighting the runtime's own
// threads in every process that only loads and runs models.
//
// Every matrix is row-major. The calls are valid only after spp_linalg_open()
// returned 0.
#ifndef SPP_LINALG_H
#define SPP_LINALG_H

/// Loads the libraries once (thread-safe); 0 on success, else -1 and
/// spp_linalg_error() says what is missing.
int spp_linalg_open(void);
const char *spp_linalg_error(void);

/// Threads OpenBLAS may use for the calls below.
void spp_linalg_set_threads(int n);

/// C = alpha op(A) op(B) + beta C (transA/transB: 0 or 1).
void spp_dgemm(int transA, int transB, int m, int n, int k, double alpha, const double *a, int lda,
               const double *b, int ldb, double beta, double *c, int ldc);
/// B ← R⁻¹ B for upper-triangular R [m×m], B [m×n].
void spp_dtrsm_upper(int m, int n, const double *r, int ldr, double *b, int ldb);
/// Upper triangle of C [n×n] ← alpha Aᵀ A + beta C, A [k×n].
void spp_ssyrk_upper_transposed(int n, int k, float alpha, const float *a, int lda, float beta, float *c, int ldc);
/// y = alpha A x + beta y, A [m×n].
void spp_sgemv(int m, int n, float alpha, const float *a, int lda, const float *x, float beta, float *y);

// LAPACK; each returns LAPACK's info (0: success).
/// Lower Cholesky factor in place.
int spp_dpotrf_lower(int n, double *a, int lda);
int spp_dgeqrf(int m, int n, double *a, int lda, double *tau);
int spp_dorgqr(int m, int n, int k, double *a, int lda, const double *tau);
/// Thin SVD (jobz 'S'): A [m×n] is destroyed; s [min], U [m×min], Vᵀ [min×n].
int spp_dgesdd_thin(int m, int n, double *a, int lda, double *s, double *u, int ldu, double *vt, int ldvt);
/// Solves A X = B for symmetric positive definite A (lower triangle used; A is overwritten by its factor).
int spp_dposv_lower(int n, int nrhs, double *a, int lda, double *b, int ldb);
/// Eigenvalues ascending in w, eigenvectors in A's columns (lower triangle read).
int spp_dsyevd_lower(int n, double *a, int lda, double *w);

#endif
