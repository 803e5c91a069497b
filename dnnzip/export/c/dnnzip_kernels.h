/* dnnzip C99 kernels: one sample at a time, float32, NCHW (NCL for 1-D), no allocation.
 * Loops keep the innermost index over outputs so compilers vectorize them without
 * reassociating sums (no -ffast-math needed). */
#ifndef DNNZIP_KERNELS_H
#define DNNZIP_KERNELS_H
#include <math.h>
#include <string.h>

/* out[o] = b[o] + sum_i wt[i*O + o] * x[i]  (wt is the transposed weight, I x O), per row */
static void dz_linear(const float *x, int rows, int I, int O, const float *wt, const float *b,
                      float *out) {
    for (int r = 0; r < rows; ++r) {
        const float *xr = x + (long)r * I;
        float *yr = out + (long)r * O;
        for (int o = 0; o < O; ++o) yr[o] = b ? b[o] : 0.0f;
        for (int i = 0; i < I; ++i) {
            const float xi = xr[i];
            if (xi == 0.0f) continue;
            const float *wi = wt + (long)i * O;
            for (int o = 0; o < O; ++o) yr[o] += wi[o] * xi;
        }
    }
}

/* 2-D convolution with groups, stride, zero padding and dilation; w is (Co, Ci/g, KH, KW). */
static void dz_conv2d(const float *x, int C, int H, int W, const float *w, const float *b,
                      int Co, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                      int G, float *out, int Ho, int Wo) {
    const int cig = C / G, cog = Co / G;
    for (int co = 0; co < Co; ++co) {
        float *y = out + (long)co * Ho * Wo;
        const float bias = b ? b[co] : 0.0f;
        for (int k = 0; k < Ho * Wo; ++k) y[k] = bias;
        const int g = co / cog;
        for (int ci = 0; ci < cig; ++ci) {
            const float *xc = x + (long)(g * cig + ci) * H * W;
            for (int kh = 0; kh < KH; ++kh) {
                for (int kw = 0; kw < KW; ++kw) {
                    const float wv = w[(((long)co * cig + ci) * KH + kh) * KW + kw];
                    if (wv == 0.0f) continue;
                    const int off = kw * DW - PW;
                    int lo = 0, hi = Wo;  /* ow range with 0 <= ow * SW + off < W */
                    while (lo < Wo && lo * SW + off < 0) ++lo;
                    while (hi > lo && (hi - 1) * SW + off >= W) --hi;
                    for (int oh = 0; oh < Ho; ++oh) {
                        const int ih = oh * SH - PH + kh * DH;
                        if (ih < 0 || ih >= H) continue;
                        const float *xr = xc + (long)ih * W;
                        float *yr = y + (long)oh * Wo;
                        if (SW == 1) {
                            for (int ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow + off];
                        } else {
                            for (int ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow * SW + off];
                        }
                    }
                }
            }
        }
    }
}

/* per-channel affine (BatchNorm in eval mode folded to scale/shift) */
static void dz_affine(const float *x, int C, int HW, const float *scale, const float *shift,
                      float *out) {
    for (int c = 0; c < C; ++c)
        for (int k = 0; k < HW; ++k)
            out[(long)c * HW + k] = x[(long)c * HW + k] * scale[c] + shift[c];
}

static void dz_relu(const float *x, long n, float *out) {
    for (long k = 0; k < n; ++k) out[k] = x[k] > 0.0f ? x[k] : 0.0f;
}

static void dz_relu6(const float *x, long n, float *out) {
    for (long k = 0; k < n; ++k) out[k] = x[k] < 0.0f ? 0.0f : (x[k] > 6.0f ? 6.0f : x[k]);
}

static void dz_sigmoid(const float *x, long n, float *out) {
    for (long k = 0; k < n; ++k) out[k] = 1.0f / (1.0f + expf(-x[k]));
}

static void dz_tanh(const float *x, long n, float *out) {
    for (long k = 0; k < n; ++k) out[k] = tanhf(x[k]);
}

static void dz_add(const float *a, const float *b, long n, float *out) {
    for (long k = 0; k < n; ++k) out[k] = a[k] + b[k];
}

/* max (mode 0) or average (mode 1, padding counted like torch's count_include_pad=True) */
static void dz_pool2d(const float *x, int C, int H, int W, int KH, int KW, int SH, int SW,
                      int PH, int PW, int mode, float *out, int Ho, int Wo) {
    for (int c = 0; c < C; ++c) {
        const float *xc = x + (long)c * H * W;
        for (int oh = 0; oh < Ho; ++oh) {
            for (int ow = 0; ow < Wo; ++ow) {
                float acc = mode == 0 ? -INFINITY : 0.0f;
                for (int kh = 0; kh < KH; ++kh) {
                    const int ih = oh * SH - PH + kh;
                    if (ih < 0 || ih >= H) continue;
                    for (int kw = 0; kw < KW; ++kw) {
                        const int iw = ow * SW - PW + kw;
                        if (iw < 0 || iw >= W) continue;
                        const float v = xc[(long)ih * W + iw];
                        if (mode == 0) { if (v > acc) acc = v; } else acc += v;
                    }
                }
                out[((long)c * Ho + oh) * Wo + ow] = mode == 0 ? acc : acc / (float)(KH * KW);
            }
        }
    }
}

static void dz_global_avg(const float *x, int C, int HW, float *out) {
    for (int c = 0; c < C; ++c) {
        float s = 0.0f;
        for (int k = 0; k < HW; ++k) s += x[(long)c * HW + k];
        out[c] = s / (float)HW;
    }
}

#endif
