/*
 * Q3_K, Q4_K, Q5_K and Q6_K quantization with AVX2, bit-identical to ggml's reference
 * quantizers (no importance matrix).
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
 * Q3_K (most of a q3_k_m file) is the same on 16-value sub-blocks with ggml's make_q3_quants;
 * its scalar code took a quarter of the CPU of a three-quant export (q5_k_m,q4_k_m,q3_k_m).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define SUPER 256
#define SUB 32
#define LANES 8

/* The search parameters ggml uses per type (make_qkx2_quants arguments). */
struct kquant {
    int nmax;     /* highest level: 15 (4 bits) or 31 (5 bits) */
    float rmin;   /* first trial offset of the scale search */
    int nstep;    /* trial steps of 0.1 after it */
    int bytes;    /* block size */
};
static const struct kquant Q4_K = {15, -1.f, 20, 144};
static const struct kquant Q5_K = {31, -0.5f, 15, 176};

/* Round to nearest via the 1.5 * 2^23 trick, as a lane-wise integer. */
static inline __m256i round_lanes(__m256 v) {
    const __m256 magic = _mm256_set1_ps(12582912.f);
    __m256i bits = _mm256_castps_si256(_mm256_add_ps(v, magic));
    bits = _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff));
    return _mm256_sub_epi32(bits, _mm256_set1_epi32(0x00400000));
}

static inline int round_scalar(float v) {
    float shifted = v + 12582912.f;
    int32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    return (bits & 0x007fffff) - 0x00400000;
}

static inline __m256i clamp_lanes(__m256i v, int top) {
    return _mm256_max_epi32(_mm256_setzero_si256(), _mm256_min_epi32(_mm256_set1_epi32(top), v));
}

static inline uint16_t to_half(float v) {
    return (uint16_t)_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT);
}

static inline float from_half(uint16_t h) {
    return _cvtsh_ss(h);
}

/* Transpose 8 rows of 8 floats in place: v[i] becomes column i (lane j = row j). */
static inline void transpose_8x8(__m256 v[LANES]) {
    __m256 t[LANES], s[LANES];
    for (int k = 0; k < LANES; k += 2) {
        t[k] = _mm256_unpacklo_ps(v[k], v[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(v[k], v[k + 1]);
    }
    for (int k = 0; k < LANES; k += 4) {
        s[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int k = 0; k < 4; ++k) {
        v[k] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x20);
        v[k + 4] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x31);
    }
}

/*
 * Search scale and min of the 8 sub-blocks of one super-block at once (lanes = sub-blocks).
 * xt[i] holds value i of every sub-block; levels[i] receives its 4-bit level.
 */
static void search_sub_blocks(const struct kquant *kind, const __m256 xt[SUB],
                              __m256i levels[SUB], float scales[LANES], float mins[LANES]) {
    const int nmax = kind->nmax;
    __m256 weight[SUB];
    __m256 sq = _mm256_setzero_ps();
    for (int i = 0; i < SUB; ++i) sq = _mm256_add_ps(sq, _mm256_mul_ps(xt[i], xt[i]));
    const __m256 average = _mm256_sqrt_ps(_mm256_div_ps(sq, _mm256_set1_ps(32.f)));
    const __m256 sign_mask = _mm256_set1_ps(-0.f);
    for (int i = 0; i < SUB; ++i) weight[i] = _mm256_add_ps(average, _mm256_andnot_ps(sign_mask, xt[i]));

    __m256 lo = xt[0], hi = xt[0];
    __m256 sum_w = weight[0];
    __m256 sum_x = _mm256_mul_ps(sum_w, xt[0]);
    for (int i = 1; i < SUB; ++i) {
        lo = _mm256_min_ps(xt[i], lo);
        hi = _mm256_max_ps(xt[i], hi);
        sum_w = _mm256_add_ps(sum_w, weight[i]);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(weight[i], xt[i]));
    }
    const __m256 zero = _mm256_setzero_ps();
    lo = _mm256_blendv_ps(lo, zero, _mm256_cmp_ps(lo, zero, _CMP_GT_OQ));
    const __m256 flat = _mm256_cmp_ps(hi, lo, _CMP_EQ_OQ);
    const __m256 flat_lo = lo;

    __m256 inv = _mm256_div_ps(_mm256_set1_ps((float)nmax), _mm256_sub_ps(hi, lo));
    __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.f), inv);
    __m256 best = zero;
    for (int i = 0; i < SUB; ++i) {
        __m256i l = clamp_lanes(round_lanes(_mm256_mul_ps(inv, _mm256_sub_ps(xt[i], lo))), nmax);
        levels[i] = l;
        __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(l)), lo), xt[i]);
        best = _mm256_add_ps(best, _mm256_mul_ps(weight[i], _mm256_mul_ps(diff, diff)));
    }
    /* As in ggml, an accepted candidate's min is used by every later step (range included). */
    for (int step = 0; step <= kind->nstep; ++step) {
        const float numerator = kind->rmin + 0.1f * (float)step + (float)nmax;
        inv = _mm256_div_ps(_mm256_set1_ps(numerator), _mm256_sub_ps(hi, lo));
        __m256i trial[SUB];
        __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < SUB; ++i) {
            __m256i l = clamp_lanes(round_lanes(_mm256_mul_ps(inv, _mm256_sub_ps(xt[i], lo))), nmax);
            trial[i] = l;
            __m256 wl = _mm256_mul_ps(weight[i], _mm256_cvtepi32_ps(l));
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, _mm256_cvtepi32_ps(l)));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xt[i]));
        }
        __m256 det = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        __m256 this_scale = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), det);
        __m256 this_min = _mm256_div_ps(
            _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), det);
        const __m256 positive_min = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
        this_min = _mm256_blendv_ps(this_min, zero, positive_min);
        this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), positive_min);
        __m256 error = zero;
        for (int i = 0; i < SUB; ++i) {
            __m256 diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(trial[i])), this_min), xt[i]);
            error = _mm256_add_ps(error, _mm256_mul_ps(weight[i], _mm256_mul_ps(diff, diff)));
        }
        const __m256 better = _mm256_andnot_ps(
            flat, _mm256_and_ps(_mm256_cmp_ps(det, zero, _CMP_GT_OQ),
                                _mm256_cmp_ps(error, best, _CMP_LT_OQ)));
        const __m256i take = _mm256_castps_si256(better);
        for (int i = 0; i < SUB; ++i) levels[i] = _mm256_blendv_epi8(levels[i], trial[i], take);
        best = _mm256_blendv_ps(best, error, better);
        scale = _mm256_blendv_ps(scale, this_scale, better);
        lo = _mm256_blendv_ps(lo, this_min, better);
    }
    /* A flat sub-block (max == min after clamping min to <= 0): levels 0, scale 0, min -lo. */
    const __m256i flat_i = _mm256_castps_si256(flat);
    for (int i = 0; i < SUB; ++i) levels[i] = _mm256_andnot_si256(flat_i, levels[i]);
    scale = _mm256_blendv_ps(scale, zero, flat);
    lo = _mm256_blendv_ps(lo, flat_lo, flat);
    _mm256_storeu_ps(scales, scale);
    _mm256_storeu_ps(mins, _mm256_xor_ps(lo, sign_mask)); /* -min, as ggml negates */
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

/* Int32 lanes a, b, c, e (32 values in order) as 32 bytes in the same order. */
static inline __m256i pack_bytes(__m256i a, __m256i b, __m256i c, __m256i e) {
    const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, e));
    return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static void quantize_super_block(const struct kquant *kind, const float *x, uint8_t *out) {
    __m256 xt[SUB];
    __m256i levels_v[SUB];
    float scales[LANES], mins[LANES];
    for (int column = 0; column < SUB; column += LANES) {
        for (int j = 0; j < LANES; ++j) xt[column + j] = _mm256_loadu_ps(x + SUB * j + column);
        transpose_8x8(xt + column);
    }
    search_sub_blocks(kind, xt, levels_v, scales, mins);

    uint8_t packed[12];
    float max_scale, max_min;
    pack_scales(scales, mins, packed, &max_scale, &max_min);
    const uint16_t d = to_half(max_scale / 63.f);
    const uint16_t dmin = to_half(max_min / 63.f);
    uint8_t level[SUPER];
    for (int j = 0; j < LANES; ++j) {
        int sc, m;
        unpack_scale(j, packed, &sc, &m);
        const float step = from_half(d) * (float)sc;
        if (step == 0.f) { /* keep the levels of the search */
            for (int i = 0; i < SUB; ++i) {
                int32_t got[LANES];
                _mm256_storeu_si256((__m256i *)got, levels_v[i]);
                level[SUB * j + i] = (uint8_t)got[j];
            }
            continue;
        }
        const __m256 offset = _mm256_set1_ps(from_half(dmin) * (float)m);
        const __m256 sv = _mm256_set1_ps(step);
        __m256i l[4];
        for (int k = 0; k < 4; ++k) {
            const __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + SUB * j + LANES * k), offset);
            l[k] = clamp_lanes(round_lanes(_mm256_div_ps(v, sv)), kind->nmax);
        }
        _mm256_storeu_si256((__m256i *)(level + SUB * j), pack_bytes(l[0], l[1], l[2], l[3]));
    }
    memcpy(out, &d, 2);
    memcpy(out + 2, &dmin, 2);
    memcpy(out + 4, packed, 12);
    uint8_t *q = kind->nmax > 15 ? out + 16 + SUB : out + 16;
    /* Pairs of sub-blocks share bytes: low nibble from the first, high from the second; for
       Q5_K the fifth bits of pair p go to bits 2p and 2p+1 of high[i] (branch-free: they are
       random, and a mispredicted branch per value cost more than the search). */
    const __m256i nibble = _mm256_set1_epi8(15);
    __m256i high = _mm256_setzero_si256();
    for (int pair = 0; pair < LANES / 2; ++pair) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(level + 64 * pair));
        const __m256i b = _mm256_loadu_si256((const __m256i *)(level + 64 * pair + SUB));
        const __m256i bit_a = _mm256_set1_epi8((char)(1 << (2 * pair)));
        const __m256i bit_b = _mm256_set1_epi8((char)(2 << (2 * pair)));
        high = _mm256_or_si256(high, _mm256_and_si256(_mm256_cmpgt_epi8(a, nibble), bit_a));
        high = _mm256_or_si256(high, _mm256_and_si256(_mm256_cmpgt_epi8(b, nibble), bit_b));
        /* low nibbles: 16-bit shifts of values below 16 stay in their byte */
        const __m256i low = _mm256_or_si256(_mm256_and_si256(a, nibble),
                                            _mm256_slli_epi16(_mm256_and_si256(b, nibble), 4));
        _mm256_storeu_si256((__m256i *)(q + SUB * pair), low);
    }
    if (kind->nmax > 15) _mm256_storeu_si256((__m256i *)(out + 16), high);
}

/*
 * Q6_K: 16 sub-blocks of 16 values per super-block, each searched by ggml's make_qx_quants
 * (nmax 32, weights x*x, 19 trial scales); here 8 sub-blocks at a time are the 8 lanes.
 * Levels are kept as ggml's L (0..63, l + 32; 0 for an all-zero sub-block).
 */
#define Q6_SUB 16
#define Q6_BYTES 210

static inline __m256i clamp_range(__m256i v, int lo, int hi) {
    return _mm256_max_epi32(_mm256_set1_epi32(lo), _mm256_min_epi32(_mm256_set1_epi32(hi), v));
}

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
    uint8_t level[SUPER];
    for (int half = 0; half < 2; ++half) {
        const float *base = x + half * LANES * Q6_SUB;
        __m256 xt[Q6_SUB];
        __m256i levels_v[Q6_SUB];
        for (int i = 0; i < Q6_SUB; ++i) {
            xt[i] = _mm256_setr_ps(base[i], base[Q6_SUB + i], base[2 * Q6_SUB + i],
                                   base[3 * Q6_SUB + i], base[4 * Q6_SUB + i],
                                   base[5 * Q6_SUB + i], base[6 * Q6_SUB + i],
                                   base[7 * Q6_SUB + i]);
        }
        q6_search(xt, levels_v, scales + half * LANES);
        int32_t lanes[Q6_SUB][LANES];
        for (int i = 0; i < Q6_SUB; ++i) _mm256_storeu_si256((__m256i *)lanes[i], levels_v[i]);
        for (int j = 0; j < LANES; ++j)
            for (int i = 0; i < Q6_SUB; ++i)
                level[(half * LANES + j) * Q6_SUB + i] = (uint8_t)lanes[i][j];
    }
    float max_scale = 0.f, max_abs_scale = 0.f;
    for (int ib = 0; ib < 2 * LANES; ++ib) {
        const float abs_scale = scales[ib] < 0 ? -scales[ib] : scales[ib];
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
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
    for (int j = 0; j < 2 * LANES; ++j) {
        const float step = d_f * (float)block_scales[j];
        if (step == 0.f) continue; /* keep the levels of the search */
        const __m256 sv = _mm256_set1_ps(step);
        for (int half = 0; half < 2; ++half) {
            const float *v = x + Q6_SUB * j + LANES * half;
            __m256i l = clamp_range(round_lanes(_mm256_div_ps(_mm256_loadu_ps(v), sv)), -32, 31);
            int32_t got[LANES];
            _mm256_storeu_si256((__m256i *)got, _mm256_add_epi32(l, _mm256_set1_epi32(32)));
            for (int i = 0; i < LANES; ++i) level[Q6_SUB * j + LANES * half + i] = (uint8_t)got[i];
        }
    }
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

/*
 * Q3_K: 16 sub-blocks of 16 values, each searched by ggml's make_q3_quants (nmax 4, weights
 * x*x, then up to 5 passes that move one level at a time while the error falls); here 8
 * sub-blocks at a time are the 8 lanes. A pass visits the values in order and each change
 * updates the sums the next value sees, so the values stay sequential and only the sub-blocks
 * run side by side. A lane whose pass changed nothing would change nothing in the next pass
 * (same inputs), so passing on until every lane is done writes ggml's levels. Measured on
 * 0.02-scaled normal weights, one thread: ggml 10.5 ns/value of CPU, this 2.6.
 * Block: 32 bytes of high bits, 64 bytes of low 2 bits, 12 bytes of 6-bit scales, fp16 d
 * (110 bytes).
 */
#define Q3_SUB 16
#define Q3_BYTES 110

/*
 * make_q3_quants(16, 4, x, L, true) on the 8 sub-blocks of one group (lanes = sub-blocks); a
 * super-block is two groups, searched side by side.
 */
#define Q3_GROUPS 2

struct q3_group {
    __m256 x[Q3_SUB], w[Q3_SUB], wx[Q3_SUB];
    /* Per value, ggml's terms w*x*L and w*L*L of its current level (the same floats each time
       ggml recomputes them), so a move that changes nothing multiplies only for the new level. */
    __m256 lx[Q3_SUB], l2[Q3_SUB];
    __m256i levels[Q3_SUB];
    __m256 sumlx, suml2, sumlx2, all_zero; /* sumlx2: sumlx * sumlx */
};

static inline void q3_start(struct q3_group *g) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 sign_mask = _mm256_set1_ps(-0.f);
    __m256 amax = zero, max = zero;
    for (int i = 0; i < Q3_SUB; ++i) {
        const __m256 ax = _mm256_andnot_ps(sign_mask, g->x[i]);
        const __m256 larger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = _mm256_blendv_ps(amax, ax, larger);
        max = _mm256_blendv_ps(max, g->x[i], larger);
        g->w[i] = _mm256_mul_ps(g->x[i], g->x[i]);
        g->wx[i] = _mm256_mul_ps(g->w[i], g->x[i]);
    }
    g->all_zero = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
    const __m256 iscale = _mm256_div_ps(_mm256_set1_ps(-4.f), max);
    __m256 sumlx = zero, suml2 = zero;
    for (int i = 0; i < Q3_SUB; ++i) {
        g->levels[i] = clamp_range(round_lanes(_mm256_mul_ps(iscale, g->x[i])), -4, 3);
        const __m256 lf = _mm256_cvtepi32_ps(g->levels[i]);
        g->lx[i] = _mm256_mul_ps(g->wx[i], lf);
        g->l2[i] = _mm256_mul_ps(_mm256_mul_ps(g->w[i], lf), lf);
        sumlx = _mm256_add_ps(sumlx, g->lx[i]);
        suml2 = _mm256_add_ps(suml2, g->l2[i]);
    }
    g->sumlx = sumlx;
    g->suml2 = suml2;
    g->sumlx2 = _mm256_mul_ps(sumlx, sumlx);
}

/* ggml's move of value i to the level that suits the other values' sums; 1 if a lane took it. */
static inline int q3_move(struct q3_group *g, int i) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 suml2 = g->suml2;
    __m256 slx = _mm256_sub_ps(g->sumlx, g->lx[i]);
    const __m256 positive = _mm256_cmp_ps(slx, zero, _CMP_GT_OQ);
    __m256 sl2 = _mm256_sub_ps(suml2, g->l2[i]);
    const __m256i new_l =
        clamp_range(round_lanes(_mm256_div_ps(_mm256_mul_ps(g->x[i], sl2), slx)), -4, 3);
    const __m256 new_f = _mm256_cvtepi32_ps(new_l);
    const __m256 new_lx = _mm256_mul_ps(g->wx[i], new_f);
    const __m256 new_l2 = _mm256_mul_ps(_mm256_mul_ps(g->w[i], new_f), new_f);
    slx = _mm256_add_ps(slx, new_lx);
    sl2 = _mm256_add_ps(sl2, new_l2);
    /* ggml tests slx > 0 before the new level, then that it differs, sl2 > 0 and the error. */
    const __m256 same = _mm256_castsi256_ps(_mm256_cmpeq_epi32(new_l, g->levels[i]));
    const __m256 slx2 = _mm256_mul_ps(slx, slx);
    const __m256 lower = _mm256_cmp_ps(_mm256_mul_ps(slx2, suml2), _mm256_mul_ps(g->sumlx2, sl2),
                                       _CMP_GT_OQ);
    const __m256 take = _mm256_andnot_ps(
        same, _mm256_and_ps(positive, _mm256_and_ps(_mm256_cmp_ps(sl2, zero, _CMP_GT_OQ), lower)));
    /* Most moves change no lane: a predicted branch lets the next value start before this
       one's test is done (a blend would chain every value's latency to the previous one's). */
    if (_mm256_testz_ps(take, take)) return 0;
    g->levels[i] = _mm256_blendv_epi8(g->levels[i], new_l, _mm256_castps_si256(take));
    g->lx[i] = _mm256_blendv_ps(g->lx[i], new_lx, take);
    g->l2[i] = _mm256_blendv_ps(g->l2[i], new_l2, take);
    g->sumlx = _mm256_blendv_ps(g->sumlx, slx, take);
    g->suml2 = _mm256_blendv_ps(suml2, sl2, take);
    g->sumlx2 = _mm256_blendv_ps(g->sumlx2, slx2, take);
    return 1;
}

/* Levels L (l + 4, 0 for an all-zero sub-block) and scales of the groups' sub-blocks. */
static void q3_search(struct q3_group *groups, int count, float scales[][LANES]) {
    for (int k = 0; k < count; ++k) q3_start(&groups[k]);
    /* ggml passes over the values at most 5 times and stops after a pass that moved none. Once
       a group has gone a whole round of 16 values without a move, every value has seen the
       current sums and stayed: the rest of ggml's passes would move nothing, in any lane. */
    int quiet[Q3_GROUPS] = {0}, searching = count;
    for (int pass = 0; pass < 5 && searching > 0; ++pass) {
        for (int i = 0; i < Q3_SUB; ++i) {
            for (int k = 0; k < count; ++k) {
                if (quiet[k] == Q3_SUB) continue;
                if (q3_move(&groups[k], i)) quiet[k] = 0;
                else if (++quiet[k] == Q3_SUB) --searching;
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int k = 0; k < count; ++k) {
        struct q3_group *g = &groups[k];
        const __m256i zero_i = _mm256_castps_si256(g->all_zero);
        for (int i = 0; i < Q3_SUB; ++i)
            g->levels[i] =
                _mm256_andnot_si256(zero_i, _mm256_add_epi32(g->levels[i], _mm256_set1_epi32(4)));
        const __m256 scale = _mm256_blendv_ps(zero, _mm256_div_ps(g->sumlx, g->suml2),
                                              _mm256_cmp_ps(g->suml2, zero, _CMP_GT_OQ));
        _mm256_storeu_ps(scales[k], _mm256_blendv_ps(scale, zero, g->all_zero));
    }
}

/* The 256 values of a super-block as two groups of 8 sub-blocks. */
static void q3_load(const float *x, struct q3_group groups[2]) {
    for (int half = 0; half < 2; ++half) {
        const float *base = x + half * LANES * Q3_SUB;
        for (int column = 0; column < Q3_SUB; column += LANES) {
            __m256 *v = groups[half].x + column;
            for (int j = 0; j < LANES; ++j) v[j] = _mm256_loadu_ps(base + Q3_SUB * j + column);
            transpose_8x8(v);
        }
    }
}

/* Lane `lane` of 16 vectors of levels: the searched levels of one sub-block. */
static void q3_lane_levels(const __m256i levels[Q3_SUB], int lane, uint8_t out[Q3_SUB]) {
    for (int i = 0; i < Q3_SUB; ++i) {
        int32_t got[LANES];
        _mm256_storeu_si256((__m256i *)got, levels[i]);
        out[i] = (uint8_t)got[lane];
    }
}

/* Levels (l + 4) of 8 values quantized with the step of their sub-block, as int32 lanes. */
static inline __m256i q3_level(const float *v, __m256 step) {
    const __m256i l = clamp_range(round_lanes(_mm256_div_ps(_mm256_loadu_ps(v), step)), -4, 3);
    return _mm256_add_epi32(l, _mm256_set1_epi32(4));
}

/* Scales, final levels and bytes of one super-block from its two searched groups. */
static void q3_write(const float *x, const struct q3_group groups[2],
                     const float searched[2][LANES], uint8_t *out) {
    uint8_t level[SUPER];
    float scales[2 * LANES];
    memcpy(scales, searched[0], sizeof searched[0]);
    memcpy(scales + LANES, searched[1], sizeof searched[1]);
    float max_scale = 0.f, max_abs_scale = 0.f;
    for (int ib = 0; ib < 2 * LANES; ++ib) {
        const float abs_scale = scales[ib] < 0 ? -scales[ib] : scales[ib];
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    memset(out, 0, Q3_BYTES);
    uint8_t *hmask = out, *qs = out + 32, *packed = out + 96;
    int block_scales[2 * LANES];
    uint16_t d = 0; /* fp16 +0 */
    if (max_scale != 0.f) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 2 * LANES; ++j) {
            /* ggml stores the rounded value in an int8_t before clamping it. */
            const int8_t rounded = (int8_t)round_scalar(iscale * scales[j]);
            const int s = rounded < -32 ? -32 : rounded > 31 ? 31 : rounded;
            const int stored = s + 32;
            block_scales[j] = s;
            if (j < 8) packed[j] = (uint8_t)(stored & 0xF);
            else packed[j - 8] |= (uint8_t)((stored & 0xF) << 4);
            packed[j % 4 + 8] |= (uint8_t)((stored >> 4) << (2 * (j / 4)));
        }
        d = to_half(1 / iscale);
    } else {
        for (int j = 0; j < 2 * LANES; ++j) block_scales[j] = -32; /* the zeroed bytes, read back */
    }
    /* Two sub-blocks (32 values) at a time, packed from int32 to bytes in order. */
    const float d_f = from_half(d);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int j = 0; j < 2 * LANES; j += 2) {
        const float first = d_f * (float)block_scales[j];
        const float second = d_f * (float)block_scales[j + 1];
        const float *v = x + Q3_SUB * j;
        const __m256i a = q3_level(v, _mm256_set1_ps(first));
        const __m256i b = q3_level(v + LANES, _mm256_set1_ps(first));
        const __m256i c = q3_level(v + 2 * LANES, _mm256_set1_ps(second));
        const __m256i e = q3_level(v + 3 * LANES, _mm256_set1_ps(second));
        const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, e));
        _mm256_storeu_si256((__m256i *)(level + Q3_SUB * j), _mm256_permutevar8x32_epi32(bytes, order));
        /* A zero step keeps the levels of the search (ggml skips the sub-block). */
        if (first == 0.f)
            q3_lane_levels(groups[j / LANES].levels, j % LANES, level + Q3_SUB * j);
        if (second == 0.f)
            q3_lane_levels(groups[j / LANES].levels, (j + 1) % LANES, level + Q3_SUB * (j + 1));
    }
    /* The third bit of value j goes to bit j / 32 of hmask[j % 32]; byte i of the low bits
       holds values i, i + 32, i + 64, i + 96 of its 128 (branch-free: the bits are random). */
    const __m256i three = _mm256_set1_epi8(3);
    __m256i high = _mm256_setzero_si256(), low[LANES];
    for (int k = 0; k < LANES; ++k) {
        const __m256i l = _mm256_loadu_si256((const __m256i *)(level + 32 * k));
        const __m256i bit = _mm256_set1_epi8((char)(1 << k));
        high = _mm256_or_si256(high, _mm256_and_si256(_mm256_cmpgt_epi8(l, three), bit));
        low[k] = _mm256_and_si256(l, three);
    }
    _mm256_storeu_si256((__m256i *)hmask, high);
    for (int half = 0; half < 2; ++half) {
        const __m256i *four = low + 4 * half; /* 2-bit values: 16-bit shifts stay in their byte */
        const __m256i packed_low = _mm256_or_si256(
            _mm256_or_si256(four[0], _mm256_slli_epi16(four[1], 2)),
            _mm256_or_si256(_mm256_slli_epi16(four[2], 4), _mm256_slli_epi16(four[3], 6)));
        _mm256_storeu_si256((__m256i *)(qs + 32 * half), packed_low);
    }
    memcpy(out + 108, &d, 2);
}

/* 1 when this CPU runs the kernels (AVX2 and F16C); callers fall back to ggml otherwise. */
int dto_kquants_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

static size_t quantize(const struct kquant *kind, const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    for (int64_t first = 0; first + SUPER <= n; first += SUPER) {
        quantize_super_block(kind, src + first, out);
        out += kind->bytes;
    }
    return (size_t)(out - (uint8_t *)dst);
}

/* Quantize n values (a multiple of 256) of src into blocks at dst; return the bytes written. */
size_t dto_quantize_q4_k(const float *src, void *dst, int64_t n) { return quantize(&Q4_K, src, dst, n); }
size_t dto_quantize_q5_k(const float *src, void *dst, int64_t n) { return quantize(&Q5_K, src, dst, n); }

size_t dto_quantize_q6_k(const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    for (int64_t first = 0; first + SUPER <= n; first += SUPER) {
        quantize_q6_super_block(src + first, out);
        out += Q6_BYTES;
    }
    return (size_t)(out - (uint8_t *)dst);
}

size_t dto_quantize_q3_k(const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    struct q3_group groups[Q3_GROUPS];
    float scales[Q3_GROUPS][LANES];
    for (int64_t first = 0; first + SUPER <= n; first += SUPER) {
        q3_load(src + first, groups);
        q3_search(groups, Q3_GROUPS, scales);
        q3_write(src + first, groups, scales, out);
        out += Q3_BYTES;
    }
    return (size_t)(out - (uint8_t *)dst);
}
