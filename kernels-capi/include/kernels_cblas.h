/* kernels_cblas.h — the BLAS interface of libkernels_capi (shared: libkernels_capi.so, static:
 * libkernels_capi.a). The declarations match the reference CBLAS (cblas.h) and the Fortran 77
 * BLAS as gfortran calls it, so a program written against either links unchanged. */
#ifndef KERNELS_CBLAS_H
#define KERNELS_CBLAS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CBLAS_H
typedef enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 } CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 } CBLAS_TRANSPOSE;
#endif

/* C <- alpha * op(A) * op(B) + beta * C, op(A) m x k, op(B) k x n, C m x n. Bad arguments are
 * reported through cblas_xerbla (position in this argument list), which a program may define. */
void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b,
                 int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc);

/* Fortran 77 SGEMM (column-major, arguments by reference, hidden character lengths last). Bad
 * arguments are reported through xerbla_, which a program may define. */
void sgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
            const float *alpha, const float *a, const int *lda, const float *b, const int *ldb,
            const float *beta, float *c, const int *ldc, size_t transa_len, size_t transb_len);

/* The default error handlers (replaceable by the program's own). */
void xerbla_(const char *srname, const int *info, size_t srname_len);
void cblas_xerbla(int p, const char *rout, const char *form, ...);

#ifdef __cplusplus
}
#endif

#endif
