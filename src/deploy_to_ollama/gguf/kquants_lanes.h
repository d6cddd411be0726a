/*
 * Lane helpers shared by the AVX2 K-quant kernels (kquants_avx2.c: Q4_K/Q5_K,
 * kquants_q6_avx2.c: Q6_K, kquants_q3_avx2.c: Q3_K): rounding, clamping, fp16, and moving
 * sub-blocks in and out of the 8 lanes of a vector. Every helper performs exactly the scalar
 * IEEE single-precision operations of ggml's reference code, lane by lane.
 */
#ifndef DTO_KQUANTS_LANES_H
#define DTO_KQUANTS_LANES_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define SUPER 256
#define SUB 32
#define LANES 8

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

static inline __m256i clamp_range(__m256i v, int lo, int hi) {
    return _mm256_max_epi32(_mm256_set1_epi32(lo), _mm256_min_epi32(_mm256_set1_epi32(hi), v));
}

/*
 * The scale of largest magnitude, with its sign (Q3_K, Q6_K quantize their 16 scales by it);
 * *magnitude (unless NULL) gets its absolute value. The first of equal magnitudes wins, as in ggml.
 */
static inline float signed_absmax(const float scales[2 * LANES], float *magnitude) {
    float max_scale = 0.f, max_abs = 0.f;
    for (int j = 0; j < 2 * LANES; ++j) {
        const float abs_scale = scales[j] < 0 ? -scales[j] : scales[j];
        if (abs_scale > max_abs) {
            max_abs = abs_scale;
            max_scale = scales[j];
        }
    }
    if (magnitude != NULL) *magnitude = max_abs;
    return max_scale;
}

/*
 * The final levels of the 16 sub-blocks of 16 values (Q3_K, Q6_K): value / step, rounded,
 * clamped to [lo, -lo - 1] and stored as l - lo; a sub-block whose step is 0 keeps the levels
 * its search left in lv (as ggml does).
 */
static inline void requantize_16(const float *x, const float step[2 * LANES], int lo,
                                 __m256i lv[SUPER / LANES]) {
    for (int j = 0; j < 2 * LANES; ++j) {
        if (step[j] == 0.f) continue;
        const __m256 sv = _mm256_set1_ps(step[j]);
        for (int half = 0; half < 2; ++half) {
            const float *v = x + 16 * j + LANES * half;
            __m256i l = clamp_range(round_lanes(_mm256_div_ps(_mm256_loadu_ps(v), sv)), lo, -lo - 1);
            lv[(16 * j) / LANES + half] = _mm256_add_epi32(l, _mm256_set1_epi32(-lo));
        }
    }
}

/*
 * Point the group of super-blocks starting at block b: past the last block, the last one is
 * searched again (x) and written to scratch (dest), so a short tail needs no other code path.
 */
static inline void point_group(const float *src, uint8_t *out, int64_t b, int64_t blocks,
                               int group, int bytes, uint8_t *scratch, const float **x,
                               uint8_t **dest) {
    for (int g = 0; g < group; ++g) {
        const int64_t at = b + g < blocks ? b + g : blocks - 1;
        x[g] = src + at * SUPER;
        dest[g] = b + g < blocks ? out + (b + g) * bytes : scratch;
    }
}

#endif
