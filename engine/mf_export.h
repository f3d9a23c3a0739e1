/* mf_export.h - model weights as safetensors files (docs/interop.md): `mfpipe export`, `mfpipe
 * import`, and `train.init_from`. Tensor names, shapes and layouts are PyTorch's: they are the UNet
 * mirror's state_dict (tests/ref/unet_ref.py), F32, little-endian. The file's __metadata__ holds
 * "format": "pt", the network ("mfpipe.unet_cfg", JSON), which weights ("mfpipe.weights": ema|raw),
 * the step, the run's identity (folder, experiment name, config hash, mfpipe version) and the run's
 * resolved configuration ("mfpipe.config", YAML), so that `mfpipe import` can make a run folder of it. */
#ifndef MF_EXPORT_H
#define MF_EXPORT_H

#include <stdint.h>

#include "mf_backend.h"
#include "mf_unet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fill host_flat (the model's flat parameter buffer, n_flat floats) from a safetensors file: every
 * parameter of the network cfg must be there with its exact shape and dtype F32, and the file may hold
 * nothing else (as PyTorch's load_state_dict(strict=True)); the first mismatch is the error. be is
 * used to lay the network out (nothing runs on it). 0, or -1 with mf_fail naming the file and tensor. */
int mf_weights_load_st(const char *path, mf_backend *be, const mf_unet_cfg *cfg, float *host_flat, int64_t n_flat);
/* Write the parameters of cfg from host_flat, with n_meta metadata pairs after the standard ones. */
int mf_weights_save_st(const char *path, mf_backend *be, const mf_unet_cfg *cfg, const float *host_flat,
                       int64_t n_flat, const char *const *meta_kv, int n_meta);
/* The network configuration as JSON ("mfpipe.unet_cfg") and back (-1 with mf_fail on a bad one). */
char *mf_unet_cfg_json(const mf_unet_cfg *c);
int mf_unet_cfg_from_json(const char *json, mf_unet_cfg *c);

/* `mfpipe export RUN [--ema|--raw] [--step N] --out FILE` and `mfpipe import FILE --out DIR
 * [--experiment EXP.yaml]`: exit status 0, 1 (failed), 2 (bad command line); errors via mf_fail. */
int mf_export_cmd(int argc, char **argv);
int mf_import_cmd(int argc, char **argv);
extern const char mf_export_help[], mf_import_help[];

#ifdef __cplusplus
}
#endif
#endif
