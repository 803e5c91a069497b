/* rANS decoding, bit-identical to constriction's DefaultAnsCoder (32-bit words, 64-bit state)
 * with a DefaultContiguousCategoricalEntropyModel (24-bit precision), as built by
 * constriction.stream.model.Categorical(p, perfect=False) (Duda 2013; constriction 0.4-0.5,
 * src/stream/stack.rs: read_initial_state, decode_symbol).
 *
 * The compressed words are a stack: decoding pops from the end. The state starts as the last
 * word (which must be non-zero) followed by the one before it; each symbol takes the low 24
 * bits as a quantile q, finds s with cdf[s] <= q < cdf[s+1], sets
 * state = (state >> 24) * (cdf[s+1] - cdf[s]) + (q - cdf[s]) and refills one word while the
 * state is below 2^32 and words remain. The coder is empty at the end iff state == 0.
 *
 * The symbol search uses 4096 buckets of the quantile range: each bucket knows the first and
 * last symbol it can hit, so small alphabets need one comparison and large ones a short
 * binary search. Everything is bounds-safe for hostile input: q < 2^24 = cdf[nsym], and the
 * caller guarantees cdf is strictly increasing from 0 with nsym >= 2.
 */
#include <stdint.h>
#include <stdlib.h>

#define PRECISION 24
#define BUCKET_BITS 12
#define NBUCKETS (1 << BUCKET_BITS)

/* Returns 0 when the coder is empty after `count` symbols, 1 when data is left, -1 when the
 * last word is zero (constriction refuses such data), -2 on allocation failure. */
int dz_ans_decode(const uint32_t *words, int64_t nwords, const uint32_t *cdf, int32_t nsym,
                  const int64_t *symbol_map, int64_t count, int64_t *out) {
    uint32_t *lo = (uint32_t *)malloc(sizeof(uint32_t) * (NBUCKETS + 1));
    if (!lo) return -2;
    uint32_t s = 0;
    for (uint32_t b = 0; b < NBUCKETS; b++) {
        uint32_t q = b << (PRECISION - BUCKET_BITS);
        while (s + 1 < (uint32_t)nsym && cdf[s + 1] <= q) s++;
        lo[b] = s;
    }
    lo[NBUCKETS] = (uint32_t)nsym - 1;

    int64_t pos = nwords;
    uint64_t state = 0;
    if (pos > 0) {
        uint32_t w = words[--pos];
        if (w == 0) { free(lo); return -1; }
        state = w;
        while (pos > 0) {
            state = (state << 32) | words[--pos];
            if (state >= ((uint64_t)1 << 32)) break;
        }
    }
    const uint64_t mask = ((uint64_t)1 << PRECISION) - 1;
    for (int64_t i = 0; i < count; i++) {
        uint32_t q = (uint32_t)(state & mask);
        uint32_t b = q >> (PRECISION - BUCKET_BITS);
        uint32_t a = lo[b], z = lo[b + 1];
        while (a < z) {  /* largest symbol in [a, z] with cdf <= q */
            uint32_t mid = (a + z + 1) >> 1;
            if (cdf[mid] <= q) a = mid; else z = mid - 1;
        }
        uint32_t left = cdf[a];
        state = (state >> PRECISION) * (uint64_t)(cdf[a + 1] - left) + (q - left);
        if (state < ((uint64_t)1 << 32) && pos > 0) state = (state << 32) | words[--pos];
        out[i] = symbol_map ? symbol_map[a] : (int64_t)a;
    }
    free(lo);
    return (state == 0 && pos == 0) ? 0 : 1;
}
