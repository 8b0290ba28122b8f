/*
selective_scan.c -- Mamba-1 selective scan (S6), forward and backward (architecture.md §5.4 steps
4-8 and §5.6). Per batch item n and channel e, with state size NS:

  dt_t  = softplus(delta_raw[t] + delta_bias[e])       (threshold 20: v > 20 -> v)
  h_t   = exp(dt_t A[e,:]) * h_{t-1} + dt_t B_t u_t       (h_{-1} = 0)
  y_t   = (sum_s C_t[s] h_t[s] + D[e] u_t) * silu(z_t)    (no gate when z == NULL)

Precision: state, decays and sums are double in both builds; only the exp differs (libm in the
double build, a vectorisable double exp in the float build, see scan_exp_d).
Layout: tokens are processed in chunks of SCAN_CHUNK; B and C of a chunk are transposed once to
(token, state) so the inner loops run over NS contiguous states and vectorise; all E channels
share that copy. Forward saves nothing. Backward follows the GPU kernel's scheme: one pass
stores the state at every chunk boundary (E*NS per chunk), then chunks are processed from last
to first, each recomputing its states, decays exp(dt A) and dt from the stored carry and running
the adjoint recurrence dh_{t-1} = exp(dt_t A) (dh_t) with dh_t += dout_t C_t. Memory is
O(E*NS*L/SCAN_CHUNK + SCAN_CHUNK*NS), fine for L = 262144.
B and C are shared by all E channels, so dB and dC receive a sum over e: channels are split into
SCAN_GROUPS fixed groups with private partial sums, reduced in group order. Every value is
computed by one thread in a fixed order, so results do not depend on the number of threads.
Built twice (float and double), see ops.h.
*/
// FP exceptions are never enabled here, so let the compiler if-convert the selects in the
// state loops into vector blends (this changes no value: only which code computes it).
#pragma GCC optimize("no-trapping-math")
#include "real.h"
#include "check.h"
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#define SCAN_NS_MAX 64      // state size bound for the on-stack state vectors (Mamba uses 16)
#define SCAN_CHUNK 2048     // tokens per recompute chunk (the GPU kernel's 128 x 16 tile)
#define SCAN_GROUPS 8       // fixed channel groups for the deterministic dB/dC reduction
// Below this many inner-loop steps a loop runs on one thread: waking a team costs more than
// the work, and far more on a loaded machine.
#define PAR_MIN_WORK 200000.0

// State, decays and every sum are double in both builds (the float model's gradients are
// checked against the double model's at 1e-2 on an ill-conditioned network: float states were
// measured to break that). The double build uses libm's exp; the float build a vectorisable
// double exp (scan_exp_d, within ~2 ulp of libm) so the state loops run as SIMD.
typedef double sreal;
#ifdef SRM_REAL_DOUBLE
static inline double scan_exp(double v) { return exp(v); }
#else
// Branch-free so `omp simd` loops vectorise it (libm's exp is a call): x = n ln2 + r with
// |r| <= ln2/2 (fdlibm's two-part ln2), e^r by its Taylor series to r^13 (truncation < 2e-16),
// 2^n built in the exponent bits from the 1.5*2^52 rounding shifter. Below -708 it returns 0
// (libm: a value under 3.3e-308, i.e. a decay that is zero for every practical use).
static inline double scan_exp_d(double x)
{
    const double lo = -708.0, hi = 709.0, shifter = 6755399441055744.0;   // 1.5 * 2^52
    const double xc = x < lo ? lo : (x > hi ? hi : x);
    union { double d; int64_t i; } k = { .d = xc * 1.4426950408889634074 + shifter }, sh = { .d = shifter };
    const double n = k.d - shifter;                     // round(x / ln2)
    double r = xc - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;                      // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    union { int64_t i; double d; } scale = { .i = (k.i - sh.i + 1023) << 52 }, res;   // 2^n
    res.d = p * scale.d;
    res.i &= -(int64_t)(x >= lo);       // a mask, not a branch: the loop stays vectorisable
    return res.d;
}
static inline double scan_exp(double v) { return scan_exp_d(v); }
#endif
static inline double softplus20(double v) { return v > 20.0 ? v : log1p(exp(v)); }
static inline double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

// The two hot loops get an AVX2+FMA clone picked at load time (x86-64 with GNU ifunc only);
// the result then depends on the machine (FMA contraction), never on the thread count.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SCAN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SCAN_CLONES
#endif

static size_t bc_stride(scan_shape_t s) { return s.bc_nstride ? s.bc_nstride : (size_t)s.NS * s.L; }

// Tokens [t0, t0+tn) of one batch item's B and C (NS, L) into Bt, Ct (tn, NS). Ct/Cn may be
// NULL. Work-shared over the team when called inside a parallel region (ends with a barrier).
static void transpose_bc(sreal *Bt, sreal *Ct, const real *Bn, const real *Cn, size_t L,
                         size_t t0, size_t tn, int NS)
{
    #pragma omp for schedule(static)
    for (long k = 0; k < (long)tn; k++)
        for (int j = 0; j < NS; j++) {
            Bt[(size_t)k * NS + j] = (sreal)Bn[(size_t)j * L + t0 + k];
            if (Ct) Ct[(size_t)k * NS + j] = (sreal)Cn[(size_t)j * L + t0 + k];
        }
}

// One channel over tn tokens starting from state h (NS, updated in place). u, delta, z, y point
// at the chunk's first token of the channel's row; y == NULL only advances the state; z == NULL
// means no gate. Bt, Ct: (tn, NS). Ae: (NS) the channel's A.
SCAN_CLONES static void chunk_forward(sreal *h, real *y, const real *u, const real *delta, const real *z,
                          const sreal *Bt, const sreal *Ct, const sreal *Ae, sreal bias,
                          sreal De, size_t tn, int NS)
{
    for (size_t k = 0; k < tn; k++) {
        const sreal dt = softplus20((sreal)delta[k] + bias), ut = (sreal)u[k], dtu = dt * ut;
        const sreal *Bk = Bt + k * NS;
        if (!y) {
            #pragma omp simd
            for (int j = 0; j < NS; j++) h[j] = scan_exp(dt * Ae[j]) * h[j] + dtu * Bk[j];
            continue;
        }
        const sreal *Ck = Ct + k * NS;
        sreal acc = 0;
        #pragma omp simd reduction(+ : acc)
        for (int j = 0; j < NS; j++) {
            h[j] = scan_exp(dt * Ae[j]) * h[j] + dtu * Bk[j];
            acc += Ck[j] * h[j];
        }
        sreal out = acc + De * ut;
        if (z) { const sreal zt = (sreal)z[k]; out *= zt * sigmoid(zt); }
        y[k] = (real)out;
    }
}

// y, u, delta, z: (N, E, L)   A: (E, NS)   B, C: (N, NS, L) batch stride s.bc_nstride
// D, delta_bias: (E) or NULL (treated as 0)   z: NULL = no gate
void OP(selective_scan_forward)(real *y, const real *u, const real *delta, const real *A,
                                const real *B, const real *C, const real *D, const real *z,
                                const real *delta_bias, scan_shape_t s)
{
    ASSERT(s.NS >= 1 && s.NS <= SCAN_NS_MAX);
    const size_t L = s.L, bcs = bc_stride(s), chunk = L < SCAN_CHUNK ? L : SCAN_CHUNK;
    const int NS = s.NS, E = s.E;
    sreal *Bt = xmalloc(2 * chunk * NS * sizeof *Bt), *Ct = Bt + chunk * NS;
    sreal *hs = xmalloc((size_t)E * NS * sizeof *hs);        // (E, NS) state across chunks
    for (int n = 0; n < s.N; n++) {
        #pragma omp parallel if((double)E * L * NS >= PAR_MIN_WORK)
        {
            #pragma omp for schedule(static)
            for (long i = 0; i < (long)E * NS; i++) hs[i] = 0;
            for (size_t t0 = 0; t0 < L; t0 += SCAN_CHUNK) {
                const size_t tn = L - t0 < SCAN_CHUNK ? L - t0 : SCAN_CHUNK;
                transpose_bc(Bt, Ct, B + n * bcs, C + n * bcs, L, t0, tn, NS);
                #pragma omp for schedule(static)
                for (int e = 0; e < E; e++) {
                    const size_t row = ((size_t)n * E + e) * L + t0;
                    sreal Ae[SCAN_NS_MAX], h[SCAN_NS_MAX];
                    for (int j = 0; j < NS; j++) {
                        Ae[j] = (sreal)A[(size_t)e * NS + j];
                        h[j] = hs[(size_t)e * NS + j];
                    }
                    chunk_forward(h, y + row, u + row, delta + row, z ? z + row : NULL, Bt, Ct,
                                  Ae, delta_bias ? (sreal)delta_bias[e] : 0, D ? (sreal)D[e] : 0,
                                  tn, NS);
                    memcpy(hs + (size_t)e * NS, h, NS * sizeof *h);
                }
            }
        }
    }
    free(Bt);
    free(hs);
}

// Everything one backward call shares between its loops.
typedef struct {
    const real *u, *delta, *A, *B, *C, *D, *z, *bias, *dy;
    real *du, *ddelta, *dz;
    scan_shape_t s;
    size_t bcs, nch;
    sreal *carry;        // (E, nch, NS): h at the end of chunk c-1, i.e. before chunk c
    sreal *dh;           // (E, NS): adjoint carried from the later chunk
    sreal *Bt, *Ct;      // (SCAN_CHUNK, NS): the current chunk's B and C, transposed
    double *dA, *dD, *dbias;   // (E, NS), (E), (E): accumulated over n and all chunks
} scan_bwd_t;

// Pass 1 for batch item n (inside the parallel region): run the recurrence over every chunk but
// the last and keep the state at each chunk boundary.
static void store_carries(scan_bwd_t *b, int n)
{
    const scan_shape_t s = b->s;
    const size_t L = s.L;
    const int NS = s.NS;
    #pragma omp for schedule(static)
    for (int e = 0; e < s.E; e++) memset(b->carry + (size_t)e * b->nch * NS, 0, NS * sizeof(sreal));
    for (size_t c = 0; c + 1 < b->nch; c++) {
        const size_t t0 = c * SCAN_CHUNK;
        transpose_bc(b->Bt, NULL, b->B + n * b->bcs, NULL, L, t0, SCAN_CHUNK, NS);
        #pragma omp for schedule(static)
        for (int e = 0; e < s.E; e++) {
            const size_t row = ((size_t)n * s.E + e) * L + t0;
            sreal Ae[SCAN_NS_MAX];
            for (int j = 0; j < NS; j++) Ae[j] = (sreal)b->A[(size_t)e * NS + j];
            sreal *h = b->carry + ((size_t)e * b->nch + c + 1) * NS;
            memcpy(h, h - NS, NS * sizeof *h);
            chunk_forward(h, NULL, b->u + row, b->delta + row, NULL, b->Bt, NULL, Ae,
                          b->bias ? (sreal)b->bias[e] : 0, 0, SCAN_CHUNK, NS);
        }
    }
}

// Scratch of one channel group: states (tn+1, NS) (row 0 = carry), decays exp(dt A) (tn, NS),
// and per token dt, d softplus / d v, and the pre-gate output.
static size_t group_scratch(size_t chunk, int NS) { return (2 * chunk + 1) * NS + 3 * chunk; }

// Chunk c = [t0, t0+tn) of channel e, batch item n, walked backwards. S: group_scratch()
// elements. pB, pC: (tn, NS) partial dB, dC of this channel's group.
SCAN_CLONES static void chunk_backward(scan_bwd_t *b, int n, int e, size_t c, size_t tn, sreal *S,
                           sreal *pB, sreal *pC)
{
    const scan_shape_t s = b->s;
    const int NS = s.NS;
    const size_t t0 = c * SCAN_CHUNK, row = ((size_t)n * s.E + e) * s.L + t0;
    const real *u = b->u + row, *delta = b->delta + row, *dy = b->dy + row;
    const real *z = b->z ? b->z + row : NULL;
    const sreal bias = b->bias ? (sreal)b->bias[e] : 0, De = b->D ? (sreal)b->D[e] : 0;
    sreal *dh = b->dh + (size_t)e * NS;
    double *dA = b->dA + (size_t)e * NS;
    sreal *H = S, *decay = H + (tn + 1) * NS, *dtv = decay + tn * NS, *dsp = dtv + tn;
    sreal *ypre = dsp + tn;
    sreal Ae[SCAN_NS_MAX], dAc[SCAN_NS_MAX];
    for (int j = 0; j < NS; j++) { Ae[j] = (sreal)b->A[(size_t)e * NS + j]; dAc[j] = 0; }

    // recompute: H[k+1] = h_{t0+k}, the decays, dt and the pre-gate output
    memcpy(H, b->carry + ((size_t)e * b->nch + c) * NS, NS * sizeof *H);
    for (size_t k = 0; k < tn; k++) {
        const sreal v = (sreal)delta[k] + bias, dt = softplus20(v), ut = (sreal)u[k];
        const sreal dtu = dt * ut;
        const sreal *Bk = b->Bt + k * NS, *Ck = b->Ct + k * NS, *hp = H + k * NS;
        sreal *hn = H + (k + 1) * NS, *dk = decay + k * NS;
        dtv[k] = dt;
        dsp[k] = v > 20 ? 1 : sigmoid(v);
        sreal acc = 0;
        #pragma omp simd reduction(+ : acc)
        for (int j = 0; j < NS; j++) {
            const sreal a = scan_exp(dt * Ae[j]);
            dk[j] = a;
            hn[j] = a * hp[j] + dtu * Bk[j];
            acc += Ck[j] * hn[j];
        }
        ypre[k] = acc + De * ut;
    }
    double dDe = 0, dbe = 0;
    for (size_t k = tn; k-- > 0;) {
        const sreal dt = dtv[k], ut = (sreal)u[k], dtu = dt * ut;
        const sreal *h = H + (k + 1) * NS, *hprev = H + k * NS, *dk = decay + k * NS;
        const sreal *Bk = b->Bt + k * NS, *Ck = b->Ct + k * NS;
        sreal *pBk = pB + k * NS, *pCk = pC + k * NS;
        sreal gout = (sreal)dy[k];          // gradient w.r.t. the pre-gate output
        if (z) {
            const sreal zt = (sreal)z[k], sz = sigmoid(zt);
            if (b->dz) b->dz[row + k] += (real)(gout * ypre[k] * sz * (1 + zt * (1 - sz)));
            gout *= zt * sz;
        }
        dDe += (double)gout * ut;
        sreal sbu = 0, ddt = 0;
        #pragma omp simd reduction(+ : sbu, ddt)
        for (int j = 0; j < NS; j++) {
            const sreal a = dk[j], ahp = a * hprev[j];
            const sreal g = dh[j] + gout * Ck[j];          // dL/dh_t, all paths
            pCk[j] += gout * h[j];
            pBk[j] += g * dtu;
            sbu += g * Bk[j];
            ddt += g * (Bk[j] * ut + Ae[j] * ahp);
            dAc[j] += g * dt * ahp;
            dh[j] = g * a;                                  // becomes dL/dh_{t-1} (h_t path)
        }
        const sreal draw = ddt * dsp[k];
        if (b->ddelta) b->ddelta[row + k] += (real)draw;
        dbe += draw;
        if (b->du) b->du[row + k] += (real)(De * gout + sbu * dt);
    }
    for (int j = 0; j < NS; j++) dA[j] += dAc[j];     // this chunk's share, in chunk order
    b->dD[e] += dDe;
    b->dbias[e] += dbe;
}

// Gradients accumulate (+=); any may be NULL. ddelta is w.r.t. the raw delta (before bias and
// softplus), dA w.r.t. A (the caller applies the chain rule to A_log).
void OP(selective_scan_backward)(real *du, real *ddelta, real *dA, real *dB, real *dC, real *dD,
                                 real *dz, real *ddelta_bias, const real *dy,
                                 const real *u, const real *delta, const real *A,
                                 const real *B, const real *C, const real *D, const real *z,
                                 const real *delta_bias, scan_shape_t s)
{
    ASSERT(s.NS >= 1 && s.NS <= SCAN_NS_MAX);
    const int E = s.E, NS = s.NS;
    const size_t L = s.L;
    const int G = E < SCAN_GROUPS ? E : SCAN_GROUPS;
    scan_bwd_t b = { .u = u, .delta = delta, .A = A, .B = B, .C = C, .D = D, .z = z,
                     .bias = delta_bias, .dy = dy, .du = du, .ddelta = ddelta, .dz = dz,
                     .s = s, .bcs = bc_stride(s), .nch = (L + SCAN_CHUNK - 1) / SCAN_CHUNK };
    const size_t chunk = L < SCAN_CHUNK ? L : SCAN_CHUNK, gsz = group_scratch(chunk, NS);
    b.carry = xmalloc((size_t)E * b.nch * NS * sizeof *b.carry);
    b.dh = xmalloc((size_t)E * NS * sizeof *b.dh);
    b.Bt = xmalloc(2 * chunk * NS * sizeof *b.Bt);
    b.Ct = b.Bt + chunk * NS;
    b.dA = xcalloc((size_t)E * NS, sizeof(double));
    b.dD = xcalloc((size_t)E, sizeof(double));
    b.dbias = xcalloc((size_t)E, sizeof(double));
    sreal *S = xmalloc((size_t)G * gsz * sizeof *S);
    sreal *part = xmalloc((size_t)G * 2 * NS * chunk * sizeof *part);   // (G, 2, tn, NS)

    for (int n = 0; n < s.N; n++) {
        #pragma omp parallel if((double)E * L * NS >= PAR_MIN_WORK)
        {
            store_carries(&b, n);
            #pragma omp for schedule(static)
            for (long i = 0; i < (long)E * NS; i++) b.dh[i] = 0;
            for (size_t c = b.nch; c-- > 0;) {
                const size_t t0 = c * SCAN_CHUNK, tn = L - t0 < SCAN_CHUNK ? L - t0 : SCAN_CHUNK;
                transpose_bc(b.Bt, b.Ct, B + n * b.bcs, C + n * b.bcs, L, t0, tn, NS);
                #pragma omp for schedule(static)
                for (int g = 0; g < G; g++) {
                    sreal *pB = part + (size_t)g * 2 * NS * tn, *pC = pB + (size_t)NS * tn;
                    memset(pB, 0, 2 * (size_t)NS * tn * sizeof *pB);
                    for (int e = (int)((long)g * E / G); e < (int)((long)(g + 1) * E / G); e++)
                        chunk_backward(&b, n, e, c, tn, S + (size_t)g * gsz, pB, pC);
                }
                // reduce the group partials in group order (deterministic)
                #pragma omp for schedule(static)
                for (long k = 0; k < (long)tn; k++)
                    for (int j = 0; j < NS; j++) {
                        double sb = 0, sc = 0;
                        for (int g = 0; g < G; g++) {
                            const sreal *pB = part + (size_t)g * 2 * NS * tn;
                            sb += pB[(size_t)k * NS + j];
                            sc += pB[(size_t)NS * tn + (size_t)k * NS + j];
                        }
                        const size_t i = n * b.bcs + (size_t)j * L + t0 + k;
                        if (dB) dB[i] += (real)sb;
                        if (dC) dC[i] += (real)sc;
                    }
            }
        }
    }
    for (int e = 0; e < E; e++) {
        if (dD) dD[e] += (real)b.dD[e];
        if (ddelta_bias) ddelta_bias[e] += (real)b.dbias[e];
        if (dA) for (int j = 0; j < NS; j++) dA[(size_t)e * NS + j] += (real)b.dA[(size_t)e * NS + j];
    }
    free(b.carry); free(b.dh); free(b.Bt); free(b.dA); free(b.dD); free(b.dbias); free(S); free(part);
}
