/*
components.c -- the largest 26-connected component of each chosen class (components.h).
One scan visits every component once by breadth-first search (a queue of voxel indices, grown
as needed), recording each class's largest and its first voxel; a second search from those
seeds marks what stays; a last pass clears the rest.
*/
#include "components.h"
#include "check.h"
#include <stdlib.h>
#include <string.h>

typedef struct { size_t *v; size_t cap; } queue_t;

// Visit the component of lab[seed]'s class holding seed, marking each voxel `mark` in seen
// (seed must not hold it yet). Returns the component's size.
static size_t flood(const uint8_t *lab, uint8_t *seen, uint8_t mark, const int d[3], size_t seed, queue_t *q)
{
    const uint8_t cls = lab[seed];
    size_t head = 0, tail = 0, size = 0;
    q->v[tail++] = seed;
    seen[seed] = mark;
    while (head < tail) {
        size_t p = q->v[head++];
        size++;
        int k = (int)(p % d[2]), j = (int)(p / d[2] % d[1]), i = (int)(p / d[2] / d[1]);
        for (int di = -1; di <= 1; di++) {
            if (i + di < 0 || i + di >= d[0]) continue;
            for (int dj = -1; dj <= 1; dj++) {
                if (j + dj < 0 || j + dj >= d[1]) continue;
                for (int dk = -1; dk <= 1; dk++) {
                    if (k + dk < 0 || k + dk >= d[2]) continue;
                    size_t n = ((size_t)(i + di) * d[1] + (j + dj)) * d[2] + (k + dk);
                    if (lab[n] != cls || seen[n] == mark) continue;
                    seen[n] = mark;
                    if (tail == q->cap && head >= q->cap / 2) {     // drop the visited front
                        memmove(q->v, q->v + head, (tail - head) * sizeof *q->v);
                        tail -= head;
                        head = 0;
                    } else if (tail == q->cap) {
                        q->cap *= 2;
                        q->v = xrealloc(q->v, q->cap * sizeof *q->v);
                    }
                    q->v[tail++] = n;
                }
            }
        }
    }
    return size;
}

int64_t components_keep_largest(uint8_t *lab, const int dim[3], const uint8_t apply[256])
{
    size_t n = (size_t)dim[0] * dim[1] * dim[2];
    size_t best[256] = { 0 }, seed[256];
    uint8_t *seen = xcalloc(n ? n : 1, 1);
    queue_t q = { xmalloc(4096 * sizeof(size_t)), 4096 };
    for (size_t p = 0; p < n; p++) {               // storage order: the first of equals wins
        uint8_t c = lab[p];
        if (!c || !apply[c] || seen[p]) continue;
        size_t s = flood(lab, seen, 1, dim, p, &q);
        if (s > best[c]) { best[c] = s; seed[c] = p; }
    }
    for (int c = 1; c < 256; c++)
        if (best[c]) flood(lab, seen, 2, dim, seed[c], &q);
    int64_t cleared = 0;
    for (size_t p = 0; p < n; p++)
        if (seen[p] == 1) { lab[p] = 0; cleared++; }
    free(seen);
    free(q.v);
    return cleared;
}
