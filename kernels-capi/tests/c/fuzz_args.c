/* Random calls over the argument space of cblas_sgemm and sgemm_: orders, transposes (valid and
 * not), sizes from -2 to 40, leading dimensions one below their minimum, at it and above, alpha
 * and beta among 0, 1 and others, C full of NaN when beta = 0 (which must not read it). Each
 * call is checked:
 *  - a bad argument: the handler (this program's own xerbla_ / cblas_xerbla, which record and
 *    return) reports the first bad argument's position, and C is untouched;
 *  - valid arguments: C against a double-precision product, and nothing written outside C's
 *    elements nor into A or B (guard values around and between the matrices' columns).
 * Usage: fuzz_args [cases [seed]]; prints "N passed, M failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_cblas.h"

void sgemm_(const char *, const char *, const int *, const int *, const int *, const float *,
            const float *, const int *, const float *, const int *, const float *, float *,
            const int *, size_t, size_t);

static int reported = 0;

void cblas_xerbla(int p, const char *rout, const char *form, ...)
{
    (void)rout, (void)form;
    reported = p;
}

void xerbla_(const char *name, const int *info, size_t len)
{
    (void)name, (void)len;
    reported = *info;
}

static unsigned long long state;

static unsigned next(unsigned n)
{
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(state >> 33) % n;
}

static const float GUARD = 12345.0f;

/* A size: mostly small valid ones, sometimes negative. */
static int size(void) { return next(10) == 0 ? -(int)next(3) : (int)next(41); }

/* A leading dimension around `min`: one below it (when that is still positive), at it, above. */
static int ld_near(int min)
{
    switch (next(6)) {
    case 0: return min - 1;
    case 1: return 0;
    case 2: case 3: return min;
    default: return min + (int)next(5);
    }
}

static float scalar(void)
{
    static const float values[] = {0.0f, 1.0f, -0.5f, 2.0f, 0.25f};
    return values[next(5)];
}

/* Element (i, j) of a matrix stored with leading dimension ld, column-major when `col`. */
static size_t at(int col, int i, int j, int ld) { return col ? (size_t)j * ld + i : (size_t)i * ld + j; }

/* One call; returns 1 when it behaved. */
static int one_case(int fortran)
{
    int col = fortran ? 1 : next(2);
    int order = col ? CblasColMajor : CblasRowMajor;
    if (!fortran && next(25) == 0) order = 100 + (int)next(5) * 3; /* mostly invalid */
    int ta = next(3), tb = next(3);                                 /* N, T, C */
    int bad_ta = next(25) == 0, bad_tb = next(25) == 0;
    int m = size(), n = size(), k = size();
    int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    /* The minimum leading dimension: stored rows (column-major) or columns (row-major). */
    int min_a = (col ? ar : ac) > 1 ? (col ? ar : ac) : 1;
    int min_b = (col ? br : bc) > 1 ? (col ? br : bc) : 1;
    int min_c = (col ? m : n) > 1 ? (col ? m : n) : 1;
    int lda = ld_near(min_a), ldb = ld_near(min_b), ldc = ld_near(min_c);
    float alpha = scalar(), beta = scalar();
    int expect;
    if (fortran) {
        expect = bad_ta ? 1 : bad_tb ? 2 : m < 0 ? 3 : n < 0 ? 4 : k < 0 ? 5 : lda < min_a ? 8
                 : ldb < min_b ? 10 : ldc < min_c ? 13 : 0;
    } else {
        int order_ok = order == CblasRowMajor || order == CblasColMajor;
        expect = !order_ok ? 1 : bad_ta ? 2 : bad_tb ? 3 : m < 0 ? 4 : n < 0 ? 5 : k < 0 ? 6
                 : lda < min_a ? 9 : ldb < min_b ? 11 : ldc < min_c ? 14 : 0;
    }
    /* Storage: every matrix in its own buffer with guard values after it; the gaps between
     * stored rows or columns (ld above the minimum) hold guards too. */
    int rows_a = ar > 0 ? ar : 0, cols_a = ac > 0 ? ac : 0;
    int rows_b = br > 0 ? br : 0, cols_b = bc > 0 ? bc : 0;
    int rows_c = m > 0 ? m : 0, cols_c = n > 0 ? n : 0;
    size_t la = (size_t)(lda > 0 ? lda : 1) * (col ? (cols_a > 0 ? cols_a : 1) : (rows_a > 0 ? rows_a : 1)) + 8;
    size_t lb = (size_t)(ldb > 0 ? ldb : 1) * (col ? (cols_b > 0 ? cols_b : 1) : (rows_b > 0 ? rows_b : 1)) + 8;
    size_t lc = (size_t)(ldc > 0 ? ldc : 1) * (col ? (cols_c > 0 ? cols_c : 1) : (rows_c > 0 ? rows_c : 1)) + 8;
    float *a = malloc(la * sizeof(float)), *b = malloc(lb * sizeof(float)), *c = malloc(lc * sizeof(float));
    float *a0 = malloc(la * sizeof(float)), *b0 = malloc(lb * sizeof(float)), *c0 = malloc(lc * sizeof(float));
    for (size_t i = 0; i < la; i++) a[i] = GUARD;
    for (size_t i = 0; i < lb; i++) b[i] = GUARD;
    for (size_t i = 0; i < lc; i++) c[i] = GUARD;
    if (expect == 0) {
        for (int i = 0; i < rows_a; i++)
            for (int j = 0; j < cols_a; j++) a[at(col, i, j, lda)] = (float)next(17) / 8.0f - 1.0f;
        for (int i = 0; i < rows_b; i++)
            for (int j = 0; j < cols_b; j++) b[at(col, i, j, ldb)] = (float)next(17) / 8.0f - 1.0f;
        for (int i = 0; i < rows_c; i++)
            for (int j = 0; j < cols_c; j++)
                c[at(col, i, j, ldc)] = beta == 0.0f ? NAN : (float)next(17) / 8.0f - 1.0f;
    }
    memcpy(a0, a, la * sizeof(float));
    memcpy(b0, b, lb * sizeof(float));
    memcpy(c0, c, lc * sizeof(float));
    static const char flags[] = "NTC", bad_flags[] = "XZ?";
    reported = 0;
    if (fortran) {
        char fa = bad_ta ? bad_flags[next(3)] : flags[ta], fb = bad_tb ? bad_flags[next(3)] : flags[tb];
        if (next(2)) fa = (char)(fa | 0x20), fb = (char)(fb | 0x20); /* lower case is valid */
        sgemm_(&fa, &fb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc, 1, 1);
    } else {
        int cta = bad_ta ? 114 + (int)next(5) : CblasNoTrans + ta;
        int ctb = bad_tb ? 110 - (int)next(5) : CblasNoTrans + tb;
        cblas_sgemm(order, cta, ctb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
    int ok = reported == expect;
    if (memcmp(a, a0, la * sizeof(float)) || memcmp(b, b0, lb * sizeof(float))) ok = 0;
    if (expect != 0) {
        if (memcmp(c, c0, lc * sizeof(float))) ok = 0;
    } else {
        for (size_t q = 0; q < lc && ok; q++) {
            /* Which element of C (if any) this position holds. */
            size_t major = q / (size_t)ldc, minor = q % (size_t)ldc;
            int i = col ? (int)minor : (int)major, j = col ? (int)major : (int)minor;
            int inside = i < rows_c && j < cols_c && (col ? minor < (size_t)rows_c : minor < (size_t)cols_c);
            if (!inside) {
                if (c[q] != GUARD) ok = 0;
                continue;
            }
            double want = beta == 0.0f ? 0.0 : (double)beta * c0[q], scale = 1.0;
            if (alpha != 0.0f)
                for (int p = 0; p < k; p++) {
                    double x = ta ? a0[at(col, p, i, lda)] : a0[at(col, i, p, lda)];
                    double y = tb ? b0[at(col, j, p, ldb)] : b0[at(col, p, j, ldb)];
                    want += alpha * x * y;
                    scale += fabs(alpha * x * y);
                }
            if (!(fabs(c[q] - want) <= 1e-5 * scale)) ok = 0;
        }
    }
    if (!ok)
        printf("%s order %d ta %d%s tb %d%s m %d n %d k %d lda %d ldb %d ldc %d alpha %g beta %g:"
               " reported %d, expected %d\n", fortran ? "sgemm_" : "cblas_sgemm", order, ta,
               bad_ta ? "(bad)" : "", tb, bad_tb ? "(bad)" : "", m, n, k, lda, ldb, ldc, alpha,
               beta, reported, expect);
    free(a), free(b), free(c), free(a0), free(b0), free(c0);
    return ok;
}

int main(int argc, char **argv)
{
    int cases = argc > 1 ? atoi(argv[1]) : 4000;
    state = argc > 2 ? strtoull(argv[2], NULL, 10) : 20261201ULL;
    int passed = 0, failed = 0;
    for (int i = 0; i < cases; i++) {
        if (one_case(i % 2)) passed++; else failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
