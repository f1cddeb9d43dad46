/* Products checked against double-precision loops, shared by the test programs. */
#ifndef PRODUCTS_H
#define PRODUCTS_H

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels_cblas.h"

static float value(int i, int j) { return (float)((i * 7 + j * 13) % 17) / 16.0f - 0.5f; }

/* C = A·B for m×k · k×n row-major, then compares every element with a double-precision loop. */
static int product_is_right(int m, int k, int n)
{
    float *a = calloc((size_t)m * k, sizeof(float)), *b = calloc((size_t)k * n, sizeof(float)),
          *c = calloc((size_t)m * n, sizeof(float));
    for (int i = 0; i < m; i++)
        for (int p = 0; p < k; p++) a[i * k + p] = value(i, p);
    for (int p = 0; p < k; p++)
        for (int j = 0; j < n; j++) b[p * n + j] = value(p + 3, j);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    int ok = 1;
    for (int i = 0; i < m && ok; i++)
        for (int j = 0; j < n && ok; j++) {
            double want = 0.0, scale = 0.0;
            for (int p = 0; p < k; p++) {
                want += (double)a[i * k + p] * b[p * n + j];
                scale += (double)(a[i * k + p] < 0 ? -a[i * k + p] : a[i * k + p]);
            }
            double err = c[i * n + j] - want;
            if (err < 0) err = -err;
            if (err > 1e-5 * (scale + 1.0)) ok = 0;
        }
    free(a), free(b), free(c);
    return ok;
}

static int all_kinds(void)
{
    return product_is_right(300, 300, 300)    /* split among threads */
           && product_is_right(16, 16, 16)    /* small, in place */
           && product_is_right(2000, 700, 1)  /* one column */
           && product_is_right(1, 700, 2000); /* one row */
}

/* Runs products of every kind, twice, in a forked child (killed by its alarm if it hangs);
 * returns whether the child finished with right answers. */
static int all_kinds_in_a_child(void)
{
    pid_t child = fork();
    if (child == 0) {
        alarm(60);
        _exit(all_kinds() && all_kinds() ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

#endif
