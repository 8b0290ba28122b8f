/*
selective_scan.c -- Mamba-1 selective scan (S6), forward and backward (architecture.md §5.4 steps
4-8 and §5.6). Per batch item n and channel e, with state size NS:

  dt_t  = softplus(delta_raw[t] + delta_bias[e])       (threshold 20: v > 20 -> v)
  h_t   = exp(dt_t A[e,:]) * h_{t-1} + dt_t B_t u_t       (h_{-1} = 0)
  y_t   = (sum_s C_t[s] h_t[s] + D[e] u_t) * silu(z_t)    (no gate when z == NULL)

State and every sum are kept in double. Forward saves nothing. Backward follows the GPU kernel's
scheme: one pass stores the state at every SCAN_CHUNK boundary (E*NS doubles per chunk), then
chunks are processed from last to first, each recomputing its states from the stored carry and
running the adjoint recurrence dh_{t-1} = exp(dt_t A) (dh_t) with dh_t += dout_t C_t. So memory
is O(E*NS*L/SCAN_CHUNK + SCAN_CHUNK*NS) rather than O(E*NS*L), fine for L = 262144.
B and C are shared by all E channels, so dB and dC receive a sum over e: channels are split into
SCAN_GROUPS fixed groups with private double partial sums, reduced in group order, which keeps the
result independent of the number of threads. Built twice (float and double), see ops.h.
*/
#include "real.h"
#include "check.h"
#include <math.h>
#include <string.h>
#include <stdlib.h>

#define SCAN_NS_MAX 64      // state size bound for the on-stack state vectors (Mamba uses 16)
#define SCAN_CHUNK 2048     // tokens per recompute chunk (the GPU kernel's 128 x 16 tile)
#define SCAN_GROUPS 8       // fixed channel groups for the deterministic dB/dC reduction
// Below this many inner-loop steps a loop runs on one thread: waking a team costs more than
// the work, and far more on a loaded machine.
#define PAR_MIN_WORK 200000.0

static double softplus20(double v) { return v > 20.0 ? v : log1p(exp(v)); }
static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

static size_t bc_stride(scan_shape_t s) { return s.bc_nstride ? s.bc_nstride : (size_t)s.NS * s.L; }

// y, u, delta, z: (N, E, L)   A: (E, NS)   B, C: (N, NS, L) batch stride s.bc_nstride
// D, delta_bias: (E) or NULL (treated as 0)   z: NULL = no gate
void OP(selective_scan_forward)(real *y, const real *u, const real *delta, const real *A,
                                const real *B, const real *C, const real *D, const real *z,
                                const real *delta_bias, scan_shape_t s)
{
    ASSERT(s.NS >= 1 && s.NS <= SCAN_NS_MAX);
    const size_t L = s.L, bcs = bc_stride(s);
    const int NS = s.NS;
    #pragma omp parallel for schedule(static) if((double)s.N * s.E * L * s.NS >= PAR_MIN_WORK)
    for (long ne = 0; ne < (long)s.N * s.E; ne++) {
        const int n = (int)(ne / s.E), e = (int)(ne % s.E);
        const real *Bn = B + n * bcs, *Cn = C + n * bcs, *Ae = A + (size_t)e * NS;
        const size_t row = (size_t)ne * L;
        const double bias = delta_bias ? (double)delta_bias[e] : 0.0;
        const double De = D ? (double)D[e] : 0.0;
        double h[SCAN_NS_MAX];
        for (int k = 0; k < NS; k++) h[k] = 0;
        for (size_t t = 0; t < L; t++) {
            const double dt = softplus20((double)delta[row + t] + bias), ut = u[row + t];
            double acc = 0;
            for (int k = 0; k < NS; k++) {
                h[k] = exp(dt * Ae[k]) * h[k] + dt * Bn[(size_t)k * L + t] * ut;
                acc += (double)Cn[(size_t)k * L + t] * h[k];
            }
            double out = acc + De * ut;
            if (z) { double zt = z[row + t]; out *= zt * sigmoid(zt); }
            y[row + t] = (real)out;
        }
    }
}

// Everything one backward call shares between its loops.
typedef struct {
    const real *u, *delta, *A, *B, *C, *D, *z, *bias, *dy;
    scan_shape_t s;
    size_t bcs, nch;
    double *carry;       // (E, nch, NS): h at the end of chunk c-1, i.e. before chunk c
    double *dh;          // (E, NS): adjoint carried from the later chunk
    double *dA, *dD, *dbias;   // (E, NS), (E), (E): accumulated over n and all chunks
} scan_bwd_t;

// Pass 1 for batch item n: run the recurrence over the whole sequence and keep the state at
// each chunk boundary.
static void store_carries(scan_bwd_t *b, int n)
{
    const scan_shape_t s = b->s;
    const size_t L = s.L;
    const int NS = s.NS;
    #pragma omp parallel for schedule(static) if((double)s.E * L * NS >= PAR_MIN_WORK)
    for (int e = 0; e < s.E; e++) {
        const real *Bn = b->B + n * b->bcs, *Ae = b->A + (size_t)e * NS;
        const size_t row = ((size_t)n * s.E + e) * L;
        const double bias = b->bias ? (double)b->bias[e] : 0.0;
        double h[SCAN_NS_MAX];
        for (int k = 0; k < NS; k++) h[k] = 0;
        for (size_t t = 0; t < L; t++) {
            if (t % SCAN_CHUNK == 0)
                memcpy(b->carry + ((size_t)e * b->nch + t / SCAN_CHUNK) * NS, h, NS * sizeof *h);
            const double dt = softplus20((double)b->delta[row + t] + bias), ut = b->u[row + t];
            for (int k = 0; k < NS; k++)
                h[k] = exp(dt * Ae[k]) * h[k] + dt * Bn[(size_t)k * L + t] * ut;
        }
    }
}

// One chunk [t0, t0+tn) of channel e, batch item n, walked backwards. H: ((tn+1), NS) scratch
// for the states (row 0 = carry), followed by (tn, NS) for the decays exp(dt A), kept from the
// recompute so the reverse walk needs no exp per state. pB, pC: (NS, tn) partial dB, dC of this
// channel's group.
static void chunk_backward(scan_bwd_t *b, int n, int e, size_t t0, size_t tn, double *H,
                           double *pB, double *pC, real *du, real *ddelta, real *dz)
{
    const scan_shape_t s = b->s;
    const size_t L = s.L;
    const int NS = s.NS;
    const real *Bn = b->B + n * b->bcs, *Cn = b->C + n * b->bcs, *Ae = b->A + (size_t)e * NS;
    const size_t row = ((size_t)n * s.E + e) * L;
    const double bias = b->bias ? (double)b->bias[e] : 0.0;
    const double De = b->D ? (double)b->D[e] : 0.0;
    double *dh = b->dh + (size_t)e * NS, *dA = b->dA + (size_t)e * NS;
    double *decay = H + (tn + 1) * NS;

    // recompute h for the chunk: H[k+1] = h_{t0+k}
    memcpy(H, b->carry + ((size_t)e * b->nch + t0 / SCAN_CHUNK) * NS, NS * sizeof *H);
    for (size_t k = 0; k < tn; k++) {
        const size_t t = t0 + k;
        const double dt = softplus20((double)b->delta[row + t] + bias), ut = b->u[row + t];
        for (int j = 0; j < NS; j++) {
            const double a = exp(dt * Ae[j]);
            decay[k * NS + j] = a;
            H[(k + 1) * NS + j] = a * H[k * NS + j] + dt * Bn[(size_t)j * L + t] * ut;
        }
    }
    for (size_t k = tn; k-- > 0;) {
        const size_t t = t0 + k;
        const double v = (double)b->delta[row + t] + bias, dt = softplus20(v);
        const double ut = b->u[row + t];
        const double *h = H + (k + 1) * NS, *hprev = H + k * NS;
        double gout = b->dy[row + t];          // gradient w.r.t. the pre-gate output
        if (b->z) {
            double ypre = De * ut;
            for (int j = 0; j < NS; j++) ypre += (double)Cn[(size_t)j * L + t] * h[j];
            const double zt = b->z[row + t], sz = sigmoid(zt);
            if (dz) dz[row + t] += (real)(gout * ypre * sz * (1.0 + zt * (1.0 - sz)));
            gout *= zt * sz;
        }
        double dut = De * gout, ddt = 0;
        b->dD[e] += gout * ut;
        for (int j = 0; j < NS; j++) {
            const double Bt = Bn[(size_t)j * L + t], Ct = Cn[(size_t)j * L + t];
            const double a = decay[k * NS + j];
            const double g = dh[j] + gout * Ct;             // dL/dh_t, all paths
            pC[(size_t)j * tn + k] += gout * h[j];
            pB[(size_t)j * tn + k] += g * dt * ut;
            dut += g * dt * Bt;
            ddt += g * (Bt * ut + Ae[j] * a * hprev[j]);
            dA[j] += g * dt * a * hprev[j];
            dh[j] = g * a;                                  // becomes dL/dh_{t-1} (h_t path)
        }
        const double draw = v > 20.0 ? ddt : ddt * sigmoid(v);
        if (ddelta) ddelta[row + t] += (real)draw;
        b->dbias[e] += draw;
        if (du) du[row + t] += (real)dut;
    }
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
                     .bias = delta_bias, .dy = dy, .s = s, .bcs = bc_stride(s),
                     .nch = (L + SCAN_CHUNK - 1) / SCAN_CHUNK };
    const size_t chunk = L < SCAN_CHUNK ? L : SCAN_CHUNK;
    b.carry = xmalloc((size_t)E * b.nch * NS * sizeof(double));
    b.dh = xmalloc((size_t)E * NS * sizeof(double));
    b.dA = xcalloc((size_t)E * NS, sizeof(double));
    b.dD = xcalloc((size_t)E, sizeof(double));
    b.dbias = xcalloc((size_t)E, sizeof(double));
    const size_t hsz = (2 * chunk + 1) * NS;     // per group: states and decays of a chunk
    double *H = xmalloc((size_t)G * hsz * sizeof(double));
    double *part = xmalloc((size_t)G * 2 * NS * chunk * sizeof(double));

    for (int n = 0; n < s.N; n++) {
        store_carries(&b, n);
        memset(b.dh, 0, (size_t)E * NS * sizeof(double));
        for (size_t c = b.nch; c-- > 0;) {
            const size_t t0 = c * SCAN_CHUNK, tn = L - t0 < SCAN_CHUNK ? L - t0 : SCAN_CHUNK;
            #pragma omp parallel for schedule(static) if((double)E * tn * NS >= PAR_MIN_WORK)
            for (int g = 0; g < G; g++) {
                double *pB = part + (size_t)g * 2 * NS * tn, *pC = pB + (size_t)NS * tn;
                memset(pB, 0, 2 * (size_t)NS * tn * sizeof(double));
                for (int e = (int)((long)g * E / G); e < (int)((long)(g + 1) * E / G); e++)
                    chunk_backward(&b, n, e, t0, tn, H + (size_t)g * hsz, pB, pC,
                                   du, ddelta, dz);
            }
            // reduce the group partials in group order (deterministic)
            #pragma omp parallel for schedule(static) if((double)G * tn * NS >= PAR_MIN_WORK)
            for (int j = 0; j < NS; j++)
                for (size_t k = 0; k < tn; k++) {
                    double sb = 0, sc = 0;
                    for (int g = 0; g < G; g++) {
                        const double *pB = part + (size_t)g * 2 * NS * tn;
                        sb += pB[(size_t)j * tn + k];
                        sc += pB[(size_t)NS * tn + (size_t)j * tn + k];
                    }
                    const size_t i = n * b.bcs + (size_t)j * L + t0 + k;
                    if (dB) dB[i] += (real)sb;
                    if (dC) dC[i] += (real)sc;
                }
        }
    }
    for (int e = 0; e < E; e++) {
        if (dD) dD[e] += (real)b.dD[e];
        if (ddelta_bias) ddelta_bias[e] += (real)b.dbias[e];
        if (dA) for (int j = 0; j < NS; j++) dA[(size_t)e * NS + j] += (real)b.dA[(size_t)e * NS + j];
    }
    free(b.carry); free(b.dh); free(b.dA); free(b.dD); free(b.dbias); free(H); free(part);
}
