/* XNOR-popcount kernels for binary Linear and Conv2d layers (XNOR-Net, Rastegari et al. 2016;
 * BNN, Hubara et al. 2016; the bit-serial dot product of FINN, Umuroglu et al. 2017).
 *
 * Bits: element k of a packed row is bit (k & 63) of word k >> 6; unused high bits of the last
 * word are zero on both sides, so they never differ. A +-1 dot product of K taps is
 * K - 2 * popcount(a XOR b). Inputs arrive as float32 and are binarised here with the layer's
 * threshold, exactly as the float simulation does it: bit = (x - shift >= 0) in float32.
 *
 * Conv2d (groups = 1) packs each output position's receptive field in (i, j, c) order (the
 * weight permuted to (O, kh, kw, C)); taps that fall into the zero padding are not +-1 values,
 * so they are left out of both the count and a validity mask: dot = n_valid - 2 *
 * popcount((a XOR b) AND valid), which is what the zero-padded float convolution computes.
 * Outputs are the integer dot products (int32); scaling and bias stay with the caller.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline int64_t popdiff(const uint64_t *a, const uint64_t *b, int64_t words) {
    int64_t pc = 0;
    for (int64_t t = 0; t < words; t++) pc += __builtin_popcountll(a[t] ^ b[t]);
    return pc;
}

static inline int64_t popdiff_masked(const uint64_t *a, const uint64_t *b, const uint64_t *m,
                                     int64_t words) {
    int64_t pc = 0;
    for (int64_t t = 0; t < words; t++) pc += __builtin_popcountll((a[t] ^ b[t]) & m[t]);
    return pc;
}

/* Pack 0/1 bytes (rows x k) into words (rows x ceil(k/64)). */
void dz_xnor_pack(const uint8_t *codes, int64_t rows, int64_t k, uint64_t *out) {
    int64_t words = (k + 63) >> 6;
    memset(out, 0, (size_t)(rows * words) * sizeof(uint64_t));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < k; j++)
            if (codes[r * k + j]) out[r * words + (j >> 6)] |= (uint64_t)1 << (j & 63);
}

/* x: (n, k) float32; w: (o, ceil(k/64)) packed; out: (n, o) int32. Returns 0, or -1 (memory). */
int dz_xnor_linear(const float *x, int64_t n, int64_t k, float shift, const uint64_t *w,
                   int64_t o, int32_t *out) {
    int64_t words = (k + 63) >> 6;
    uint64_t *a = (uint64_t *)malloc((size_t)(words > 0 ? words : 1) * sizeof(uint64_t));
    if (!a) return -1;
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * k;
        memset(a, 0, (size_t)words * sizeof(uint64_t));
        for (int64_t j = 0; j < k; j++)
            if (xi[j] - shift >= 0.0f) a[j >> 6] |= (uint64_t)1 << (j & 63);
        for (int64_t r = 0; r < o; r++)
            out[i * o + r] = (int32_t)(k - 2 * popdiff(a, w + r * words, words));
    }
    free(a);
    return 0;
}

static inline void append_bits(uint64_t *buf, int64_t off, uint64_t v, int64_t nbits) {
    int64_t w = off >> 6, b = off & 63;
    buf[w] |= v << b;
    if (b + nbits > 64) buf[w + 1] |= v >> (64 - b);  /* b > 0 here, as nbits <= 64 */
}

/* x: (n, c, h, w) float32; wt: (o, ceil(kh*kw*c/64)) packed in (i, j, c) order, i.e. the
 * weight permuted to (o, kh, kw, c); out: (n, o, oh, ow) int32. Each input pixel's c signs are
 * packed once per sample, so a receptive field is kh*kw appends of c bits. */
int dz_xnor_conv2d(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, float shift,
                   const uint64_t *wt, int64_t o, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                   int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t oh, int64_t ow,
                   int32_t *out) {
    int64_t k = c * kh * kw, words = (k + 63) >> 6, plane = oh * ow, hw = h * w;
    int64_t cw = (c + 63) >> 6;  /* words per pixel */
    size_t npix = (size_t)(hw > 0 ? hw : 1) * (size_t)(cw > 0 ? cw : 1);
    uint64_t *pix = (uint64_t *)malloc(npix * sizeof(uint64_t));
    uint64_t *patch = (uint64_t *)malloc((size_t)(words + 1) * sizeof(uint64_t));
    uint64_t *valid = (uint64_t *)malloc((size_t)(words + 1) * sizeof(uint64_t));
    if (!pix || !patch || !valid) { free(pix); free(patch); free(valid); return -1; }
    for (int64_t s = 0; s < n; s++) {
        const float *xs = x + s * c * hw;
        memset(pix, 0, npix * sizeof(uint64_t));
        for (int64_t ci = 0; ci < c; ci++) {
            const float *xc = xs + ci * hw;
            uint64_t bit = (uint64_t)1 << (ci & 63);
            int64_t word = ci >> 6;
            for (int64_t t = 0; t < hw; t++)
                if (xc[t] - shift >= 0.0f) pix[t * cw + word] |= bit;
        }
        int32_t *os = out + s * o * plane;
        for (int64_t oy = 0; oy < oh; oy++) {
            for (int64_t ox = 0; ox < ow; ox++) {
                int64_t y0 = oy * sh - ph, x0 = ox * sw - pw;
                int interior = y0 >= 0 && y0 + (kh - 1) * dh < h && x0 >= 0 &&
                               x0 + (kw - 1) * dw < w;
                memset(patch, 0, (size_t)(words + 1) * sizeof(uint64_t));
                int64_t off = 0, nvalid = k;
                if (interior && cw == 1) {  /* the common case: no padding, <= 64 channels */
                    for (int64_t i = 0; i < kh; i++) {
                        const uint64_t *row = pix + (y0 + i * dh) * w + x0;
                        for (int64_t j = 0; j < kw; j++, off += c)
                            append_bits(patch, off, row[j * dw], c);
                    }
                } else {
                    memset(valid, 0, (size_t)(words + 1) * sizeof(uint64_t));
                    nvalid = 0;
                    for (int64_t i = 0; i < kh; i++) {
                        int64_t yy = y0 + i * dh;
                        for (int64_t j = 0; j < kw; j++) {
                            int64_t xx = x0 + j * dw;
                            if (yy < 0 || yy >= h || xx < 0 || xx >= w) { off += c; continue; }
                            const uint64_t *px = pix + (yy * w + xx) * cw;
                            for (int64_t q = 0; q < cw; q++) {
                                int64_t nb = (q == cw - 1) ? c - 64 * q : 64;
                                uint64_t ones = nb == 64 ? ~(uint64_t)0 : (((uint64_t)1 << nb) - 1);
                                append_bits(patch, off, px[q], nb);
                                append_bits(valid, off, ones, nb);
                                off += nb;
                            }
                            nvalid += c;
                        }
                    }
                }
                int64_t p = oy * ow + ox;
                if (nvalid == k) {
                    for (int64_t r = 0; r < o; r++)
                        os[r * plane + p] = (int32_t)(k - 2 * popdiff(patch, wt + r * words, words));
                } else {
                    for (int64_t r = 0; r < o; r++)
                        os[r * plane + p] = (int32_t)(nvalid - 2 * popdiff_masked(
                            patch, wt + r * words, valid, words));
                }
            }
        }
    }
    free(pix); free(patch); free(valid);
    return 0;
}
