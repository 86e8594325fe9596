#include "linalg.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

// CBLAS and LAPACKE constants (cblas.h, lapacke.h): their values are part of the ABI.
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, UPPER = 121, LEFT = 141, NON_UNIT = 131 };

static struct {
    void (*set_threads)(int);
    void (*dgemm)(int, int, int, int, int, int, double, const double *, int, const double *, int, double, double *, int);
    void (*dtrsm)(int, int, int, int, int, int, int, double, const double *, int, double *, int);
    void (*ssyrk)(int, int, int, int, int, float, const float *, int, float, float *, int);
    void (*sgemv)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
    int (*dpotrf)(int, char, int, double *, int);
    int (*dgeqrf)(int, int, int, double *, int, double *);
    int (*dorgqr)(int, int, int, int, double *, int, const double *);
    int (*dgesdd)(int, char, int, int, double *, int, double *, double *, int, double *, int);
    int (*dposv)(int, char, int, int, double *, int, double *, int);
    int (*dsyevd)(int, char, char, int, double *, int, double *);
} f;

static int status = -1;
static char error_text[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void *symbol(void *library, const char *libraryName, const char *name) {
    void *p = library ? dlsym(library, name) : NULL;
    if (!p && !error_text[0]) snprintf(error_text, sizeof error_text, "%s lacks %s", libraryName, name);
    return p;
}

static void load(void) {
    void *blas = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!blas) {
        snprintf(error_text, sizeof error_text, "cannot load OpenBLAS (libopenblas.so.0; Debian: libopenblas0): %s", dlerror());
        return;
    }
    void *lapacke = dlopen("liblapacke.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!lapacke) {
        snprintf(error_text, sizeof error_text, "cannot load LAPACKE (liblapacke.so.3; Debian: liblapacke): %s", dlerror());
        return;
    }
    const char *b = "libopenblas.so.0", *l = "liblapacke.so.3";
    *(void **)&f.set_threads = symbol(blas, b, "openblas_set_num_threads");
    *(void **)&f.dgemm = symbol(blas, b, "cblas_dgemm");
    *(void **)&f.dtrsm = symbol(blas, b, "cblas_dtrsm");
    *(void **)&f.ssyrk = symbol(blas, b, "cblas_ssyrk");
    *(void **)&f.sgemv = symbol(blas, b, "cblas_sgemv");
    *(void **)&f.dpotrf = symbol(lapacke, l, "LAPACKE_dpotrf");
    *(void **)&f.dgeqrf = symbol(lapacke, l, "LAPACKE_dgeqrf");
    *(void **)&f.dorgqr = symbol(lapacke, l, "LAPACKE_dorgqr");
    *(void **)&f.dgesdd = symbol(lapacke, l, "LAPACKE_dgesdd");
    *(void **)&f.dposv = symbol(lapacke, l, "LAPACKE_dposv");
    *(void **)&f.dsyevd = symbol(lapacke, l, "LAPACKE_dsyevd");
    if (!error_text[0]) status = 0;
}

int spp_linalg_open(void) {
    pthread_once(&once, load);
    return status;
}

const char *spp_linalg_error(void) { return error_text; }

void spp_linalg_set_threads(int n) { f.set_threads(n); }

void spp_dgemm(int transA, int transB, int m, int n, int k, double alpha, const double *a, int lda,
               const double *b, int ldb, double beta, double *c, int ldc) {
    f.dgemm(ROW_MAJOR, transA ? TRANS : NO_TRANS, transB ? TRANS : NO_TRANS, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void spp_dtrsm_upper(int m, int n, const double *r, int ldr, double *b, int ldb) {
    f.dtrsm(ROW_MAJOR, LEFT, UPPER, NO_TRANS, NON_UNIT, m, n, 1, r, ldr, b, ldb);
}

void spp_ssyrk_upper_transposed(int n, int k, float alpha, const float *a, int lda, float beta, float *c, int ldc) {
    f.ssyrk(ROW_MAJOR, UPPER, TRANS, n, k, alpha, a, lda, beta, c, ldc);
}

void spp_sgemv(int m, int n, float alpha, const float *a, int lda, const float *x, float beta, float *y) {
    f.sgemv(ROW_MAJOR, NO_TRANS, m, n, alpha, a, lda, x, 1, beta, y, 1);
}

int spp_dpotrf_lower(int n, double *a, int lda) { return f.dpotrf(ROW_MAJOR, 'L', n, a, lda); }

int spp_dgeqrf(int m, int n, double *a, int lda, double *tau) { return f.dgeqrf(ROW_MAJOR, m, n, a, lda, tau); }

int spp_dorgqr(int m, int n, int k, double *a, int lda, const double *tau) { return f.dorgqr(ROW_MAJOR, m, n, k, a, lda, tau); }

int spp_dgesdd_thin(int m, int n, double *a, int lda, double *s, double *u, int ldu, double *vt, int ldvt) {
    return f.dgesdd(ROW_MAJOR, 'S', m, n, a, lda, s, u, ldu, vt, ldvt);
}

int spp_dposv_lower(int n, int nrhs, double *a, int lda, double *b, int ldb) { return f.dposv(ROW_MAJOR, 'L', n, nrhs, a, lda, b, ldb); }

int spp_dsyevd_lower(int n, double *a, int lda, double *w) { return f.dsyevd(ROW_MAJOR, 'V', 'L', n, a, lda, w); }
