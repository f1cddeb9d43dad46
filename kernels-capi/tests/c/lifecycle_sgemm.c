/* The C interface through a process's life, where programs call it in ways a BLAS must survive:
 *  1. fork() while another thread is inside a product (the GEMM's helpers taken), then products
 *     in the child, which has only the forking thread;
 *  2. products from a thread's pthread-key destructor, after the thread's own thread-local
 *     storage is gone (glibc destroys that first);
 *  3. products from an atexit handler;
 *  4. C passed as A or B (forbidden by BLAS): the product as written, from a copy.
 * Each check prints one line; main prints "N passed, M failed"; the atexit handler prints
 * "atexit: right" (or exits with status 3). A child that hangs is killed by its alarm. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "products.h"

static volatile int stop_busy = 0;

static void *busy_products(void *arg)
{
    (void)arg;
    while (!stop_busy) product_is_right(400, 300, 400);
    return NULL;
}

static int fork_while_busy(void)
{
    pthread_t busy;
    pthread_create(&busy, NULL, busy_products, NULL);
    usleep(20000);
    int ok = all_kinds_in_a_child();
    stop_busy = 1;
    pthread_join(busy, NULL);
    return ok;
}

static pthread_key_t key;
static volatile int destructor_result = -1;

static void products_in_destructor(void *value)
{
    (void)value;
    destructor_result = all_kinds();
}

static void *thread_with_key(void *first_product)
{
    if (first_product) product_is_right(300, 300, 300);
    pthread_setspecific(key, (void *)1);
    return NULL;
}

static int products_in_key_destructor(int first_product)
{
    pthread_t t;
    destructor_result = -1;
    pthread_create(&t, NULL, thread_with_key, first_product ? (void *)1 : NULL);
    pthread_join(t, NULL);
    return destructor_result == 1;
}

static void products_at_exit(void)
{
    if (!all_kinds()) _exit(3);
    printf("atexit: right\n");
}

/* C = alpha·A·B + beta·C where C shares storage with A (which = 0) or B (which = 1): the shared
 * operand starts `shift` elements after C (before it when negative); checked against the
 * product of copies taken before the call. */
static int aliased_product_is_right(int which, int n, int shift, float beta)
{
    int gap = shift < 0 ? -shift : shift, len = n * n + gap;
    float *buf = malloc(sizeof(float) * len), *other = malloc(sizeof(float) * n * n);
    for (int i = 0; i < len; i++) buf[i] = value(i / n, i % n);
    for (int i = 0; i < n * n; i++) other[i] = value(i % n + 5, i / n);
    float *shared = shift < 0 ? buf : buf + gap, *c = shift < 0 ? buf + gap : buf;
    float *a = which == 0 ? shared : other, *b = which == 0 ? other : shared;
    float *a0 = malloc(sizeof(float) * n * n), *b0 = malloc(sizeof(float) * n * n),
          *c0 = malloc(sizeof(float) * n * n);
    memcpy(a0, a, sizeof(float) * n * n);
    memcpy(b0, b, sizeof(float) * n * n);
    memcpy(c0, c, sizeof(float) * n * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, beta, c, n);
    int ok = 1;
    for (int i = 0; i < n && ok; i++)
        for (int j = 0; j < n && ok; j++) {
            double want = beta * (double)c0[i * n + j], scale = 1.0;
            for (int p = 0; p < n; p++) {
                want += (double)a0[i * n + p] * b0[p * n + j];
                scale += a0[i * n + p] < 0 ? -a0[i * n + p] : a0[i * n + p];
            }
            double err = c[i * n + j] - want;
            if (err < 0) err = -err;
            if (err > 1e-5 * scale) ok = 0;
        }
    free(buf), free(other), free(a0), free(b0), free(c0);
    return ok;
}

static int passed = 0, failed = 0;

static void check(int ok, const char *what)
{
    printf("%s: %s\n", what, ok ? "right" : "WRONG");
    if (ok) passed++; else failed++;
}

int main(void)
{
    pthread_key_create(&key, products_in_destructor);
    atexit(products_at_exit);
    check(all_kinds(), "products");
    check(fork_while_busy(), "fork while another thread is in a product");
    check(products_in_key_destructor(1), "products in a key destructor (after products)");
    check(products_in_key_destructor(0), "products in a key destructor (first use)");
    check(aliased_product_is_right(0, 1000, 0, 0.0f), "C = A, 1000");
    check(aliased_product_is_right(1, 1000, 0, 1.0f), "C = B, beta 1, 1000");
    check(aliased_product_is_right(0, 600, 6000, 0.0f), "C before A, 600");
    check(aliased_product_is_right(1, 600, -6000, 0.5f), "C after B, 600");
    check(aliased_product_is_right(0, 37, 5, 0.5f), "C before A, 37");
    check(aliased_product_is_right(1, 16, 3, 0.0f), "C before B, 16");
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
