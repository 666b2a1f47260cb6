/* faprompt core: zero-shot visual anomaly detection with FAPrompt.
 *
 * The whole public API of the inference core. The core takes a frame view and
 * returns a result; it never sees GStreamer and never prints to stdout.
 *
 * Shape letters used in comments throughout core/ and kernels/:
 *   S  input side in pixels (the model runs on S x S)
 *   P  patch size            G  grid side = S / P       N  patches = G * G
 *   C  width of an encoder (Cv vision, Ct text)        H  heads, D head dim
 *   E  joint embedding dim   K  abnormality prompts    M  patches picked by the prior
 *   L  positions of a text prompt up to its end token
 *
 * Ownership: *_new / *_load return an owned handle, released with *_free
 * (free(NULL) is a no-op). Getters return borrowed pointers valid until the
 * owner is freed or, for per-frame results, until the next fap_detector_run().
 */
#ifndef FAP_H
#define FAP_H

#include <stddef.h>
#include <stdint.h>

/* libfaprompt exports this header's functions and nothing else (the library
 * is built with hidden visibility). */
#ifndef FAP_API
#if defined(__GNUC__)
#define FAP_API __attribute__((visibility("default")))
#else
#define FAP_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  FAP_OK = 0,
  FAP_ERR_INVALID_ARGUMENT, /* a caller passed something out of range */
  FAP_ERR_IO,               /* a file could not be opened / read / mapped */
  FAP_ERR_FORMAT,           /* the file is not a valid safetensors container */
  FAP_ERR_SCHEMA,           /* valid container, but not a valid faprompt model */
  FAP_ERR_UNSUPPORTED,      /* feature or backend not built / not available */
  FAP_ERR_NO_MEMORY,
  FAP_ERR_BACKEND,          /* the compute backend failed (e.g. a CUDA error) */
} fap_status;

/* The library's version ("0.1.0"): libfaprompt.so.0 keeps its ABI within a
 * soname; bindings check what they loaded. */
FAP_API const char *fap_version(void);

/* A short constant English description ("schema error", ...). */
FAP_API const char *fap_status_string(fap_status status);

typedef enum {
  FAP_LOG_ERROR = 0,
  FAP_LOG_WARNING,
  FAP_LOG_INFO,
  FAP_LOG_DEBUG,
} fap_log_level;

/* Every failing call logs one message that names the file, tensor or argument
 * at fault. Where it goes, first match wins:
 *   1. the detector's own sink (fap_detector_options.log) for every call on
 *      that detector, from any thread;
 *   2. the calling thread's sink (fap_set_thread_log_callback), e.g. around
 *      fap_model_load, so a library (a GStreamer element) can route messages
 *      to their owner without touching the application's sink;
 *   3. the process-wide sink (fap_set_log_callback), by default stderr for
 *      errors and warnings; NULL restores that default. */
typedef void (*fap_log_fn)(fap_log_level level, const char *message, void *user_data);
FAP_API void fap_set_log_callback(fap_log_fn fn, void *user_data);
FAP_API void fap_set_thread_log_callback(fap_log_fn fn, void *user_data);

/* The message of the calling thread's last failure, "" if none: what the
 * failing call logged at FAP_LOG_ERROR (the last such message of the call,
 * the one with the outermost context; the CUDA module's included), whichever
 * sink it went to. Like errno, but stronger: every function here that
 * returns a fap_status clears it on entry, so after a call that failed it
 * holds that call's message (at least its fap_status_string), after one
 * that succeeded it is "". The string is the calling thread's own buffer:
 * read or copy it before the thread's next call into the library. A caller
 * that only wants the message of the call that failed (an exception's text,
 * a GStreamer error) reads it here instead of installing a sink around
 * every call. */
FAP_API const char *fap_last_error(void);

/* ---- element types -------------------------------------------------------- */

typedef enum {
  FAP_DTYPE_F32 = 0,
  FAP_DTYPE_F16,
  FAP_DTYPE_BF16,
  FAP_DTYPE_I32,
  FAP_DTYPE_I64,
  FAP_DTYPE_U8,
} fap_dtype;

FAP_API const char *fap_dtype_name(fap_dtype dtype);
FAP_API size_t fap_dtype_size(fap_dtype dtype);

/* A read-only view of a dense row-major tensor. */
#define FAP_MAX_DIMS 8
typedef struct {
  const void *data;
  fap_dtype dtype;
  int ndim;
  int64_t shape[FAP_MAX_DIMS];
} fap_tensor_view;

/* ---- model -------------------------------------------------------------- */

/* The model family a file holds (__metadata__ 'family'; absent = FAPrompt).
 * Both run through the same detector and element:
 *   FAPrompt (ICCV 2025): K abnormality prompts, an abnormality prior from the
 *     top-M patches, a second, per-frame text pass; score mixes q and the maps.
 *   AnomalyCLIP (ICLR 2024, docs/SPEC.md section 6): one normal and one abnormal
 *     learned prompt, static text features, a patch map per out layer (the
 *     V-V path after it), summed; score = q. */
typedef enum {
  FAP_FAMILY_FAPROMPT = 0,
  FAP_FAMILY_ANOMALYCLIP,
} fap_family;

FAP_API const char *fap_family_name(fap_family family); /* "faprompt", "anomalyclip" */

/* Most out layers an AnomalyCLIP model may name. */
#define FAP_MAX_OUT_LAYERS 8

/* Every dimension of the model, read from the file's __metadata__ and checked
 * against the tensor shapes (see models/README.md). */
typedef struct {
  int image_size;       /* S the model was prepared for (default run size) */
  int patch_size;       /* P */
  int vision_grid;      /* G0: grid of the stored positional embedding */
  int vision_width;     /* Cv */
  int vision_heads;     /* Hv */
  int vision_layers;    /* Lv */
  int dual_start;       /* D0: first V-V dual layer, 0-based */
  int embed_dim;        /* E */
  int text_width;       /* Ct */
  int text_heads;       /* Ht */
  int text_layers;      /* Lt */
  int context_length;   /* 77 for CLIP */
  int n_pos;            /* learnable normal tokens */
  int n_neg;            /* learnable abnormal tokens per prompt */
  int n_prompts;        /* K */
  int top_m;            /* M */
  int prompt_depth;     /* deep text prompts go to text layers 1..depth-1 */
  int prompt_length;    /* t: tokens per deep prompt */
  int prior_hidden;     /* hidden width of the prior MLP (E*M/16 by the authors) */
  int end_pos_normal;   /* index of the end token in the normal prompt */
  int end_pos_abnormal; /* index of the end token in every abnormality prompt */
  float sigma;          /* default Gaussian sigma of the final map, pixels */
  float image_threshold; /* optional calibration; < 0 when absent */
  float pixel_threshold; /* optional calibration; < 0 when absent */
  /* appended in 0.2 (the struct is only ever handed out by pointer) */
  fap_family family;
  /* 1-based vision layers whose V-V state gives a patch map, increasing.
   * FAPrompt: {vision_layers}. AnomalyCLIP: __metadata__ 'out_layers'. */
  int n_out_layers;
  int out_layers[FAP_MAX_OUT_LAYERS];
} fap_config;

typedef struct fap_model fap_model;

/* Maps, validates and widens the weights of a model file. On failure *out is
 * NULL and the log names the problem. Thread-safe reference counting lets
 * several detectors (e.g. one per camera) share one loaded model. */
FAP_API fap_status fap_model_load(const char *path, fap_model **out);
FAP_API fap_model *fap_model_ref(fap_model *model);
FAP_API void fap_model_free(fap_model *model); /* drops one reference */
FAP_API const fap_config *fap_model_config(const fap_model *model);
/* Seconds the last load took (map + validate + widen). */
FAP_API double fap_model_load_seconds(const fap_model *model);
/* Total parameter count (all tensors the core uses). */
FAP_API int64_t fap_model_parameter_count(const fap_model *model);

/* ---- detector ----------------------------------------------------------- */

typedef enum {
  FAP_BACKEND_AUTO = 0, /* CUDA when built and a device is present, else CPU */
  FAP_BACKEND_CPU,
  FAP_BACKEND_CUDA,
} fap_backend_kind;

FAP_API const char *fap_backend_name(fap_backend_kind kind);

/* Number format of the matrix products (weights and activations fed to them;
 * accumulation is f32, int8's s32). The CUDA backend computes in f16
 * (default) or bf16. The CPU backend computes in f32 (exact) or runs its
 * linear layers through oneDNN in bf16 or int8 where the CPU has units that
 * make them faster (bf16: AVX512-BF16 or AMX; int8: AVX2 or better), and
 * otherwise falls back to f32, saying so at INFO level. Its default (auto)
 * is bf16 where the CPU has bf16 units, f32 elsewhere: ask for f32 to
 * compute exactly as the authors' code (docs/SPEC.md, Tolerances). Attention, LayerNorm
 * and the scoring stay f32. fap_detector_precision says what runs. */
typedef enum {
  FAP_PRECISION_AUTO = 0, /* the backend's default: CPU bf16 on bf16 units, else f32; CUDA f16 */
  FAP_PRECISION_F32,
  FAP_PRECISION_F16,
  FAP_PRECISION_BF16,
  FAP_PRECISION_INT8, /* CPU only: weights per channel, activations per row */
} fap_precision;

FAP_API const char *fap_precision_name(fap_precision precision);

typedef struct {
  fap_backend_kind backend;
  int device_id;          /* CUDA device ordinal */
  int threads;            /* CPU threads, 0 = all online cores */
  int image_size;         /* S; 0 = the model's; must be a multiple of P */
  float sigma;            /* < 0 = the model's; 0 disables smoothing */
  int keep_intermediates; /* 1: every docs/SPEC.md intermediate kept, see below */
  int reference;          /* 1: CPU backend uses the plain reference loops */
  int batch;              /* B: most frames one fap_detector_run_batch() takes; 0 = 1 */
  fap_precision precision;
  fap_log_fn log;         /* this detector's log sink (NULL: thread / process sink) */
  void *log_user_data;
} fap_detector_options;

FAP_API void fap_detector_options_init(fap_detector_options *options);

typedef struct fap_detector fap_detector;

/* Creates a detector: sizes one activation arena, computes everything that
 * depends only on the model (static text features, cached prompt prefix,
 * resized positional embedding, smoothing kernel). Holds a model reference. */
FAP_API fap_status fap_detector_new(fap_model *model, const fap_detector_options *options,
                            fap_detector **out);
FAP_API void fap_detector_free(fap_detector *detector);
FAP_API fap_backend_kind fap_detector_backend(const fap_detector *detector);
FAP_API int fap_detector_image_size(const fap_detector *detector);
FAP_API int fap_detector_batch(const fap_detector *detector); /* B */
FAP_API fap_precision fap_detector_precision(const fap_detector *detector); /* never AUTO */

typedef enum {
  FAP_PIXEL_RGB = 0,
  FAP_PIXEL_BGR,
  FAP_PIXEL_RGBA,
  FAP_PIXEL_BGRA,
  FAP_PIXEL_RGBX,
  FAP_PIXEL_BGRX,
  FAP_PIXEL_XRGB,
  FAP_PIXEL_XBGR,
  /* 8-bit YUV (converted to RGB with fap_frame.matrix / full_range, chroma
   * taken from the sample covering each pixel, no interpolation): */
  FAP_PIXEL_NV12, /* 4:2:0: data = Y plane, plane[0] = interleaved U V plane */
  FAP_PIXEL_I420, /* 4:2:0: data = Y plane, plane[0] = U plane, plane[1] = V plane */
  FAP_PIXEL_YUY2, /* 4:2:2 packed: Y0 U Y1 V per pixel pair in data */
} fap_pixel_format;

typedef enum {
  FAP_YUV_BT601 = 0, /* the default: SD video, most webcams */
  FAP_YUV_BT709,     /* HD video */
  FAP_YUV_BT2020,    /* UHD / HDR video (8-bit here; non-constant luminance) */
} fap_yuv_matrix;

FAP_API const char *fap_pixel_format_name(fap_pixel_format format);

/* Where a frame's planes live. */
typedef enum {
  FAP_MEMORY_HOST = 0, /* the default */
  FAP_MEMORY_CUDA,     /* device pointers on the CUDA detector's device, valid in the CUDA
                        * context current on the calling thread (GStreamer's
                        * memory:CUDAMemory): no pixel crosses to the host; CUDA backend only */
} fap_memory;

/* A rectangle of a frame in frame pixels: columns x .. x + width - 1, rows
 * y .. y + height - 1. */
typedef struct {
  int x, y, width, height;
} fap_rect;

/* One 8-bit frame (host memory unless .memory says otherwise). stride is bytes per row of data (>= width *
 * bytes per pixel; YUY2: 4 bytes per pixel pair, rounded up). The planar YUV
 * formats add their chroma planes, (width+1)/2 x (height+1)/2 samples of 1
 * (I420) or 2 (NV12) bytes, with their own strides. The fields after `data`
 * may be left zero for packed formats (`{format, w, h, stride, data}`), and
 * zero means BT.601 limited range for YUV. The detector reads the frame
 * during the run call only, and writes to it only when asked to blend.
 *
 * crop (appended in 0.2; all zero: the whole frame) is the part of the frame
 * a call uses, inside it, at least 1 x 1. width, height, strides and planes
 * keep describing the whole frame, so a YUV pixel keeps the chroma sample
 * that covers it in the whole frame (a crop at an odd offset does not shift
 * the 2 x 2 or 2 x 1 chroma grid). A run resizes only the crop's pixels
 * (docs/SPEC.md section 1.2, Crop): its score and map are those of a frame that
 * holds just these pixels, and the map covers the crop. Drawing stretches the
 * map over the crop and changes no byte of a pixel outside it: luma / RGB
 * inside the crop, a YUV chroma sample only where every pixel it covers
 * lies inside the crop. Several crops of one frame (regions of interest,
 * tiles) are several fap_frame that differ in crop only: one
 * fap_detector_run_batch call runs them as one batch (on the CUDA backend a
 * host frame's pixels go up once), reads every crop before it draws any,
 * and draws them in their order (where crops overlap, the later one is
 * drawn over the earlier). */
typedef struct {
  fap_pixel_format format;
  int width, height;
  size_t stride;
  const uint8_t *data;
  const uint8_t *plane[2];
  size_t plane_stride[2];
  fap_yuv_matrix matrix;
  int full_range; /* 1: Y and chroma span 0..255; 0: 16..235 / 16..240 */
  fap_memory memory;
  fap_rect crop;
} fap_frame;

typedef enum {
  FAP_STAGE_PREPROCESS = 0,
  FAP_STAGE_VISION,
  FAP_STAGE_MAP1,  /* normalise tokens, first map */
  FAP_STAGE_PRIOR, /* top-M, prior MLP */
  FAP_STAGE_TEXT,  /* dynamic prompts through the incremental text encoder */
  FAP_STAGE_MAP2,  /* second map, image-text probability, score */
  FAP_STAGE_MAP,   /* upsampling and smoothing */
  FAP_STAGE_COUNT,
} fap_stage;

FAP_API const char *fap_stage_name(fap_stage stage);

typedef struct {
  float score;            /* image anomaly score in [0, 1] */
  const float *map;       /* S x S smoothed anomaly map, row-major, borrowed */
  int map_size;           /* S */
  double stage_ms[FAP_STAGE_COUNT];
  double total_ms;
  /* pixels of this frame copied host -> device (upload) and device -> host
   * (the drawn frame coming back): 0 on the CPU backend and for frames in
   * CUDA memory; weights, maps and scores are not counted */
  size_t frame_bytes_to_device, frame_bytes_from_device;
} fap_result;

/* Runs docs/SPEC.md on one frame. Allocates nothing after the first call for a
 * given input size (resampling tables are rebuilt when the size changes). */
FAP_API fap_status fap_detector_run(fap_detector *detector, const fap_frame *frame, fap_result *result);

/* Heatmap drawing, one look everywhere (the element, faprompt-infer, every
 * backend): m is the map bilinear from S x S to the frame; where m exceeds
 * threshold, with t = (m - range_min) / (range_max - range_min) clamped to
 * [0, 1] (a fixed scale, never per-frame normalisation), the pixel moves
 * towards the jet colour of t (blue 0 .. red 1) by alpha = opacity * t,
 * quantised to 1/256. YUV frames are drawn in YUV (the colour converted with
 * the frame's matrix and range; chroma from the map at the chroma sample's
 * top-left pixel). */
typedef struct {
  float opacity;   /* 0..1 */
  float threshold; /* map values <= threshold leave the pixel as it was */
  float range_min, range_max; /* colour scale; range_min < range_max */
} fap_blend;

/* opacity 0.5, threshold 0.5, range [0, 1]: what the element draws by default */
FAP_API void fap_blend_init(fap_blend *blend);

/* Runs `count` frames (1 <= count <= the detector's batch B) in one call, on
 * the CUDA backend as one batch (several cameras), on the CPU one after the
 * other. results[i] belongs to frames[i]; every map stays valid until the
 * next run call. The frames may differ in format and size. With blend !=
 * NULL each frame's heatmap is then drawn into the frame's own pixels (on the
 * CUDA backend on the device, in the same transfer): the memory behind
 * frames[i].data / .plane[] must then be writable. Intermediates are those
 * of the last frame. */
FAP_API fap_status fap_detector_run_batch(fap_detector *detector, const fap_frame *frames, int count,
                                  const fap_blend *blend, fap_result *results);

/* Draws a map (map_size x map_size, e.g. a previous fap_result's) into a
 * frame as fap_detector_run_batch does, on the detector's backend: the CPU
 * with fap_blend_frame; the CUDA device (a host frame goes up and comes back,
 * a frame in CUDA memory is drawn where it is: only the map goes up). For
 * reused results (a video element's inference-interval). May be called while
 * another thread runs a frame on the same detector (it has its own buffers
 * and stream); draws on one detector are serialised. *pixel_bytes_copied
 * (may be NULL): the frame's bytes that crossed, up and back (0 on the CPU
 * and for frames in CUDA memory). */
FAP_API fap_status fap_detector_draw(fap_detector *detector, const fap_frame *frame, const float *map,
                             int map_size, const fap_blend *blend, size_t *pixel_bytes_copied);

/* Draws a map (map_size x map_size, e.g. a previous fap_result's) into a
 * frame in host memory, as fap_detector_run_batch does; frame->data and
 * ->plane[] must be writable. The reference: pixel by pixel, no state. */
FAP_API fap_status fap_blend_frame(const fap_frame *frame, const float *map, int map_size,
                           const fap_blend *blend);

/* The same drawing for a video stream, where many frames in a row carry the
 * same map (inference-interval > 1): the first draw of a map works out each
 * frame byte's colour and alpha once (3 bytes of table per frame byte, kept
 * until the map, the frame geometry or the blend changes), every later draw
 * only mixes. Same pixels as fap_blend_frame, byte for byte. map_id names the
 * map's contents (a new id for each new map; 0 = always recompute). Not
 * thread-safe: one overlay per stream. */
typedef struct fap_overlay fap_overlay;
FAP_API fap_status fap_overlay_new(fap_overlay **out);
FAP_API void fap_overlay_free(fap_overlay *overlay);
FAP_API fap_status fap_overlay_draw(fap_overlay *overlay, const fap_frame *frame, const float *map,
                            int map_size, uint64_t map_id, const fap_blend *blend);
/* Works out the table for a map and a frame geometry without drawing (the
 * frame's pixels are not touched): a thread that produced the map can do the
 * expensive part, the streaming thread then only mixes. */
FAP_API fap_status fap_overlay_prepare(fap_overlay *overlay, const fap_frame *frame, const float *map,
                               int map_size, uint64_t map_id, const fap_blend *blend);

/* ---- tiles ---------------------------------------------------------------- */

/* A rectangle cut into cols x rows tiles (docs/SPEC.md section 1.2, Tiles),
 * each tile run as a crop at (nearly) native resolution, so a small defect
 * on a large frame covers more than a fraction of one patch; the tiles' maps
 * are then stitched back into one map of the rectangle. */

/* The tiles of `area` (frame pixels), row-major: tiles[r * cols + c] is
 * column c of row r, in frame pixels. All tiles have one size, the smallest
 * for which `cols` columns overlapping by at least `overlap` pixels cover the
 * width: tw = ceil((W + (cols - 1) overlap) / cols) (W for one column);
 * column c starts at x + floor(c (W - tw) / (cols - 1)), so the first is
 * flush with the left edge, the last with the right, and neighbours overlap
 * by `overlap` pixels or a little more where the sizes do not divide.
 * Rows alike. Along an axis with one tile the overlap has no effect.
 * Refused, with a message naming the value: fewer than 1 column or row, more
 * columns than pixels of width (rows: height), overlap < 0 or, along an axis
 * with several tiles, more than its length minus its tile count (tiles
 * would not advance by a pixel). tiles must hold cols * rows rectangles. */
FAP_API fap_status fap_tiles_layout(fap_rect area, int cols, int rows, int overlap, fap_rect *tiles);

/* One map over `area`, out_width x out_height, row-major, from the maps of
 * the tiles fap_tiles_layout gives for the same area, cols, rows and overlap
 * (maps[r * cols + c]: map_size x map_size, stretched over its tile). Output
 * pixel (i, j) is the point u = x + (i + 0.5) W / out_width,
 * v = y + (j + 0.5) H / out_height; its value is the weighted mean of the
 * tiles covering it, each tile's map sampled bilinearly there (align_corners
 * = false) and weighted by the product of two ramps, one per axis: 1 inside
 * the tile, falling linearly to 0 at the tile's edge across each band it
 * shares with a neighbour (docs/SPEC.md section 1.2, Tiles). Seams vanish;
 * where no tiles overlap (overlap 0 and sides that are multiples of the tile
 * counts) each tile's map is placed as it is. Computed in double, stored as
 * float. Allocates nothing; out is the caller's. */
FAP_API fap_status fap_tiles_stitch(fap_rect area, int cols, int rows, int overlap,
                                    const float *const *maps, int map_size, float *out,
                                    int out_width, int out_height);

/* The grid for tiling n rectangles automatically (docs/SPEC.md section 1.2,
 * Automatic tiles) on a model of `grid` patches per side (S / P): a tile w
 * pixels wide gives a patch w / grid frame pixels. Of the grids C x R (C,
 * R from 1 to 16) with n C R <= max_crops (1 x 1 always allowed) whose
 * layout fap_tiles_layout takes for every rectangle with `overlap`: the
 * fewest tiles (then the squarer) among those where no rectangle's tile
 * gives a patch more than max_patch_pixels along either axis (*met = 1);
 * when none within max_crops does, the one whose largest patch is smallest
 * (then the fewest tiles; *met = 0). *worst (may be NULL): that largest
 * patch, frame pixels. One grid for all rectangles. Refused, with a
 * message naming the value: n < 1, grid < 1, max_patch_pixels < 1,
 * max_crops < 1, a NULL pointer, a rectangle of zero size. */
FAP_API fap_status fap_tiles_auto(const fap_rect *areas, int n, int grid, int max_patch_pixels,
                                  int overlap, int max_crops, int *cols, int *rows, int *met,
                                  double *worst);

/* fap_tiles_stitch's result, fast: a stitcher is the rule precomputed for
 * one layout (area, cols, rows, overlap), one map size and one output size:
 * per output column and per output row the covering tiles, their bilinear
 * taps and their normalised ramp weights, and a workspace of rows x
 * map_size rows of out_width floats. Made when the layout or a size
 * changes, kept by the caller, run on every set of maps: a run allocates
 * nothing and is two passes of a few multiply-adds per sample (the maps'
 * rows resampled across the width, then each output row a weighted sum of
 * one or a few of them). It computes in float where fap_tiles_stitch sums
 * in double: the two differ by a few float roundings (under 1e-6 on maps
 * in [0, 1]); fap_tiles_stitch stays the reference. A stitcher is used by
 * one thread at a time (a run writes its workspace). new refuses what
 * fap_tiles_stitch refuses, with the same messages. */
typedef struct fap_tiles_stitcher fap_tiles_stitcher;
FAP_API fap_status fap_tiles_stitcher_new(fap_rect area, int cols, int rows, int overlap,
                                          int map_size, int out_width, int out_height,
                                          fap_tiles_stitcher **stitcher);
/* maps[r * cols + c]: map_size x map_size; out: out_width x out_height. */
FAP_API fap_status fap_tiles_stitcher_run(fap_tiles_stitcher *stitcher,
                                          const float *const *maps, float *out);
FAP_API void fap_tiles_stitcher_free(fap_tiles_stitcher *stitcher);

/* An intermediate of the last run (keep_intermediates = 1), by docs/SPEC.md name.
 * FAPrompt models:
 *   "preprocessed"          f32 [3, S, S]  normalised input, channel-major
 *   "tokens"                f32 [N+1, E]   T = LN_post(y) @ proj (row 0 unused)
 *   "global"                f32 [E]        g = x[0] @ proj
 *   "text_features"         f32 [K+1, E]   static f_n, f_a,1..K (unnormalised)
 *   "text_normal"           f32 [E]        t_n
 *   "text_abnormal"         f32 [E]        t_a
 *   "map1"                  f32 [N]        A1
 *   "topk_index"            i32 [M]        patch indices (0-based, descending A1)
 *   "prior"                 f32 [Ct]       b
 *   "text_features_dynamic" f32 [K, E]     f'_a,1..K
 *   "text_abnormal_dynamic" f32 [E]        t'_a
 *   "map2"                  f32 [N]        A2
 *   "image_text_prob"       f32 [1]        q
 *   "map_raw"               f32 [S, S]     (up(A1) + up(A2)) / 2
 *   "map"                   f32 [S, S]     smoothed map
 *   "score"                 f32 [1]
 * AnomalyCLIP models (docs/SPEC.md section 6; L = n_out_layers, O there):
 *   "preprocessed", "global", "text_normal", "text_abnormal", "image_text_prob"
 *                                          as above
 *   "tokens"                f32 [L, N+1, E] T_l = LN_post(y after out layer l) @ proj
 *   "text_features"         f32 [2, E]     f_n, f_a (unnormalised)
 *   "layer_maps"            f32 [L, N]     A_l
 *   "map_raw"               f32 [S, S]     sum over l of up(A_l), unsmoothed
 *   "map_sum"               f32 [S, S]     smoothed map_raw: the authors' map, in [0, L]
 *   "map"                   f32 [S, S]     map_sum / L, in [0, 1]: the result map
 *   "score"                 f32 [1]        q
 * Returns FAP_ERR_INVALID_ARGUMENT for an unknown name or when intermediates
 * were not kept. The view is borrowed until the next run. */
FAP_API fap_status fap_detector_intermediate(const fap_detector *detector, const char *name,
                                     fap_tensor_view *view);
/* NULL-terminated list of the FAPrompt names above. */
FAP_API const char *const *fap_intermediate_names(void);
/* NULL-terminated list of this detector's names (its model family's). */
FAP_API const char *const *fap_detector_intermediate_names(const fap_detector *detector);

#ifdef __cplusplus
}
#endif
#endif /* FAP_H */
