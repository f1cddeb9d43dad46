/* Links libkernels_capi and checks cblas_sgemm and sgemm_ against a double-precision reference
 * over layouts, transposes, shapes, padded leading dimensions and alpha/beta, plus the BLAS
 * rules (beta = 0 ignores NaN in C; alpha = 0 ignores NaN in A and B) and the error exits
 * through this program's own xerbla_ and cblas_xerbla. Prints "N passed, M failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels_cblas.h"

static int passed, failed;
static int last_info = -1, last_p = -1;
static char last_name[16];

/* Our handlers replace the library's defaults, as the reference BLAS allows. */
void xerbla_(const char *srname, const int *info, size_t len)
{
    size_t n = len < 15 ? len : 15;
    memcpy(last_name, srname, n);
    last_name[n] = 0;
    last_info = *info;
}

void cblas_xerbla(int p, const char *rout, const char *form, ...)
{
    (void)form;
    snprintf(last_name, sizeof last_name, "%s", rout);
    last_p = p;
}

static void check(int ok, const char *what)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAILED: %s\n", what);
    }
}

static float rnd(void) { return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f; }

/* Element (i, j) of a matrix stored in `order` with leading dimension ld. */
static size_t at(int row_major, int i, int j, int ld) { return row_major ? (size_t)i * ld + j : (size_t)j * ld + i; }

static void one_case(int row_major, int ta, int tb, int m, int n, int k, float alpha, float beta, int pad, int fortran)
{
    int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    int lda = (row_major ? ac : ar) + pad, ldb = (row_major ? bc : br) + pad, ldc = (row_major ? n : m) + pad;
    if (lda < 1) lda = 1;
    if (ldb < 1) ldb = 1;
    if (ldc < 1) ldc = 1;
    size_t sa = (size_t)(row_major ? ar : ac) * lda + 1, sb = (size_t)(row_major ? br : bc) * ldb + 1;
    size_t sc = (size_t)(row_major ? m : n) * ldc + 1;
    float *a = malloc(sa * sizeof *a), *b = malloc(sb * sizeof *b), *c = malloc(sc * sizeof *c), *c0 = malloc(sc * sizeof *c);
    for (size_t i = 0; i < sa; i++) a[i] = alpha == 0.0f ? NAN : rnd();
    for (size_t i = 0; i < sb; i++) b[i] = alpha == 0.0f ? NAN : rnd();
    for (size_t i = 0; i < sc; i++) c0[i] = c[i] = beta == 0.0f ? NAN : rnd();
    if (fortran) {
        char tra = ta ? 'T' : 'N', trb = tb ? 't' : 'n';
        sgemm_(&tra, &trb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc, 1, 1);
    } else {
        cblas_sgemm(row_major ? CblasRowMajor : CblasColMajor, ta ? CblasTrans : CblasNoTrans,
                    tb ? CblasConjTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    int ok = 1;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double s = 0.0, abs_s = 0.0;
            if (alpha != 0.0f) {
                for (int p = 0; p < k; p++) {
                    double x = ta ? a[at(row_major, p, i, lda)] : a[at(row_major, i, p, lda)];
                    double y = tb ? b[at(row_major, j, p, ldb)] : b[at(row_major, p, j, ldb)];
                    s += x * y;
                    abs_s += fabs(x * y);
                }
            }
            double old = beta == 0.0f ? 0.0 : c0[at(row_major, i, j, ldc)];
            double want = alpha * s + beta * old;
            double bound = 2.0 * (k + 2) * 5.96e-8 * (fabs(alpha) * abs_s + fabs(beta * old)) + 1e-30;
            double got = c[at(row_major, i, j, ldc)];
            if (!(fabs(got - want) <= bound)) ok = 0;
        }
    }
    char what[160];
    snprintf(what, sizeof what, "%s %s ta=%d tb=%d m=%d n=%d k=%d alpha=%g beta=%g pad=%d",
             fortran ? "sgemm_" : "cblas_sgemm", row_major ? "row" : "col", ta, tb, m, n, k, alpha, beta, pad);
    check(ok, what);
    free(a); free(b); free(c); free(c0);
}

int main(void)
{
    static const int dims[] = {0, 1, 2, 7, 33, 130};
    static const float alphas[] = {1.0f, -0.5f, 0.0f};
    static const float betas[] = {0.0f, 1.0f, 0.75f};
    srand(7);
    for (int fortran = 0; fortran < 2; fortran++)
        for (int row_major = 0; row_major < 2 - fortran; row_major++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    for (int d = 0; d < 6; d++)
                        for (int e = 0; e < 3; e++) {
                            int m = dims[d], n = dims[(d + e + 1) % 6], k = dims[(d + 2 * e + 2) % 6];
                            one_case(row_major, ta, tb, m, n, k, alphas[e], betas[(d + e) % 3], (d + e) % 3, fortran);
                        }

    /* Error exits of sgemm_: position as the reference reports it, and C untouched. */
    float a[16] = {0}, b[16] = {0}, c[16], one = 1.0f;
    int two = 2, neg = -1, one_i = 1;
    struct { const char *ta, *tb; const int *m, *n, *k, *lda, *ldb, *ldc; int info; } f77[] = {
        {"X", "N", &two, &two, &two, &two, &two, &two, 1},
        {"N", "?", &two, &two, &two, &two, &two, &two, 2},
        {"N", "N", &neg, &two, &two, &two, &two, &two, 3},
        {"N", "N", &two, &neg, &two, &two, &two, &two, 4},
        {"N", "N", &two, &two, &neg, &two, &two, &two, 5},
        {"N", "N", &two, &two, &two, &one_i, &two, &two, 8},
        {"N", "N", &two, &two, &two, &two, &one_i, &two, 10},
        {"N", "N", &two, &two, &two, &two, &two, &one_i, 13},
    };
    for (size_t t = 0; t < sizeof f77 / sizeof f77[0]; t++) {
        for (int i = 0; i < 16; i++) c[i] = 42.0f;
        last_info = -1;
        sgemm_(f77[t].ta, f77[t].tb, f77[t].m, f77[t].n, f77[t].k, &one, a, f77[t].lda, b, f77[t].ldb, &one, c, f77[t].ldc, 1, 1);
        char what[96];
        snprintf(what, sizeof what, "sgemm_ error exit %d (got %d, %s)", f77[t].info, last_info, last_name);
        check(last_info == f77[t].info && strcmp(last_name, "SGEMM ") == 0 && c[0] == 42.0f, what);
    }
    /* Error exits of cblas_sgemm: positions in its own argument list. */
    struct { int order, ta, tb, m, n, k, lda, ldb, ldc, p; } cb[] = {
        {100, CblasNoTrans, CblasNoTrans, 2, 2, 2, 2, 2, 2, 1},
        {CblasRowMajor, 110, CblasNoTrans, 2, 2, 2, 2, 2, 2, 2},
        {CblasRowMajor, CblasNoTrans, 114, 2, 2, 2, 2, 2, 2, 3},
        {CblasRowMajor, CblasNoTrans, CblasNoTrans, -1, 2, 2, 2, 2, 2, 4},
        {CblasColMajor, CblasNoTrans, CblasNoTrans, 2, -1, 2, 2, 2, 2, 5},
        {CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, -1, 2, 2, 2, 6},
        {CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 3, 3, 2, 3, 3, 9},  /* row-major A 2x3: lda >= 3 */
        {CblasColMajor, CblasNoTrans, CblasNoTrans, 3, 2, 2, 3, 1, 3, 11}, /* col-major B 2x2: ldb >= 2 */
        {CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 3, 2, 2, 3, 2, 14}, /* row-major C 2x3: ldc >= 3 */
    };
    for (size_t t = 0; t < sizeof cb / sizeof cb[0]; t++) {
        for (int i = 0; i < 16; i++) c[i] = 42.0f;
        last_p = -1;
        cblas_sgemm(cb[t].order, cb[t].ta, cb[t].tb, cb[t].m, cb[t].n, cb[t].k, 1.0f, a, cb[t].lda, b, cb[t].ldb, 1.0f, c, cb[t].ldc);
        char what[96];
        snprintf(what, sizeof what, "cblas_sgemm error exit %d (got %d, %s)", cb[t].p, last_p, last_name);
        check(last_p == cb[t].p && strcmp(last_name, "cblas_sgemm") == 0 && c[0] == 42.0f, what);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
