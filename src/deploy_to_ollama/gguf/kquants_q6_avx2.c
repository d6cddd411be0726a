/* Q6_K with AVX2, bit-identical to ggml's quantize_row_q6_K_ref (see kquants_avx2.c). */
#include "kquants_lanes.h"

/*
 * Q6_K: 16 sub-blocks of 16 values per super-block, each searched by ggml's make_qx_quants
 * (nmax 32, weights x*x, 19 trial scales); here 8 sub-blocks at a time are the 8 lanes.
 * Levels are kept as ggml's L (0..63, l + 32; 0 for an all-zero sub-block).
 */
#define Q6_SUB 16
#define Q6_BYTES 210

/* One trial of make_qx_quants: levels (l, clamped) and the sums sum(w*x*l), sum(w*l*l). */
static inline void q6_trial(const __m256 xt[Q6_SUB], const __m256 w[Q6_SUB], __m256 iscale,
                            __m256i l_out[Q6_SUB], __m256 *sumlx, __m256 *suml2) {
    __m256 lx = _mm256_setzero_ps(), l2 = _mm256_setzero_ps();
    for (int i = 0; i < Q6_SUB; ++i) {
        __m256i l = clamp_range(round_lanes(_mm256_mul_ps(iscale, xt[i])), -32, 31);
        l_out[i] = l;
        __m256 lf = _mm256_cvtepi32_ps(l);
        lx = _mm256_add_ps(lx, _mm256_mul_ps(_mm256_mul_ps(w[i], xt[i]), lf));
        l2 = _mm256_add_ps(l2, _mm256_mul_ps(_mm256_mul_ps(w[i], lf), lf));
    }
    *sumlx = lx;
    *suml2 = l2;
}

/* make_qx_quants(16, 32, x, L, 1, NULL) on 8 sub-blocks: their scales and levels L (l + 32). */
static void q6_search(const __m256 xt[Q6_SUB], __m256i levels[Q6_SUB], float scales[LANES]) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 sign_mask = _mm256_set1_ps(-0.f);
    __m256 amax = zero, max = zero, w[Q6_SUB];
    for (int i = 0; i < Q6_SUB; ++i) {
        const __m256 ax = _mm256_andnot_ps(sign_mask, xt[i]);
        const __m256 larger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = _mm256_blendv_ps(amax, ax, larger);
        max = _mm256_blendv_ps(max, xt[i], larger);
        w[i] = _mm256_mul_ps(xt[i], xt[i]);
    }
    const __m256 all_zero = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
    __m256i l[Q6_SUB];
    __m256 sumlx, suml2;
    q6_trial(xt, w, _mm256_div_ps(_mm256_set1_ps(-32.f), max), levels, &sumlx, &suml2);
    __m256 scale = _mm256_blendv_ps(zero, _mm256_div_ps(sumlx, suml2),
                                    _mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ));
    __m256 best = _mm256_mul_ps(scale, sumlx);
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        const float numerator = 32.f + 0.1f * (float)is;
        q6_trial(xt, w, _mm256_div_ps(_mm256_set1_ps(-numerator), max), l, &sumlx, &suml2);
        const __m256 better = _mm256_and_ps(
            _mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
            _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2), _CMP_GT_OQ));
        const __m256 this_scale = _mm256_div_ps(sumlx, suml2);
        const __m256i take = _mm256_castps_si256(better);
        for (int i = 0; i < Q6_SUB; ++i) levels[i] = _mm256_blendv_epi8(levels[i], l[i], take);
        scale = _mm256_blendv_ps(scale, this_scale, better);
        best = _mm256_blendv_ps(best, _mm256_mul_ps(this_scale, sumlx), better);
    }
    /* levels hold l; ggml stores l + 32, and 0 for an all-zero sub-block (scale 0). */
    const __m256i zero_i = _mm256_castps_si256(all_zero);
    for (int i = 0; i < Q6_SUB; ++i)
        levels[i] = _mm256_andnot_si256(zero_i, _mm256_add_epi32(levels[i], _mm256_set1_epi32(32)));
    _mm256_storeu_ps(scales, _mm256_blendv_ps(scale, zero, all_zero));
}

static void quantize_q6_super_block(const float *x, uint8_t *out) {
    float scales[2 * LANES];
    __m256i lv[SUPER / LANES];
    for (int half = 0; half < 2; ++half) {
        __m256 xt[Q6_SUB];
        __m256i levels_v[Q6_SUB];
        load_lanes(x + half * LANES * Q6_SUB, Q6_SUB, xt, 1);
        q6_search(xt, levels_v, scales + half * LANES);
        unload_lanes(levels_v, 1, Q6_SUB, lv + half * Q6_SUB);
    }
    float max_abs_scale;
    const float max_scale = signed_absmax(scales, &max_abs_scale);
    memset(out, 0, Q6_BYTES);
    if (max_abs_scale < 1e-15f) return; /* all zero, d included */
    const float iscale = -128.f / max_scale;
    const uint16_t d = to_half(1 / iscale);
    int8_t *block_scales = (int8_t *)(out + 192);
    for (int ib = 0; ib < 2 * LANES; ++ib) {
        const int s = round_scalar(iscale * scales[ib]);
        block_scales[ib] = (int8_t)(s < 127 ? s : 127);
    }
    const float d_f = from_half(d);
    float step[2 * LANES];
    for (int j = 0; j < 2 * LANES; ++j) step[j] = d_f * (float)block_scales[j];
    requantize_16(x, step, -32, lv);
    uint8_t level[SUPER];
    store_levels(lv, level);
    uint8_t *ql = out, *qh = out + 128;
    for (int j = 0; j < SUPER; j += 128) {
        for (int i = 0; i < 32; ++i) {
            const uint8_t *L = level + j + i;
            ql[i] = (uint8_t)((L[0] & 0xF) | ((L[64] & 0xF) << 4));
            ql[i + 32] = (uint8_t)((L[32] & 0xF) | ((L[96] & 0xF) << 4));
            qh[i] = (uint8_t)((L[0] >> 4) | ((L[32] >> 4) << 2) | ((L[64] >> 4) << 4) |
                              ((L[96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
    memcpy(out + 208, &d, 2);
}

size_t dto_quantize_q6_k(const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    for (int64_t first = 0; first + SUPER <= n; first += SUPER) {
        quantize_q6_super_block(src + first, out);
        out += Q6_BYTES;
    }
    return (size_t)(out - (uint8_t *)dst);
}
