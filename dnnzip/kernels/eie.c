/* EIE's sparse matrix x sparse vector product (Han et al. 2016, survey ref. [37]): a pruned,
 * weight-shared Linear layer stored column by column (CSC) with one codebook index per entry.
 * For every sample, only the columns j whose input x_j is non-zero are visited (ReLU makes most
 * of them zero), and each entry is decoded through the codebook when it is used:
 *     y[rows[e]] += x_j * codebook[codes[e]]   for e in col_ptr[j] .. col_ptr[j+1]
 * then the bias is added. Accumulation is float32 in column order, like EIE's PEs (which use
 * 16-bit fixed point); the caller checks col_ptr, rows and codes once when it builds the layer.
 *
 * EIE multiplies one activation vector at a time. For a batch of n >= 4 samples the kernel
 * transposes x so that one decoded weight updates all n samples with one vector loop
 * (y^T[r, :] += w * x^T[j, :]); a column is skipped when it is zero for every sample. The sum
 * order per output is the same column order, so both paths give the same floats (up to the sign
 * of a zero). Returns 0, or -1 if the batch buffers cannot be allocated.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EIE_KERNEL(NAME, CODE_T)                                                             \
static int NAME##_batch(const float *x, int64_t n, int64_t in_f, int64_t out_f,              \
                        const int64_t *col_ptr, const int32_t *rows, const CODE_T *codes,     \
                        const float *codebook, const float *bias, float *y) {                 \
    float *xt = (float *)malloc((size_t)(in_f * n) * sizeof(float));                          \
    float *yt = (float *)calloc((size_t)(out_f * n), sizeof(float));                          \
    uint8_t *live = (uint8_t *)calloc((size_t)in_f, 1);                                        \
    if (!xt || !yt || !live) { free(xt); free(yt); free(live); return -1; }                   \
    for (int64_t s = 0; s < n; s++)                                                          \
        for (int64_t j = 0; j < in_f; j++) {                                                 \
            float v = x[s * in_f + j];                                                       \
            xt[j * n + s] = v;                                                               \
            live[j] |= v != 0.0f;                                                            \
        }                                                                                    \
    for (int64_t j = 0; j < in_f; j++) {                                                     \
        if (!live[j]) continue;                                                              \
        const float *restrict xj = xt + j * n;                                               \
        for (int64_t e = col_ptr[j]; e < col_ptr[j + 1]; e++) {                              \
            float w = codebook[codes[e]];                                                    \
            float *restrict yr = yt + (int64_t)rows[e] * n;                                  \
            for (int64_t s = 0; s < n; s++) yr[s] += xj[s] * w;                              \
        }                                                                                    \
    }                                                                                        \
    for (int64_t s = 0; s < n; s++)                                                          \
        for (int64_t r = 0; r < out_f; r++)                                                  \
            y[s * out_f + r] = yt[r * n + s] + (bias ? bias[r] : 0.0f);                      \
    free(xt); free(yt); free(live);                                                          \
    return 0;                                                                                \
}                                                                                            \
int NAME(const float *x, int64_t n, int64_t in_f, int64_t out_f, const int64_t *col_ptr,     \
         const int32_t *rows, const CODE_T *codes, const float *codebook, const float *bias,  \
         float *y) {                                                                         \
    if (n >= 4)                                                                              \
        return NAME##_batch(x, n, in_f, out_f, col_ptr, rows, codes, codebook, bias, y);     \
    for (int64_t s = 0; s < n; s++) {                                                        \
        const float *xs = x + s * in_f;                                                      \
        float *ys = y + s * out_f;                                                           \
        memset(ys, 0, (size_t)out_f * sizeof(float));                                        \
        for (int64_t j = 0; j < in_f; j++) {                                                 \
            float xj = xs[j];                                                                \
            if (xj == 0.0f) continue;                                                        \
            for (int64_t e = col_ptr[j]; e < col_ptr[j + 1]; e++)                            \
                ys[rows[e]] += xj * codebook[codes[e]];                                      \
        }                                                                                    \
        if (bias)                                                                            \
            for (int64_t r = 0; r < out_f; r++) ys[r] += bias[r];                            \
    }                                                                                        \
    return 0;                                                                                \
}

EIE_KERNEL(dz_eie_u8, uint8_t)
EIE_KERNEL(dz_eie_u16, uint16_t)
