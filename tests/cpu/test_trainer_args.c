/* test_trainer_args.c -- srm-trainer's loss settings from its command line: the softmax losses
   take MONAI DiceLoss's defaults (smooth 1e-5 / 1e-5, plain predictions), region training the
   SegResMamba authors' BraTS loss (brats_train.py: smooth_nr 0, smooth_dr 1e-5, squared_pred),
   and --dice-smooth / --dice-squared-pred override either; bad values are refused. */
#include "test.h"
#include "trainer.h"
#include "check.h"
#include <string.h>

static int parse(trainer_cfg_t *c, const char *const *args, int n, char *err)
{
    char *argv[32] = { "srm-trainer" };
    for (int i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
    return trainer_parse_args(c, n + 1, argv, err);
}

int main(void)
{
    trainer_cfg_t c;
    char err[ERR_LEN];
    const char *softmax[] = { "--patches", "ipc:///tmp/x", "--classes", "4" };
    EXPECT(parse(&c, softmax, 4, err) == 0, "softmax: %s", err);
    EXPECT(c.tc.dice.squared_pred == 0 && c.tc.dice.smooth_nr == 1e-5 && c.tc.dice.smooth_dr == 1e-5,
           "softmax Dice: MONAI's defaults (squared %d, %g, %g)", c.tc.dice.squared_pred, c.tc.dice.smooth_nr,
           c.tc.dice.smooth_dr);
    const char *regions[] = { "--patches", "ipc:///tmp/x", "--regions", "WT=1,2,3;TC=1,3;ET=3" };
    EXPECT(parse(&c, regions, 4, err) == 0, "regions: %s", err);
    EXPECT(c.tc.loss == LOSS_DICE_SIGMOID && c.tc.dice.squared_pred == 1 && c.tc.dice.smooth_nr == 0 &&
           c.tc.dice.smooth_dr == 1e-5, "regions: the authors' BraTS DiceLoss (squared %d, %g, %g)",
           c.tc.dice.squared_pred, c.tc.dice.smooth_nr, c.tc.dice.smooth_dr);
    const char *over[] = { "--patches", "ipc:///tmp/x", "--regions", "WT=1,2", "--dice-squared-pred", "0",
                           "--dice-smooth", "1e-5,2e-5" };
    EXPECT(parse(&c, over, 8, err) == 0, "override: %s", err);
    EXPECT(c.tc.dice.squared_pred == 0 && c.tc.dice.smooth_nr == 1e-5 && c.tc.dice.smooth_dr == 2e-5,
           "flags override the region defaults (squared %d, %g, %g)", c.tc.dice.squared_pred, c.tc.dice.smooth_nr,
           c.tc.dice.smooth_dr);
    const char *bad1[] = { "--patches", "ipc:///tmp/x", "--classes", "4", "--dice-smooth", "1e-5,0" };
    const char *bad2[] = { "--patches", "ipc:///tmp/x", "--classes", "4", "--dice-squared-pred", "2" };
    const char *bad3[] = { "--patches", "ipc:///tmp/x", "--classes", "4", "--dice-smooth", "1e-5" };
    EXPECT(parse(&c, bad1, 6, err) < 0 && strstr(err, "--dice-smooth"), "a zero denominator smooth refused: %s", err);
    EXPECT(parse(&c, bad2, 6, err) < 0 && strstr(err, "--dice-squared-pred"), "squared_pred 2 refused: %s", err);
    EXPECT(parse(&c, bad3, 6, err) < 0 && strstr(err, "--dice-smooth"), "one smooth value refused: %s", err);
    return test_summary();
}
