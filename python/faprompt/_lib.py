"""ctypes declarations of libfaprompt: core/fap.h, transcribed.

Every structure here must match fap.h field for field (order, C type); the
test (tests/python/test_faprompt.py) checks them against faprompt-infer and
the model file's metadata. Only what the binding uses is declared.
"""
import ctypes
import os

_HINT = ("install the 'faprompt' Debian package (it provides libfaprompt.so.0), "
         "or build faprompt from source and set FAPROMPT_LIBRARY to the full path "
         "of BUILD/core/libfaprompt.so.0")


def _load():
    # A full path from the environment wins; otherwise let ld.so search (its
    # cache, LD_LIBRARY_PATH), as for any installed shared library.
    path = os.environ.get("FAPROMPT_LIBRARY") or "libfaprompt.so.0"
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f"faprompt: cannot load {path} ({e}); {_HINT}") from None


lib = _load()

# Enums are C ints (fap.h gives them no fixed type; every value fits an int).
c_enum = ctypes.c_int

FAP_OK = 0

FAP_LOG_ERROR, FAP_LOG_WARNING, FAP_LOG_INFO, FAP_LOG_DEBUG = range(4)

FAP_BACKEND_COUNT = 3    # AUTO, CPU, CUDA
FAP_PRECISION_COUNT = 5  # AUTO, F32, F16, BF16, INT8
FAP_PIXEL_RGB, FAP_PIXEL_RGBA = 0, 2
FAP_STAGE_COUNT = 7
FAP_MAX_OUT_LAYERS = 8
FAMILY_NAMES = ("faprompt", "anomalyclip")  # fap_family

LOG_FN = ctypes.CFUNCTYPE(None, c_enum, ctypes.c_char_p, ctypes.c_void_p)


class fap_config(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in (
        "image_size", "patch_size", "vision_grid", "vision_width", "vision_heads",
        "vision_layers", "dual_start", "embed_dim", "text_width", "text_heads",
        "text_layers", "context_length", "n_pos", "n_neg", "n_prompts", "top_m",
        "prompt_depth", "prompt_length", "prior_hidden", "end_pos_normal",
        "end_pos_abnormal")] + [
        ("sigma", ctypes.c_float),
        ("image_threshold", ctypes.c_float),
        ("pixel_threshold", ctypes.c_float),
        # appended in 0.2
        ("family", c_enum),
        ("n_out_layers", ctypes.c_int),
        ("out_layers", ctypes.c_int * FAP_MAX_OUT_LAYERS),
    ]


class fap_detector_options(ctypes.Structure):
    _fields_ = [
        ("backend", c_enum),
        ("device_id", ctypes.c_int),
        ("threads", ctypes.c_int),
        ("image_size", ctypes.c_int),
        ("sigma", ctypes.c_float),
        ("keep_intermediates", ctypes.c_int),
        ("reference", ctypes.c_int),
        ("batch", ctypes.c_int),
        ("precision", c_enum),
        # Left NULL: the binding captures messages with the thread sink, which
        # the detector's own sink would otherwise take precedence over.
        ("log", LOG_FN),
        ("log_user_data", ctypes.c_void_p),
    ]


class fap_rect(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("x", "y", "width", "height")]


class fap_frame(ctypes.Structure):
    _fields_ = [
        ("format", c_enum),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("stride", ctypes.c_size_t),
        ("data", ctypes.c_void_p),  # const uint8_t *; c_void_p takes an address
        ("plane", ctypes.c_void_p * 2),
        ("plane_stride", ctypes.c_size_t * 2),
        ("matrix", c_enum),
        ("full_range", ctypes.c_int),
        ("memory", c_enum),
        ("crop", fap_rect),  # all zero: the whole frame
    ]


class fap_result(ctypes.Structure):
    _fields_ = [
        ("score", ctypes.c_float),
        ("map", ctypes.POINTER(ctypes.c_float)),
        ("map_size", ctypes.c_int),
        ("stage_ms", ctypes.c_double * FAP_STAGE_COUNT),
        ("total_ms", ctypes.c_double),
        ("frame_bytes_to_device", ctypes.c_size_t),
        ("frame_bytes_from_device", ctypes.c_size_t),
    ]


_p = ctypes.c_void_p  # opaque handles (fap_model *, fap_detector *)


def _declare(name, restype, *argtypes):
    try:
        fn = getattr(lib, name)
    except AttributeError:
        raise ImportError(f"faprompt: {lib._name} has no {name}: it is older than this "
                          f"binding; {_HINT}") from None
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


fap_version = _declare("fap_version", ctypes.c_char_p)
fap_status_string = _declare("fap_status_string", ctypes.c_char_p, c_enum)
fap_set_thread_log_callback = _declare("fap_set_thread_log_callback", None, LOG_FN, _p)
fap_last_error = _declare("fap_last_error", ctypes.c_char_p)
fap_model_load = _declare("fap_model_load", c_enum, ctypes.c_char_p, ctypes.POINTER(_p))
fap_model_free = _declare("fap_model_free", None, _p)
fap_model_config = _declare("fap_model_config", ctypes.POINTER(fap_config), _p)
fap_model_load_seconds = _declare("fap_model_load_seconds", ctypes.c_double, _p)
fap_model_parameter_count = _declare("fap_model_parameter_count", ctypes.c_int64, _p)
fap_backend_name = _declare("fap_backend_name", ctypes.c_char_p, c_enum)
fap_precision_name = _declare("fap_precision_name", ctypes.c_char_p, c_enum)
fap_stage_name = _declare("fap_stage_name", ctypes.c_char_p, c_enum)
fap_detector_options_init = _declare("fap_detector_options_init", None,
                                     ctypes.POINTER(fap_detector_options))
fap_detector_new = _declare("fap_detector_new", c_enum, _p,
                            ctypes.POINTER(fap_detector_options), ctypes.POINTER(_p))
fap_detector_free = _declare("fap_detector_free", None, _p)
fap_detector_backend = _declare("fap_detector_backend", c_enum, _p)
fap_detector_image_size = _declare("fap_detector_image_size", ctypes.c_int, _p)
fap_detector_batch = _declare("fap_detector_batch", ctypes.c_int, _p)
fap_detector_precision = _declare("fap_detector_precision", c_enum, _p)
fap_detector_run = _declare("fap_detector_run", c_enum, _p, ctypes.POINTER(fap_frame),
                            ctypes.POINTER(fap_result))
fap_detector_run_batch = _declare("fap_detector_run_batch", c_enum, _p,
                                  ctypes.POINTER(fap_frame), ctypes.c_int, _p,
                                  ctypes.POINTER(fap_result))
fap_tiles_layout = _declare("fap_tiles_layout", c_enum, fap_rect, ctypes.c_int, ctypes.c_int,
                            ctypes.c_int, ctypes.POINTER(fap_rect))
fap_tiles_auto = _declare("fap_tiles_auto", c_enum, ctypes.POINTER(fap_rect), ctypes.c_int,
                          ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                          ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double))
fap_tiles_stitch = _declare("fap_tiles_stitch", c_enum, fap_rect, ctypes.c_int, ctypes.c_int,
                            ctypes.c_int, ctypes.POINTER(ctypes.POINTER(ctypes.c_float)),
                            ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_int,
                            ctypes.c_int)

# Names of the enums as the core spells them ("cpu", "f16", "vision", ...).
BACKENDS = {fap_backend_name(i).decode(): i for i in range(FAP_BACKEND_COUNT)}
PRECISIONS = {fap_precision_name(i).decode(): i for i in range(FAP_PRECISION_COUNT)}
STAGES = tuple(fap_stage_name(i).decode() for i in range(FAP_STAGE_COUNT))
