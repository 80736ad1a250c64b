// The inverted-dropout mask, drawn from ChaCha8 bit for bit as the CPU's
// rand_chacha stream, so a model trains the same on every backend. Its Rust
// side (reference, CPU, launch, tests) is src/backend/ops/dropout.rs.
#include "common.cuh"

// Dropout mask: mask[i] = 0 when word i of the ChaCha8 stream (key, stream)
// is below `cut`, else `keep`. rand_chacha's state (ChaCha8Rng after
// seed_from_u64 and set_stream): words 0-3 the constants, 4-11 the key
// (little-endian words of the 32-byte seed), 12-13 the 64-bit block counter
// (low word first), 14-15 the 64-bit stream id (low word first); word i of the
// output is word i % 16 of block i / 16, words in the block's state order.
//
// Each thread computes whole blocks (16 words); a thread block stages its
// 256 ChaCha blocks in shared memory so the writes to `mask` are coalesced.
#define DROPOUT_THREADS 256
#define DROPOUT_TILE (DROPOUT_THREADS * 16)
// Row stride 17: the 16 words a thread writes fall in distinct banks across a warp.
#define DROPOUT_STRIDE 17

struct DropoutParams {
    float *mask;
    unsigned long long stream, cut;
    unsigned key[8];
    int n;
    float keep;
};

__device__ __forceinline__ unsigned rotl32(unsigned v, int s) { return (v << s) | (v >> (32 - s)); }

#define CHACHA_QR(a, b, c, d)                                                                                  \
    do {                                                                                                       \
        a += b;                                                                                                \
        d = rotl32(d ^ a, 16);                                                                                 \
        c += d;                                                                                                \
        b = rotl32(b ^ c, 12);                                                                                 \
        a += b;                                                                                                \
        d = rotl32(d ^ a, 8);                                                                                  \
        c += d;                                                                                                \
        b = rotl32(b ^ c, 7);                                                                                  \
    } while (0)

// ChaCha with 8 rounds (4 double rounds) of block `counter`; out = the 16
// output words (working state plus input state).
__device__ __forceinline__ void chacha8_block(const DropoutParams &p, unsigned long long counter, unsigned out[16]) {
    unsigned s[16];
    s[0] = 0x61707865u;
    s[1] = 0x3320646eu;
    s[2] = 0x79622d32u;
    s[3] = 0x6b206574u;
    for (int k = 0; k < 8; k++) s[4 + k] = p.key[k];
    s[12] = (unsigned)counter;
    s[13] = (unsigned)(counter >> 32);
    s[14] = (unsigned)p.stream;
    s[15] = (unsigned)(p.stream >> 32);
    unsigned x0 = s[0], x1 = s[1], x2 = s[2], x3 = s[3], x4 = s[4], x5 = s[5], x6 = s[6], x7 = s[7];
    unsigned x8 = s[8], x9 = s[9], x10 = s[10], x11 = s[11], x12 = s[12], x13 = s[13], x14 = s[14], x15 = s[15];
    for (int r = 0; r < 4; r++) {
        CHACHA_QR(x0, x4, x8, x12);
        CHACHA_QR(x1, x5, x9, x13);
        CHACHA_QR(x2, x6, x10, x14);
        CHACHA_QR(x3, x7, x11, x15);
        CHACHA_QR(x0, x5, x10, x15);
        CHACHA_QR(x1, x6, x11, x12);
        CHACHA_QR(x2, x7, x8, x13);
        CHACHA_QR(x3, x4, x9, x14);
    }
    out[0] = x0 + s[0];
    out[1] = x1 + s[1];
    out[2] = x2 + s[2];
    out[3] = x3 + s[3];
    out[4] = x4 + s[4];
    out[5] = x5 + s[5];
    out[6] = x6 + s[6];
    out[7] = x7 + s[7];
    out[8] = x8 + s[8];
    out[9] = x9 + s[9];
    out[10] = x10 + s[10];
    out[11] = x11 + s[11];
    out[12] = x12 + s[12];
    out[13] = x13 + s[13];
    out[14] = x14 + s[14];
    out[15] = x15 + s[15];
}

QUORUM_KERNEL void quorum_dropout_mask(DropoutParams p) {
    QUORUM_REQUIRE(blockDim.x == DROPOUT_THREADS);
    QUORUM_SHARED(float, stage, [DROPOUT_THREADS * DROPOUT_STRIDE]);
    const int t = threadIdx.x;
    for (long long base = (long long)blockIdx.x * DROPOUT_TILE; base < p.n; base += (long long)gridDim.x * DROPOUT_TILE) {
        unsigned words[16];
        chacha8_block(p, (unsigned long long)(base / 16 + t), words);
        for (int j = 0; j < 16; j++) stage[t * DROPOUT_STRIDE + j] = (unsigned long long)words[j] < p.cut ? 0.0f : p.keep;
        __syncthreads();
        for (int e = t; e < DROPOUT_TILE; e += DROPOUT_THREADS) {
            long long i = base + e;
            if (i < p.n) p.mask[i] = stage[(e >> 4) * DROPOUT_STRIDE + (e & 15)];
        }
        __syncthreads(); // the next tile overwrites the stage
    }
}
QUORUM_EMU_ENTRY(quorum_dropout_mask, DropoutParams)
