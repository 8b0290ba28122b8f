/*
trainer_budget.c -- --max-minutes: a wall-clock budget for srm-trainer (issue 6).
The budget runs from the trainer's start (setup, first-batch wait and everything else count).
The cosine schedule needs a length in steps, so the schedule is defined over an ESTIMATED
number of steps: a short warm-up (at least 3 steps and min(5 % of the budget, 30 s) after the
first step, lr = the schedule's start) measures the step time; then total = step + the steps
that fit in the time left, capped by --steps. The total lives in ckpt_state_t.total_steps, so
every checkpoint records it and a resume keeps it (the resumed trainer runs to that total and
only uses its own budget as a safety stop). While the first trainer runs, the estimate is
corrected when the projected end passes the deadline by more than a step, or falls short of it
by more than 2 % of the budget or two steps (e.g. when an evaluation shares the cores), so the lr still reaches ~0 near the deadline.
*/
#include "trainer_internal.h"
#include "check.h"
#include <math.h>

#define WARMUP_MIN_STEPS 3
#define WARMUP_MAX_S 30.0
#define WARMUP_FRACTION 0.05
#define DRIFT_FRACTION 0.02

void budget_init(budget_t *b, const trainer_cfg_t *c, double t_start, int resumed, ckpt_state_t *st)
{
    *b = (budget_t){ .budget_s = 60.0 * c->max_minutes, .t_start = t_start, .cap = c->steps,
                     .first_step = -1 };
    if (b->budget_s <= 0) return;
    b->deadline = t_start + b->budget_s;
    // A checkpoint whose total differs from the cap had its total fixed by an earlier trainer's
    // estimate: keep it (the schedule of the run must not change across a resume).
    if (resumed && st->total_steps != c->steps) {
        b->fixed = b->from_ckpt = 1;
        log_msg('I', "--max-minutes %g: keeping the checkpoint's schedule of %ld steps (stop at %ld steps or "
                "after %.0f s, whichever comes first)", c->max_minutes, st->total_steps, st->total_steps, b->budget_s);
        return;
    }
    st->total_steps = c->steps;         // until the warm-up measured the step time
    log_msg('I', "--max-minutes %g: the schedule's length is estimated after a warm-up (cap %ld steps)",
            c->max_minutes, c->steps);
}

// The number of steps that fit before the deadline at the measured rate, from `step` at `now`.
static long fit_total(const budget_t *b, long step, double now, double per_step)
{
    double left = b->deadline - now;
    long more = left > 0 && per_step > 0 ? (long)floor(left / per_step) : 0;
    long total = step + more;
    return total > b->cap ? b->cap : total;
}

void budget_after_step(budget_t *b, ckpt_state_t *st, double now)
{
    if (b->budget_s <= 0 || b->from_ckpt) return;
    if (b->first_step < 0) {            // the first step includes the pipeline's start-up: not timed
        b->first_step = st->step;
        b->first_time = b->last_time = now;
        return;
    }
    long n = st->step - b->first_step;
    double dt = now - b->first_time, last = now - b->last_time;
    b->last_time = now;
    if (n <= 0 || dt <= 0) return;
    double per_step = dt / (double)n;
    // recent step time (about the last 20 steps): the cores may get busier later in the run
    b->recent = n == 1 ? last : 0.95 * b->recent + 0.05 * last;
    if (!b->fixed) {
        double warm = fmin(WARMUP_MAX_S, WARMUP_FRACTION * b->budget_s);
        if (n < WARMUP_MIN_STEPS || (dt < warm && now < b->deadline)) return;
        st->total_steps = fit_total(b, st->step, now, per_step);
        b->fixed = 1;
        log_msg('I', "budget: %.3f s per step over %ld steps, %.0f s left: the schedule is fixed at %ld steps",
                per_step, n, b->deadline - now, st->total_steps);
        return;
    }
    // the slower of the run's mean and the recent rate: ending a little early beats a cut schedule
    per_step = fmax(per_step, b->recent);
    if (st->total_steps >= b->cap && now + per_step * (double)(st->total_steps - st->step) <= b->deadline)
        return;                         // the cap binds and fits: nothing to correct
    double projected = now + per_step * (double)(st->total_steps - st->step);
    // Asymmetric tolerance: ending late would cut the schedule before its lr reaches ~0, so a
    // projected overrun of more than one step is corrected at once; ending early only wastes a
    // little time, so that waits for 2 % of the budget (or two steps: step times jitter, and the
    // lr should not see-saw).
    double late = projected - b->deadline;
    if (late <= per_step && -late <= fmax(DRIFT_FRACTION * b->budget_s, 2 * per_step)) return;
    long total = fit_total(b, st->step, now, per_step);
    if (total < st->step) total = st->step;
    if (total == st->total_steps) return;
    log_msg('I', "budget: now %.3f s per step, the run would end %.0f s %s the deadline: schedule %ld -> %ld steps",
            per_step, fabs(projected - b->deadline), projected > b->deadline ? "after" : "before", st->total_steps,
            total);
    st->total_steps = total;
    b->adjusts++;
}

long budget_total(const budget_t *b, const ckpt_state_t *st)
{
    return b->budget_s > 0 && !b->fixed ? 0 : st->total_steps;
}

int budget_expired(const budget_t *b, double now)
{
    return b->budget_s > 0 && now >= b->deadline;
}
