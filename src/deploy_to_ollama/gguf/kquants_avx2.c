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

/* An 8x8 transpose: r[i] becomes the vector of element i of every input r[0..7]. */
static inline void transpose8(__m256 r[LANES]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* out[i * stride] := value i of each of the 8 sub-blocks of `sub` values that start at x. */
static inline void load_lanes(const float *x, int sub, __m256 *out, int stride) {
    for (int k = 0; k < sub; k += LANES) {
        __m256 r[LANES];
        for (int j = 0; j < LANES; ++j) r[j] = _mm256_loadu_ps(x + sub * j + k);
        transpose8(r);
        for (int i = 0; i < LANES; ++i) out[(k + i) * stride] = r[i];
    }
}

/* Back to value order: out[v / 8] := levels v..v+7 of the 8 sub-blocks whose lanes in[] hold. */
static inline void unload_lanes(const __m256i *in, int stride, int sub, __m256i *out) {
    for (int k = 0; k < sub; k += LANES) {
        __m256 r[LANES];
        for (int i = 0; i < LANES; ++i) r[i] = _mm256_castsi256_ps(in[(k + i) * stride]);
        transpose8(r);
        for (int j = 0; j < LANES; ++j) out[(sub * j + k) / LANES] = _mm256_castps_si256(r[j]);
    }
}

/* The 256 levels (0..255, as int32 in value order) as bytes. */
static inline void store_levels(const __m256i lv[SUPER / LANES], uint8_t level[SUPER]) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int k = 0; k < SUPER / LANES; k += 4) {
        const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(lv[k], lv[k + 1]),
                                                  _mm256_packs_epi32(lv[k + 2], lv[k + 3]));
        _mm256_storeu_si256((__m256i *)(level + LANES * k),
                            _mm256_permutevar8x32_epi32(bytes, order));
    }
}

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
    __m256i lv[SUPER / LANES];
    for (int half = 0; half < 2; ++half) {
        __m256 xt[Q6_SUB];
        __m256i levels_v[Q6_SUB];
        load_lanes(x + half * LANES * Q6_SUB, Q6_SUB, xt, 1);
        q6_search(xt, levels_v, scales + half * LANES);
        unload_lanes(levels_v, 1, Q6_SUB, lv + half * Q6_SUB);
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
            lv[(Q6_SUB * j) / LANES + half] = _mm256_add_epi32(l, _mm256_set1_epi32(32));
        }
    }
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
    float max_scale = 0.f, amax = 0.f;
    for (int j = 0; j < 2 * LANES; ++j) {
        const float abs_scale = scales[j] < 0 ? -scales[j] : scales[j];
        if (abs_scale > amax) {
            amax = abs_scale;
            max_scale = scales[j];
        }
    }
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
    for (int j = 0; j < 2 * LANES; ++j) {
        const float step = d_f * (float)q3_scale(packed, j);
        if (step == 0.f) continue; /* keep the levels of the search */
        const __m256 sv = _mm256_set1_ps(step);
        for (int half = 0; half < 2; ++half) {
            const float *v = x + Q3_SUB * j + LANES * half;
            __m256i l = clamp_range(round_lanes(_mm256_div_ps(_mm256_loadu_ps(v), sv)), -4, 3);
            lv[(Q3_SUB * j) / LANES + half] = _mm256_add_epi32(l, _mm256_set1_epi32(4));
        }
    }
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
        /* Past the end, the last super-block is searched again and written to scratch. */
        const float *x[GROUP];
        uint8_t *dest[GROUP];
        for (int g = 0; g < GROUP; ++g) {
            const int64_t at = b + g < blocks ? b + g : blocks - 1;
            x[g] = src + at * SUPER;
            dest[g] = b + g < blocks ? out + (b + g) * kind->bytes : scratch;
        }
        quantize_super_blocks(kind, x, dest);
    }
    return (size_t)(blocks * kind->bytes);
}

/* Quantize n values (a multiple of 256) of src into blocks at dst; return the bytes written. */
size_t dto_quantize_q4_k(const float *src, void *dst, int64_t n) { return quantize(&Q4_K, src, dst, n); }
size_t dto_quantize_q5_k(const float *src, void *dst, int64_t n) { return quantize(&Q5_K, src, dst, n); }

size_t dto_quantize_q3_k(const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    const int64_t blocks = n / SUPER;
    uint8_t scratch[Q3_BYTES];
    for (int64_t b = 0; b < blocks; b += Q3_GROUP) {
        /* Past the end, the last super-block is searched again and written to scratch. */
        const float *x[Q3_GROUP];
        uint8_t *dest[Q3_GROUP];
        for (int g = 0; g < Q3_GROUP; ++g) {
            const int64_t at = b + g < blocks ? b + g : blocks - 1;
            x[g] = src + at * SUPER;
            dest[g] = b + g < blocks ? out + (b + g) * Q3_BYTES : scratch;
        }
        quantize_q3_super_blocks(x, dest);
    }
    return (size_t)(blocks * Q3_BYTES);
}

size_t dto_quantize_q6_k(const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    for (int64_t first = 0; first + SUPER <= n; first += SUPER) {
        quantize_q6_super_block(src + first, out);
        out += Q6_BYTES;
    }
    return (size_t)(out - (uint8_t *)dst);
}
