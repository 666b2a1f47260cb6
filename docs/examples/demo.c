/* The smallest program on the installed core: load a model, score one frame.
 *
 *   cc demo.c $(pkg-config --cflags --libs faprompt) -o demo
 *   ./demo model.safetensors
 *
 * The frame is a grey 320x240 RGB image with a bright square (a stand-in
 * for a camera frame); prints the score and where the map peaks. */
#include <fap.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.safetensors\n", argv[0]);
    return 2;
  }
  enum { W = 320, H = 240 };
  static uint8_t pixels[H][W][3];
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++)
      for (int c = 0; c < 3; c++)
        pixels[y][x][c] = (x > 200 && x < 240 && y > 60 && y < 100) ? 250 : 120;

  fap_model *model = NULL;
  fap_detector *det = NULL;
  int rc = 1;
  if (fap_model_load(argv[1], &model) != FAP_OK) /* the reason went to stderr */
    goto done;
  fap_detector_options o;
  fap_detector_options_init(&o); /* backend auto, S and sigma from the model */
  if (fap_detector_new(model, &o, &det) != FAP_OK)
    goto done;
  fap_frame frame = {FAP_PIXEL_RGB, W, H, W * 3, &pixels[0][0][0]};
  fap_result r;
  if (fap_detector_run(det, &frame, &r) != FAP_OK)
    goto done;
  int peak = 0;
  for (int i = 1; i < r.map_size * r.map_size; i++)
    if (r.map[i] > r.map[peak])
      peak = i;
  printf("backend %s, S=%d: score %.6f, map peak %.6f at (%d, %d), %.1f ms\n",
         fap_backend_name(fap_detector_backend(det)), r.map_size, r.score, r.map[peak],
         peak % r.map_size, peak / r.map_size, r.total_ms);
  rc = 0;
done:
  fap_detector_free(det);
  fap_model_free(model);
  return rc;
}
