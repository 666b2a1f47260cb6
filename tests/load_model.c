/* Loads a model file with the core and prints its configuration as one JSON object.
 *
 * usage: load_model MODEL
 * Exit status 0 when fap_model_load() accepts the file, 1 when it refuses it
 * (the core's message goes to stderr), 2 on a usage error. Used by
 * tests/test_convert.py to check that converted files load. */
#include "fap.h"

#include <stdio.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL\n", argv[0]);
    return 2;
  }
  fap_model *model = NULL;
  fap_status status = fap_model_load(argv[1], &model);
  if (status != FAP_OK) {
    fprintf(stderr, "load_model: %s: %s\n", argv[1], fap_status_string(status));
    return 1;
  }
  const fap_config *c = fap_model_config(model);
  const struct {
    const char *name;
    int value;
  } ints[] = {
      {"image_size", c->image_size},         {"patch_size", c->patch_size},
      {"vision_grid", c->vision_grid},       {"vision_width", c->vision_width},
      {"vision_heads", c->vision_heads},     {"vision_layers", c->vision_layers},
      {"dual_start", c->dual_start},         {"embed_dim", c->embed_dim},
      {"text_width", c->text_width},         {"text_heads", c->text_heads},
      {"text_layers", c->text_layers},       {"context_length", c->context_length},
      {"n_pos", c->n_pos},                   {"n_neg", c->n_neg},
      {"n_prompts", c->n_prompts},           {"top_m", c->top_m},
      {"prompt_depth", c->prompt_depth},     {"prompt_length", c->prompt_length},
      {"prior_hidden", c->prior_hidden},     {"end_pos_normal", c->end_pos_normal},
      {"end_pos_abnormal", c->end_pos_abnormal},
  };
  printf("{");
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    printf("\"%s\": %d, ", ints[i].name, ints[i].value);
  printf("\"sigma\": %.9g, \"image_threshold\": %.9g, \"pixel_threshold\": %.9g, "
         "\"parameters\": %lld, \"load_seconds\": %.3f}\n",
         c->sigma, c->image_threshold, c->pixel_threshold,
         (long long)fap_model_parameter_count(model), fap_model_load_seconds(model));
  fap_model_free(model);
  return 0;
}
