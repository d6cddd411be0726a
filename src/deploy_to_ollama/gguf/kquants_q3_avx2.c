/* Q3_K with AVX2, bit-identical to ggml's quantize_row_q3_K_ref (see kquants_avx2.c). */
#include "kquants_lanes.h"

/*
 * Q3_K: 16 sub-blocks of 16 values, each searched by ggml's make_q3_quants (nmax 4, weights
 * x*x): a first rounding, then up to 5 passes that move one value at a time to the level that
 * most improves the fit, each move changing the sums the next value sees. That order is kept
 * lane by lane; the 16 sub-blocks of 4 super-blocks run at once (8 vectors), so their
 * dependency chains overlap. A lane whose pass changed nothing is at a fixed point: further
 * passes change nothing either, which is why lanes may stop together instead of one by one.
 * Block: 32 bytes of high bits, 64 bytes of low 2 bits, 12 bytes of 6-bit scales, fp16 d
 * (110 bytes).
 */
#define Q3_SUB 16
#define Q3_HALVES 2
#define Q3_GROUP 4 /* super-blocks searched together */
#define Q3_CHAINS (Q3_GROUP * Q3_HALVES)
#define Q3_BYTES 110

/*
 * make_q3_quants(16, 4, x, L, true) on 8 sub-blocks per chain (chain c: half c % 2 of
 * super-block c / 2): their scales and levels (l + 4). Each refinement step waits on the sums
 * the previous one left, so one chain would idle on latency; the chains interleave. A chain
 * whose pass changed nothing is at a fixed point (another pass would change nothing) and is
 * skipped from then on, as ggml stops.
 */
static void q3_search(const __m256 xt[Q3_SUB][Q3_CHAINS], __m256i levels[Q3_SUB][Q3_CHAINS],
                      float scales[Q3_CHAINS][LANES]) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 sign_mask = _mm256_set1_ps(-0.f);
    __m256 w[Q3_SUB][Q3_CHAINS], wx[Q3_SUB][Q3_CHAINS], lf[Q3_SUB][Q3_CHAINS];
    __m256 sumlx[Q3_CHAINS], suml2[Q3_CHAINS], all_zero[Q3_CHAINS], changed[Q3_CHAINS];
    for (int c = 0; c < Q3_CHAINS; ++c) {
        __m256 amax = zero, max = zero;
        for (int i = 0; i < Q3_SUB; ++i) {
            const __m256 ax = _mm256_andnot_ps(sign_mask, xt[i][c]);
            const __m256 larger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
            amax = _mm256_blendv_ps(amax, ax, larger);
            max = _mm256_blendv_ps(max, xt[i][c], larger);
        }
        all_zero[c] = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
        const __m256 iscale = _mm256_div_ps(_mm256_set1_ps(-4.f), max);
        __m256 lx = zero, l2 = zero;
        for (int i = 0; i < Q3_SUB; ++i) {
            const __m256i l = clamp_range(round_lanes(_mm256_mul_ps(iscale, xt[i][c])), -4, 3);
            lf[i][c] = _mm256_cvtepi32_ps(l);
            w[i][c] = _mm256_mul_ps(xt[i][c], xt[i][c]);
            wx[i][c] = _mm256_mul_ps(w[i][c], xt[i][c]);
            lx = _mm256_add_ps(lx, _mm256_mul_ps(wx[i][c], lf[i][c]));
            l2 = _mm256_add_ps(l2, _mm256_mul_ps(_mm256_mul_ps(w[i][c], lf[i][c]), lf[i][c]));
        }
        sumlx[c] = lx;
        suml2[c] = l2;
        changed[c] = _mm256_xor_ps(all_zero[c], _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
    }
    /* Levels are kept as floats (exact small integers) in lf: the comparisons need floats. */
    for (int itry = 0; itry < 5; ++itry) {
        int active[Q3_CHAINS], any = 0;
        for (int c = 0; c < Q3_CHAINS; ++c) {
            active[c] = !_mm256_testz_ps(changed[c], changed[c]);
            any |= active[c];
            changed[c] = zero;
        }
        if (!any) break;
        for (int i = 0; i < Q3_SUB; ++i) {
            for (int c = 0; c < Q3_CHAINS; ++c) {
                if (!active[c]) continue;
                const __m256 slx = _mm256_sub_ps(sumlx[c], _mm256_mul_ps(wx[i][c], lf[i][c]));
                const __m256 sl2 = _mm256_sub_ps(
                    suml2[c], _mm256_mul_ps(_mm256_mul_ps(w[i][c], lf[i][c]), lf[i][c]));
                const __m256 nf = _mm256_cvtepi32_ps(clamp_range(
                    round_lanes(_mm256_div_ps(_mm256_mul_ps(xt[i][c], sl2), slx)), -4, 3));
                const __m256 slx_new = _mm256_add_ps(slx, _mm256_mul_ps(wx[i][c], nf));
                const __m256 sl2_new =
                    _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w[i][c], nf), nf));
                const __m256 fits_better = _mm256_cmp_ps(
                    _mm256_mul_ps(_mm256_mul_ps(slx_new, slx_new), suml2[c]),
                    _mm256_mul_ps(_mm256_mul_ps(sumlx[c], sumlx[c]), sl2_new), _CMP_GT_OQ);
                const __m256 take = _mm256_and_ps(
                    _mm256_and_ps(_mm256_cmp_ps(slx, zero, _CMP_GT_OQ),
                                  _mm256_cmp_ps(nf, lf[i][c], _CMP_NEQ_UQ)),
                    _mm256_and_ps(_mm256_cmp_ps(sl2_new, zero, _CMP_GT_OQ), fits_better));
                lf[i][c] = _mm256_blendv_ps(lf[i][c], nf, take);
                sumlx[c] = _mm256_blendv_ps(sumlx[c], slx_new, take);
                suml2[c] = _mm256_blendv_ps(suml2[c], sl2_new, take);
                changed[c] = _mm256_or_ps(changed[c], take);
            }
        }
    }
    for (int c = 0; c < Q3_CHAINS; ++c) {
        const __m256 scale = _mm256_blendv_ps(zero, _mm256_div_ps(sumlx[c], suml2[c]),
                                              _mm256_cmp_ps(suml2[c], zero, _CMP_GT_OQ));
        _mm256_storeu_ps(scales[c], _mm256_blendv_ps(scale, zero, all_zero[c]));
        /* ggml stores l + 4, and 0 for an all-zero sub-block. */
        const __m256i zero_i = _mm256_castps_si256(all_zero[c]);
        for (int i = 0; i < Q3_SUB; ++i)
            levels[i][c] = _mm256_andnot_si256(
                zero_i, _mm256_add_epi32(_mm256_cvtps_epi32(lf[i][c]), _mm256_set1_epi32(4)));
    }
}

/* The 6-bit scale of sub-block j, stored as sc + 32: low 4 bits, then 2 high bits. */
static inline int q3_scale(const uint8_t packed[12], int j) {
    const int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
    return (low | (((packed[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

/* Scales, requantization and packing of one super-block; lv: its search's levels. */
static void q3_finish(const float *x, __m256i lv[SUPER / LANES], const float scales[2 * LANES],
                      uint8_t *out) {
    const float max_scale = signed_absmax(scales, NULL);
    memset(out, 0, Q3_BYTES);
    uint8_t *hmask = out, *qs = out + 32, *packed = out + 96;
    uint16_t d = to_half(0.f);
    if (max_scale != 0.f) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 2 * LANES; ++j) {
            int8_t l = (int8_t)round_scalar(iscale * scales[j]);
            l = (int8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
            if (j < 8) packed[j] = (uint8_t)(l & 0xF);
            else packed[j - 8] |= (uint8_t)((l & 0xF) << 4);
            packed[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
        }
        d = to_half(1 / iscale);
    }
    const float d_f = from_half(d);
    float step[2 * LANES];
    for (int j = 0; j < 2 * LANES; ++j) step[j] = d_f * (float)q3_scale(packed, j);
    requantize_16(x, step, -4, lv);
    uint8_t level[SUPER];
    store_levels(lv, level);
    /* High bit of value j goes to bit j / 32 of hmask[j % 32]; the low 2 bits of values
       j, j + 32, j + 64, j + 96 (within each 128) share one byte. Branch-free: whether a
       level is above 3 is a coin flip, and mispredicting it was the kernel's biggest cost. */
    const __m256i one = _mm256_set1_epi8(1), three = _mm256_set1_epi8(3);
    __m256i high = _mm256_setzero_si256(), low[SUPER / 32];
    for (int k = 0; k < SUPER / 32; ++k) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(level + 32 * k));
        const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(v, 2), one);
        high = _mm256_or_si256(high, _mm256_sll_epi16(bit, _mm_cvtsi32_si128(k)));
        low[k] = _mm256_and_si256(v, three);
    }
    _mm256_storeu_si256((__m256i *)hmask, high);
    for (int half = 0; half < 2; ++half) {
        const __m256i *L = low + 4 * half;
        const __m256i packed_q = _mm256_or_si256(
            _mm256_or_si256(L[0], _mm256_slli_epi16(L[1], 2)),
            _mm256_or_si256(_mm256_slli_epi16(L[2], 4), _mm256_slli_epi16(L[3], 6)));
        _mm256_storeu_si256((__m256i *)(qs + 32 * half), packed_q);
    }
    memcpy(out + 108, &d, 2);
}

/* Quantize the super-blocks at x[g] (repeats allowed) into out[g]. */
static void quantize_q3_super_blocks(const float *x[Q3_GROUP], uint8_t *out[Q3_GROUP]) {
    __m256 xt[Q3_SUB][Q3_CHAINS];
    __m256i levels_v[Q3_SUB][Q3_CHAINS];
    float scales[Q3_CHAINS][LANES];
    for (int c = 0; c < Q3_CHAINS; ++c) {
        const float *base = x[c / Q3_HALVES] + (c % Q3_HALVES) * LANES * Q3_SUB;
        load_lanes(base, Q3_SUB, &xt[0][c], Q3_CHAINS);
    }
    q3_search(xt, levels_v, scales);
    for (int g = 0; g < Q3_GROUP; ++g) {
        __m256i lv[SUPER / LANES];
        for (int h = 0; h < Q3_HALVES; ++h)
            unload_lanes(&levels_v[0][g * Q3_HALVES + h], Q3_CHAINS, Q3_SUB, lv + h * Q3_SUB);
        q3_finish(x[g], lv, scales[g * Q3_HALVES], out[g]);
    }
}

size_t dto_quantize_q3_k(const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    const int64_t blocks = n / SUPER;
    uint8_t scratch[Q3_BYTES];
    for (int64_t b = 0; b < blocks; b += Q3_GROUP) {
        const float *x[Q3_GROUP];
        uint8_t *dest[Q3_GROUP];
        point_group(src, out, b, blocks, Q3_GROUP, Q3_BYTES, scratch, x, dest);
        quantize_q3_super_blocks(x, dest);
    }
    return (size_t)(blocks * Q3_BYTES);
}
