/*
 * Q3_K, Q4_K, Q5_K and Q6_K quantization with AVX2, bit-identical to ggml's reference quantizers
 * (no importance matrix).
 *
 * Why: Q4_K (Q5_K) is most of a q4_k_m (q5_k_m) file and ggml quantizes it one 32-value
 * sub-block at a time with scalar code; an export spends most of its time there. A super-block
 * holds 8 sub-blocks
 * that are searched independently, so here the 8 sub-blocks are the 8 lanes of a vector: every
 * lane performs exactly the scalar sequence of IEEE single-precision operations, in the same
 * order, so the bytes equal ggml's. Built without FMA (-mavx2 -mf16c only, -ffp-contract=off):
 * a fused multiply-add would round differently. tests/test_kquants.py compares against ggml.
 *
 * Layout of one block per 256 values: fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins,
 * then for Q5_K 32 bytes of fifth bits, then 128 bytes of 4-bit values (144 / 176 bytes).
 *
 * Q6_K (all of q6_k; in q4_k_m/q5_k_m the output tensor and half the layers' attn_v/ffn_down)
 * is the same idea on 16-value sub-blocks: ggml's scalar code spends ~5x the time of our Q4_K
 * per value there, so in a q4_k_m export it was about 40% of the quantization time. Block:
 * 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8 scales, fp16 d (210 bytes).
 *
 * Q3_K (most of q3_k_m) also has 16-value sub-blocks; ggml's scalar make_q3_quants refines
 * each one value by value, which made Q3_K a quarter of a three-K-quant export's CPU time.
 *
 * This file: Q4_K and Q5_K, and the CPU check; Q6_K and Q3_K are in kquants_q6_avx2.c and
 * kquants_q3_avx2.c, the lane helpers in kquants_lanes.h (one shared library of the three).
 */
#include "kquants_lanes.h"

/* The search parameters ggml uses per type (make_qkx2_quants arguments). */
struct kquant {
    int nmax;     /* highest level: 15 (4 bits) or 31 (5 bits) */
    float rmin;   /* first trial offset of the scale search */
    int nstep;    /* trial steps of 0.1 after it */
    int bytes;    /* block size */
};
static const struct kquant Q4_K = {15, -1.f, 20, 144};
static const struct kquant Q5_K = {31, -0.5f, 15, 176};


/*
 * Search scale and min of the 8 sub-blocks of GROUP super-blocks at once (lanes = sub-blocks,
 * g = super-block). xt[i][g] holds value i of every sub-block; levels[i][g] receives its level.
 * GROUP 1: the trial steps are bound by throughput, not by the latency of their sums; two
 * super-blocks at once measured 10% slower (registers spill). Q3_K's search, bound by latency,
 * groups four.
 */
#define GROUP 1
static void search_sub_blocks(const struct kquant *kind, const __m256 xt[SUB][GROUP],
                              __m256i levels[SUB][GROUP], float scales[GROUP][LANES],
                              float mins[GROUP][LANES]) {
    const int nmax = kind->nmax;
    const __m256 zero = _mm256_setzero_ps();
    const __m256 sign_mask = _mm256_set1_ps(-0.f);
    __m256 weight[SUB][GROUP];
    __m256 lo[GROUP], hi[GROUP], sum_w[GROUP], sum_x[GROUP], flat[GROUP], flat_lo[GROUP];
    __m256 scale[GROUP], best[GROUP];
    /* The levels of the best fit so far are those of its step's inv and lo: kept instead of
       the 32 levels, which are computed once at the end (the same operations, the same bits). */
    __m256 best_inv[GROUP], best_lo[GROUP];
    for (int g = 0; g < GROUP; ++g) {
        __m256 sq = zero;
        for (int i = 0; i < SUB; ++i) sq = _mm256_add_ps(sq, _mm256_mul_ps(xt[i][g], xt[i][g]));
        const __m256 average = _mm256_sqrt_ps(_mm256_div_ps(sq, _mm256_set1_ps(32.f)));
        for (int i = 0; i < SUB; ++i)
            weight[i][g] = _mm256_add_ps(average, _mm256_andnot_ps(sign_mask, xt[i][g]));
        lo[g] = xt[0][g];
        hi[g] = xt[0][g];
        sum_w[g] = weight[0][g];
        sum_x[g] = _mm256_mul_ps(sum_w[g], xt[0][g]);
        for (int i = 1; i < SUB; ++i) {
            lo[g] = _mm256_min_ps(xt[i][g], lo[g]);
            hi[g] = _mm256_max_ps(xt[i][g], hi[g]);
            sum_w[g] = _mm256_add_ps(sum_w[g], weight[i][g]);
            sum_x[g] = _mm256_add_ps(sum_x[g], _mm256_mul_ps(weight[i][g], xt[i][g]));
        }
        lo[g] = _mm256_blendv_ps(lo[g], zero, _mm256_cmp_ps(lo[g], zero, _CMP_GT_OQ));
        flat[g] = _mm256_cmp_ps(hi[g], lo[g], _CMP_EQ_OQ);
        flat_lo[g] = lo[g];
        const __m256 inv = _mm256_div_ps(_mm256_set1_ps((float)nmax), _mm256_sub_ps(hi[g], lo[g]));
        best_inv[g] = inv;
        best_lo[g] = lo[g];
        scale[g] = _mm256_div_ps(_mm256_set1_ps(1.f), inv);
        best[g] = zero;
        for (int i = 0; i < SUB; ++i) {
            const __m256 v = _mm256_mul_ps(inv, _mm256_sub_ps(xt[i][g], lo[g]));
            const __m256i l = clamp_lanes(round_lanes(v), nmax);
            __m256 diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(scale[g], _mm256_cvtepi32_ps(l)), lo[g]), xt[i][g]);
            best[g] =
                _mm256_add_ps(best[g], _mm256_mul_ps(weight[i][g], _mm256_mul_ps(diff, diff)));
        }
    }
    /* As in ggml, an accepted candidate's min is used by every later step (range included). */
    for (int step = 0; step <= kind->nstep; ++step) {
        const __m256 numerator = _mm256_set1_ps(kind->rmin + 0.1f * (float)step + (float)nmax);
        __m256 inv[GROUP], sum_l[GROUP], sum_l2[GROUP], sum_xl[GROUP];
        __m256 trial[SUB][GROUP];
        for (int g = 0; g < GROUP; ++g) {
            inv[g] = _mm256_div_ps(numerator, _mm256_sub_ps(hi[g], lo[g]));
            sum_l[g] = sum_l2[g] = sum_xl[g] = zero;
        }
        for (int i = 0; i < SUB; ++i) {
            for (int g = 0; g < GROUP; ++g) {
                const __m256 l = _mm256_cvtepi32_ps(clamp_lanes(
                    round_lanes(_mm256_mul_ps(inv[g], _mm256_sub_ps(xt[i][g], lo[g]))), nmax));
                trial[i][g] = l;
                __m256 wl = _mm256_mul_ps(weight[i][g], l);
                sum_l[g] = _mm256_add_ps(sum_l[g], wl);
                sum_l2[g] = _mm256_add_ps(sum_l2[g], _mm256_mul_ps(wl, l));
                sum_xl[g] = _mm256_add_ps(sum_xl[g], _mm256_mul_ps(wl, xt[i][g]));
            }
        }
        __m256 this_scale[GROUP], this_min[GROUP], det[GROUP], error[GROUP];
        for (int g = 0; g < GROUP; ++g) {
            det[g] = _mm256_sub_ps(_mm256_mul_ps(sum_w[g], sum_l2[g]),
                                   _mm256_mul_ps(sum_l[g], sum_l[g]));
            this_scale[g] = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w[g], sum_xl[g]),
                                                        _mm256_mul_ps(sum_x[g], sum_l[g])),
                                          det[g]);
            this_min[g] = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2[g], sum_x[g]),
                                                      _mm256_mul_ps(sum_l[g], sum_xl[g])),
                                        det[g]);
            const __m256 positive_min = _mm256_cmp_ps(this_min[g], zero, _CMP_GT_OQ);
            this_min[g] = _mm256_blendv_ps(this_min[g], zero, positive_min);
            this_scale[g] = _mm256_blendv_ps(this_scale[g], _mm256_div_ps(sum_xl[g], sum_l2[g]),
                                             positive_min);
            error[g] = zero;
        }
        for (int i = 0; i < SUB; ++i) {
            for (int g = 0; g < GROUP; ++g) {
                __m256 diff = _mm256_sub_ps(
                    _mm256_add_ps(_mm256_mul_ps(this_scale[g], trial[i][g]),
                                  this_min[g]),
                    xt[i][g]);
                error[g] = _mm256_add_ps(error[g],
                                         _mm256_mul_ps(weight[i][g], _mm256_mul_ps(diff, diff)));
            }
        }
        for (int g = 0; g < GROUP; ++g) {
            const __m256 better = _mm256_andnot_ps(
                flat[g], _mm256_and_ps(_mm256_cmp_ps(det[g], zero, _CMP_GT_OQ),
                                       _mm256_cmp_ps(error[g], best[g], _CMP_LT_OQ)));
            best_inv[g] = _mm256_blendv_ps(best_inv[g], inv[g], better);
            best_lo[g] = _mm256_blendv_ps(best_lo[g], lo[g], better);
            best[g] = _mm256_blendv_ps(best[g], error[g], better);
            scale[g] = _mm256_blendv_ps(scale[g], this_scale[g], better);
            lo[g] = _mm256_blendv_ps(lo[g], this_min[g], better);
        }
    }
    /* A flat sub-block (max == min after clamping min to <= 0): levels 0, scale 0, min -lo. */
    for (int g = 0; g < GROUP; ++g) {
        const __m256i flat_i = _mm256_castps_si256(flat[g]);
        for (int i = 0; i < SUB; ++i) {
            const __m256 v = _mm256_mul_ps(best_inv[g], _mm256_sub_ps(xt[i][g], best_lo[g]));
            levels[i][g] = _mm256_andnot_si256(flat_i, clamp_lanes(round_lanes(v), nmax));
        }
        _mm256_storeu_ps(scales[g], _mm256_blendv_ps(scale[g], zero, flat[g]));
        /* -min, as ggml negates */
        const __m256 min = _mm256_blendv_ps(lo[g], flat_lo[g], flat[g]);
        _mm256_storeu_ps(mins[g], _mm256_xor_ps(min, sign_mask));
    }
}

static void pack_scales(const float scales[LANES], const float mins[LANES], uint8_t packed[12],
                        float *max_scale_out, float *max_min_out) {
    float max_scale = 0.f, max_min = 0.f;
    for (int j = 0; j < LANES; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(packed, 0, 12);
    for (int j = 0; j < LANES; ++j) {
        uint8_t ls = (uint8_t)round_scalar(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)round_scalar(inv_min * mins[j]);
        if (ls > 63) ls = 63;
        if (lm > 63) lm = 63;
        if (j < 4) {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            packed[j - 4] |= (uint8_t)((ls >> 4) << 6);
            packed[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *max_scale_out = max_scale;
    *max_min_out = max_min;
}

static void unpack_scale(int j, const uint8_t packed[12], int *sc, int *m) {
    if (j < 4) {
        *sc = packed[j] & 63;
        *m = packed[j + 4] & 63;
    } else {
        *sc = (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4);
        *m = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
    }
}

/* Scales, requantization and packing of one super-block; lanes[i * stride]: its search. */
static void finish_super_block(const struct kquant *kind, const float *x, const __m256i *lanes,
                               int stride, const float scales[LANES], const float mins[LANES],
                               uint8_t *out) {
    __m256i lv[SUPER / LANES];
    unload_lanes(lanes, stride, SUB, lv);

    uint8_t packed[12];
    float max_scale, max_min;
    pack_scales(scales, mins, packed, &max_scale, &max_min);
    const uint16_t d = to_half(max_scale / 63.f);
    const uint16_t dmin = to_half(max_min / 63.f);
    for (int j = 0; j < LANES; ++j) {
        int sc, m;
        unpack_scale(j, packed, &sc, &m);
        const float step = from_half(d) * (float)sc;
        if (step == 0.f) continue; /* keep the levels of the search */
        const __m256 offset = _mm256_set1_ps(from_half(dmin) * (float)m);
        const __m256 divisor = _mm256_set1_ps(step);
        for (int part = 0; part < SUB / LANES; ++part) {
            const float *v = x + SUB * j + LANES * part;
            const __m256 q = _mm256_div_ps(_mm256_add_ps(_mm256_loadu_ps(v), offset), divisor);
            lv[(SUB * j) / LANES + part] = clamp_lanes(round_lanes(q), kind->nmax);
        }
    }
    uint8_t level[SUPER];
    store_levels(lv, level);
    memcpy(out, &d, 2);
    memcpy(out + 2, &dmin, 2);
    memcpy(out + 4, packed, 12);
    /* Pairs of sub-blocks share bytes: low nibble from the first, high from the second; for
       Q5_K the fifth bits of pair p go to bits 2p and 2p+1 of high[i]. Branch-free: for Q5_K
       whether a level is above 15 is a coin flip, too costly to mispredict. */
    const __m256i one = _mm256_set1_epi8(1), nibble = _mm256_set1_epi8(0xF);
    __m256i high = _mm256_setzero_si256();
    uint8_t *q = kind->nmax > 15 ? out + 16 + SUB : out + 16;
    for (int pair = 0; pair < LANES / 2; ++pair) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(level + 64 * pair));
        const __m256i b = _mm256_loadu_si256((const __m256i *)(level + 64 * pair + SUB));
        const __m256i a_bit = _mm256_and_si256(_mm256_srli_epi16(a, 4), one);
        const __m256i b_bit = _mm256_and_si256(_mm256_srli_epi16(b, 4), one);
        high = _mm256_or_si256(high, _mm256_sll_epi16(a_bit, _mm_cvtsi32_si128(2 * pair)));
        high = _mm256_or_si256(high, _mm256_sll_epi16(b_bit, _mm_cvtsi32_si128(2 * pair + 1)));
        const __m256i packed_q = _mm256_or_si256(_mm256_and_si256(a, nibble),
                                                 _mm256_slli_epi16(_mm256_and_si256(b, nibble), 4));
        _mm256_storeu_si256((__m256i *)(q + SUB * pair), packed_q);
    }
    if (kind->nmax > 15) _mm256_storeu_si256((__m256i *)(out + 16), high);
}

/* Quantize the super-blocks at x[0] and x[1] (they may be the same) into out[0] and out[1]. */
static void quantize_super_blocks(const struct kquant *kind, const float *x[GROUP],
                                  uint8_t *out[GROUP]) {
    __m256 xt[SUB][GROUP];
    __m256i levels_v[SUB][GROUP];
    float scales[GROUP][LANES], mins[GROUP][LANES];
    for (int g = 0; g < GROUP; ++g) load_lanes(x[g], SUB, &xt[0][g], GROUP);
    search_sub_blocks(kind, xt, levels_v, scales, mins);
    for (int g = 0; g < GROUP; ++g)
        finish_super_block(kind, x[g], &levels_v[0][g], GROUP, scales[g], mins[g], out[g]);
}

/* 1 when this CPU runs the kernels (AVX2 and F16C); callers fall back to ggml otherwise. */
int dto_kquants_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

static size_t quantize(const struct kquant *kind, const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    const int64_t blocks = n / SUPER;
    uint8_t scratch[176];
    for (int64_t b = 0; b < blocks; b += GROUP) {
        const float *x[GROUP];
        uint8_t *dest[GROUP];
        point_group(src, out, b, blocks, GROUP, kind->bytes, scratch, x, dest);
        quantize_super_blocks(kind, x, dest);
    }
    return (size_t)(blocks * kind->bytes);
}

/* Quantize n values (a multiple of 256) of src into blocks at dst; return the bytes written. */
size_t dto_quantize_q4_k(const float *src, void *dst, int64_t n) { return quantize(&Q4_K, src, dst, n); }
size_t dto_quantize_q5_k(const float *src, void *dst, int64_t n) { return quantize(&Q5_K, src, dst, n); }
