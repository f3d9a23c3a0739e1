/* registry.c - the training objectives the train stage knows: the one place that names them. */
#include <string.h>

#include "../objective.h"

extern const mf_objective mf_objective_fm, mf_objective_fm_avgvel, mf_objective_meanflow, mf_objective_imeanflow,
    mf_objective_alphaflow;

const mf_objective *const mf_objectives[] = {
    &mf_objective_fm, &mf_objective_fm_avgvel, &mf_objective_meanflow, &mf_objective_imeanflow,
    &mf_objective_alphaflow, NULL,
};

const mf_objective *mf_objective_find(const char *name) {
    for (int i = 0; name && mf_objectives[i]; i++)
        if (strcmp(mf_objectives[i]->name, name) == 0) return mf_objectives[i];
    return NULL;
}
