"""faprompt: zero-shot visual anomaly detection (FAPrompt) from Python.

A thin ctypes binding over libfaprompt (core/fap.h); the same core as the
GStreamer element and faprompt-infer, so the scores and maps are the same.

    import faprompt, numpy as np
    from PIL import Image
    with faprompt.Model("model.safetensors") as model, faprompt.Detector(model) as det:
        r = det.run(np.asarray(Image.open("part.png").convert("RGB")))
        print(r.score, r.anomalous)        # image score in [0, 1], score > threshold
        heat = r.map                       # float32 [S, S] anomaly map (a copy)

The library is $FAPROMPT_LIBRARY when set, else libfaprompt.so.0 from the
system's library path. The core's log messages go to the "faprompt" logger;
a failing call raises an Error whose text is the core's message of that call.
"""
import ctypes
import dataclasses
import enum
import logging
import operator
import os
import threading

import numpy as np

from . import _lib

__all__ = ["Config", "Detector", "Error", "Model", "Result", "Status", "stitch_tiles",
           "tile_layout"]

#: the version of the libfaprompt loaded (fap_version)
__version__ = _lib.fap_version().decode()

_logger = logging.getLogger("faprompt")


class Status(enum.IntEnum):
    """fap_status: why a core call failed."""
    OK = 0
    INVALID_ARGUMENT = 1
    IO = 2
    FORMAT = 3
    SCHEMA = 4
    UNSUPPORTED = 5
    NO_MEMORY = 6
    BACKEND = 7


class Error(Exception):
    """A libfaprompt call failed.

    .status         the fap_status (a Status, an int)
    .status_string  the core's description of it (fap_status_string)
    .messages       the core's message of the failing call (fap_last_error), as a
                    one-element list ([] if it had none)
    """

    def __init__(self, what, status, messages):
        try:
            self.status = Status(status)
        except ValueError:  # a status newer than this binding: keep the int
            self.status = status
        self.status_string = _lib.fap_status_string(status).decode()
        self.messages = list(messages)
        text = f"{what}: {self.status_string}"
        if self.messages:
            text += ": " + "; ".join(self.messages)
        super().__init__(text)


# ---- log routing ------------------------------------------------------------
#
# A failing call's Error carries the core's message of that call
# (fap_last_error, kept per thread by the core). Each core call runs with a
# thread log sink (fap_set_thread_log_callback) that appends to a list of
# this thread's, so the call's other messages reach the "faprompt" logger
# once the call is over; the sink is per thread in the core, so calls on
# other threads keep their own lists. One module-level callback: the
# CFUNCTYPE object must outlive every call that may log through it.

_tls = threading.local()
_PY_LEVEL = {_lib.FAP_LOG_ERROR: logging.ERROR, _lib.FAP_LOG_WARNING: logging.WARNING,
             _lib.FAP_LOG_INFO: logging.INFO, _lib.FAP_LOG_DEBUG: logging.DEBUG}


@_lib.LOG_FN
def _on_log(level, message, user_data):
    text = message.decode("utf-8", "replace") if message else ""
    sink = getattr(_tls, "messages", None)
    if sink is None:  # not inside _call on this thread: log right away
        _logger.log(_PY_LEVEL.get(level, logging.ERROR), "%s", text)
    else:
        sink.append((level, text))


_NO_LOG = _lib.LOG_FN()  # a NULL fap_log_fn: the core's default sink again


def _call(what, fn, *args):
    """Calls the core function fn(*args) returning a fap_status; raises Error
    (naming `what`, with the core's message of the call) unless it returned
    FAP_OK."""
    messages = []
    outer = getattr(_tls, "messages", None)
    _tls.messages = messages
    _lib.fap_set_thread_log_callback(_on_log, None)
    try:
        status = fn(*args)
        # read on this thread before anything else calls into the core
        failure = _lib.fap_last_error().decode("utf-8", "replace") if status != _lib.FAP_OK else ""
    finally:
        _tls.messages = outer
        if outer is None:
            _lib.fap_set_thread_log_callback(_NO_LOG, None)
    if status != _lib.FAP_OK:
        # the Error says what failed: the error-level messages (the message
        # and the inner ones it sums up) are not logged as well
        for level, text in messages:
            if level != _lib.FAP_LOG_ERROR:
                _logger.log(_PY_LEVEL.get(level, logging.DEBUG), "%s", text)
        raise Error(what, status, [failure] if failure else [])
    for level, text in messages:
        _logger.log(_PY_LEVEL.get(level, logging.ERROR), "%s", text)


def _c_int(name, value):
    """value as a C int: ctypes would silently wrap one out of range."""
    value = operator.index(value)  # TypeError for floats, strings, ...
    if not -2**31 <= value < 2**31:
        raise ValueError(f"{name} {value} does not fit a C int")
    return value


# ---- model ----------------------------------------------------------------

_CONFIG_SCALARS = [(name, int if ctype is ctypes.c_int else float)
                   for name, ctype in _lib.fap_config._fields_
                   if name not in ("family", "n_out_layers", "out_layers")]
Config = dataclasses.make_dataclass(
    "Config", _CONFIG_SCALARS + [("family", str), ("out_layers", tuple)], frozen=True)
Config.__module__ = __name__
Config.__doc__ = """Every dimension of a model (fap_config), read from its metadata.

image_threshold / pixel_threshold are the calibration (metadata or the
<model>.calibration.json sidecar); < 0 when the model has none. family is
"faprompt" or "anomalyclip"; out_layers the 1-based vision layers whose
patch maps make the map (FAPrompt: the last one)."""


def _config_of(c):
    family = _lib.FAMILY_NAMES[c.family] if 0 <= c.family < len(_lib.FAMILY_NAMES) else "?"
    return Config(*(getattr(c, name) for name, _ in _CONFIG_SCALARS), family,
                  tuple(c.out_layers[:c.n_out_layers]))


class Model:
    """A loaded model file (fap_model_load): Model(path).

    .path, .config (a Config), .parameter_count, .load_seconds. Several
    detectors may share one model; each holds its own reference in the core,
    so closing the model (or dropping it) while they live is safe.
    Use as a context manager or call .close(); freed when garbage collected.
    """

    def __init__(self, path):
        self._handle = None  # __del__ runs even when loading fails
        self._lock = threading.Lock()
        self.path = os.fspath(path)
        handle = ctypes.c_void_p()
        _call(f"cannot load model {self.path}", _lib.fap_model_load, os.fsencode(self.path),
              ctypes.byref(handle))
        self._handle = handle.value
        # Copied now: the core's pointers are only valid while the model is.
        self.config = _config_of(_lib.fap_model_config(self._handle).contents)
        self.parameter_count = _lib.fap_model_parameter_count(self._handle)
        self.load_seconds = _lib.fap_model_load_seconds(self._handle)

    @property
    def closed(self):
        return self._handle is None

    def close(self, _free=_lib.fap_model_free):
        """Drops this object's reference to the core model (detectors keep theirs)."""
        # _free bound at definition: module globals may be gone in __del__ at exit.
        with self._lock:
            handle, self._handle = self._handle, None
        if handle:
            _free(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None):
            self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"S={self.config.image_size}"
        return f"<faprompt.Model {self.path!r} {state}>"


# ---- tiles ----------------------------------------------------------------

def _grid(area, tiles, overlap):
    try:
        x, y, w, h = (int(v) for v in area)
    except (TypeError, ValueError):
        raise ValueError(f"area {area!r} is not (x, y, w, h)") from None
    try:
        cols, rows = (int(v) for v in tiles)
    except (TypeError, ValueError):
        raise ValueError(f"tiles {tiles!r} is not (columns, rows)") from None
    rect = _lib.fap_rect(*(_c_int(n, v) for n, v in zip(("x", "y", "width", "height"),
                                                          (x, y, w, h))))
    return rect, _c_int("columns", cols), _c_int("rows", rows), _c_int("overlap", overlap)


def tile_layout(area, tiles, overlap=0):
    """The tiles of a rectangle (fap_tiles_layout; docs/SPEC.md section 1.2,
    Tiles): area (x, y, w, h) in pixels, tiles (columns, rows), neighbours
    overlapping by at least overlap pixels. Returns (x, y, w, h) per tile,
    row-major: equal sizes, the first and last flush with the edges. Score
    them with Detector.run_rois and put their maps together with
    stitch_tiles. Raises Error naming the value for a grid the rectangle
    cannot take (more tiles than pixels, an overlap too large)."""
    rect, cols, rows, overlap = _grid(area, tiles, overlap)
    out = (_lib.fap_rect * (cols * rows if cols > 0 and rows > 0 else 1))()
    _call("tile layout failed", _lib.fap_tiles_layout, rect, cols, rows, overlap, out)
    return [(t.x, t.y, t.width, t.height) for t in out]


def tiles_auto(areas, grid, max_patch_pixels, overlap=0, max_crops=16):
    """The grid the element's tiles=auto picks (fap_tiles_auto; docs/SPEC.md
    section 1.2, Automatic tiles): areas a list of (x, y, w, h), grid the
    model's patches per side (S / patch size), max_patch_pixels the most
    frame pixels one patch may cover along an axis, max_crops the batch.
    Returns (columns, rows, met, worst): met is False when no grid within
    max_crops keeps every patch under the bound (then the grid with the
    smallest largest patch), worst that largest patch in frame pixels."""
    rects = []
    for area in areas:
        rect, _, _, _ = _grid(area, (1, 1), 0)
        rects.append(rect)
    table = (_lib.fap_rect * max(len(rects), 1))(*rects)
    cols, rows, met, worst = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_double()
    _call("automatic tiles failed", _lib.fap_tiles_auto, table, _c_int("areas", len(rects)),
          _c_int("grid", grid), _c_int("max_patch_pixels", max_patch_pixels),
          _c_int("overlap", overlap), _c_int("max_crops", max_crops), ctypes.byref(cols),
          ctypes.byref(rows), ctypes.byref(met), ctypes.byref(worst))
    return cols.value, rows.value, bool(met.value), worst.value


def stitch_tiles(area, tiles, maps, overlap=0, size=None):
    """One map of the rectangle from its tiles' maps (fap_tiles_stitch;
    docs/SPEC.md section 1.2, Tiles): the same area, tiles and overlap as
    tile_layout, maps the tiles' square maps in its order (e.g. each
    Result.map of run_rois). Each output pixel is the mean of the covering
    tiles' maps, sampled bilinearly, weighted by ramps across the overlaps:
    no seams. size (width, height) of the result, default the rectangle's.
    Returns float32 [height, width]."""
    rect, cols, rows, overlap = _grid(area, tiles, overlap)
    arrays = [np.ascontiguousarray(m, dtype=np.float32) for m in maps]
    if len(arrays) != max(cols, 0) * max(rows, 0) and cols > 0 and rows > 0:
        raise ValueError(f"{len(arrays)} maps for {cols} x {rows} tiles")
    side = arrays[0].shape[0] if arrays else 0
    if any(a.ndim != 2 or a.shape != (side, side) for a in arrays):
        raise ValueError(f"the maps must be square and of one size, got "
                         f"{sorted(set(a.shape for a in arrays))}")
    out_w, out_h = (rect.width, rect.height) if size is None else (int(v) for v in size)
    out = np.empty((max(out_h, 0), max(out_w, 0)), dtype=np.float32)
    ptr = ctypes.POINTER(ctypes.c_float)
    table = (ptr * max(len(arrays), 1))(*(a.ctypes.data_as(ptr) for a in arrays))
    _call("stitching failed", _lib.fap_tiles_stitch, rect, cols, rows, overlap,
          table, side, out.ctypes.data_as(ptr), _c_int("width", out_w), _c_int("height", out_h))
    del arrays  # the maps, kept alive until the core has read them
    return out


# ---- detector -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Result:
    """One image's result.

    score      image anomaly score in [0, 1]
    anomalous  score > threshold
    threshold  the threshold it was compared with
    map        float32 [S, S] smoothed anomaly map (the caller's own copy)
    stage_ms   milliseconds per stage, by the core's stage name
    total_ms   milliseconds for the whole image
    frame_bytes_to_device, frame_bytes_from_device: pixels copied to / from
               the GPU for this image (0 on the CPU)
    """
    score: float
    anomalous: bool
    threshold: float
    map: np.ndarray = dataclasses.field(repr=False)
    stage_ms: dict
    total_ms: float
    frame_bytes_to_device: int = 0
    frame_bytes_from_device: int = 0
    roi: tuple = None  # (x, y, w, h) of the rectangle scored (run_rois), None: the image


def _frame(image):
    """A fap_frame over image (H x W x 3 RGB or H x W x 4 RGBA uint8) and the
    array it points into, which the caller must keep alive during the call."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (RGB or RGBA bytes), got dtype {a.dtype}")
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"image must be H x W x 3 (RGB) or H x W x 4 (RGBA), got shape {a.shape}")
    h, w, c = a.shape
    if h == 0 or w == 0:
        raise ValueError(f"image is empty (shape {a.shape})")
    if h >= 2**31 or w >= 2**31:
        raise ValueError(f"image shape {a.shape} is too large")
    # The core takes rows `stride` bytes apart with packed pixels within a
    # row: a view like img[::2] or a crop is used as it is; anything else
    # (img[:, ::-1], a channel-reversed or broadcast view) is copied.
    if a.strides[2] == 1 and a.strides[1] == c and a.strides[0] >= w * c:
        stride = a.strides[0]
    else:
        a = np.ascontiguousarray(a)
        stride = w * c  # not a.strides[0]: numpy keeps any stride on a size-1 axis
    frame = _lib.fap_frame(format=_lib.FAP_PIXEL_RGBA if c == 4 else _lib.FAP_PIXEL_RGB,
                           width=w, height=h, stride=stride, data=a.ctypes.data)
    return frame, a


class Detector:
    """Runs a model on images: Detector(model, backend="auto", ...).

    backend    "auto" (CUDA when available, else CPU), "cpu" or "cuda"
    image_size S the model runs at; 0 = the model's (a multiple of its patch size)
    threads    CPU threads; 0 = all cores
    sigma      Gaussian sigma of the map in pixels; None = the model's, 0 = none
    device     CUDA device ordinal
    batch      most images one core call takes (run_batch splits longer lists)
    precision  "auto" (CPU: bf16 where it has bf16 units, else f32; CUDA: f16),
               "f32" (exact), "f16", "bf16" or "int8" (CPU:
               bf16 / int8 where the CPU runs them faster, else f32; see
               .precision)
    reference  CPU: the plain reference loops (slow; for checking)

    .backend, .image_size, .batch, .precision say what the core chose;
    .threshold (settable) is the model's image_threshold when it has one,
    else 0.5. One detector runs one call at a time (calls from several
    threads take turns); use one detector per thread for parallel work.
    Use as a context manager or call .close(); freed when garbage collected.
    """

    def __init__(self, model, backend="auto", image_size=0, threads=0, sigma=None, device=0,
                 batch=1, precision="auto", reference=False):
        self._handle = None  # __del__ runs even when creation fails
        self._lock = threading.Lock()
        if not isinstance(model, Model):
            raise TypeError(f"model must be a faprompt.Model, got {type(model).__name__}")
        if backend not in _lib.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of "
                             f"{', '.join(map(repr, _lib.BACKENDS))}")
        if precision not in _lib.PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of "
                             f"{', '.join(map(repr, _lib.PRECISIONS))}")
        o = _lib.fap_detector_options()
        _lib.fap_detector_options_init(ctypes.byref(o))
        o.backend = _lib.BACKENDS[backend]
        o.device_id = _c_int("device", device)
        o.threads = _c_int("threads", threads)
        o.image_size = _c_int("image_size", image_size)
        o.sigma = -1.0 if sigma is None else float(sigma)
        o.reference = 1 if reference else 0
        o.batch = _c_int("batch", batch)
        o.precision = _lib.PRECISIONS[precision]
        handle = ctypes.c_void_p()
        with model._lock:  # the model may not be closed under the core's feet
            if model._handle is None:
                raise ValueError("cannot create a detector: the model is closed")
            _call(f"cannot create a detector (backend {backend}) for {model.path}",
                  _lib.fap_detector_new, model._handle, ctypes.byref(o), ctypes.byref(handle))
        self._handle = handle.value
        # Fixed for the detector's life: read once, still there after close().
        self.backend = _lib.fap_backend_name(_lib.fap_detector_backend(self._handle)).decode()
        self.image_size = _lib.fap_detector_image_size(self._handle)
        self.batch = _lib.fap_detector_batch(self._handle)
        self.precision = _lib.fap_precision_name(_lib.fap_detector_precision(self._handle)).decode()
        # No Python reference to `model`: the detector's core reference keeps it.
        t = model.config.image_threshold
        self.threshold = float(t) if t >= 0 else 0.5

    @property
    def closed(self):
        return self._handle is None

    def run(self, image, threshold=None):
        """Scores one image (H x W x 3 RGB or H x W x 4 RGBA uint8 array);
        returns a Result. threshold: None = self.threshold."""
        frame, keep = _frame(image)
        result = _lib.fap_result()
        with self._lock:
            _call("inference failed", _lib.fap_detector_run, self._live(), ctypes.byref(frame),
                  ctypes.byref(result))
            out = self._result(result, threshold)  # the core's map dies at the next run
        del keep  # (held until here: the core reads the pixels during the call)
        return out

    def run_rois(self, image, rois, threshold=None):
        """Scores rectangles of one image instead of the whole image, as the
        faprompt element's roi property does: rois is a sequence of (x, y, w, h)
        in pixels (at most .batch of them: they run as one batch); each one is
        resized on its own (only its pixels are read) and scored exactly as the
        image cropped to it would be. Returns one Result per rectangle, in
        order (.roi says which; .map covers the rectangle); the image's score
        is the highest of theirs, anomalous when any is."""
        rects = []
        for r in rois:
            try:
                x, y, w, h = (int(v) for v in r)
            except (TypeError, ValueError):
                raise ValueError(f"roi {r!r} is not (x, y, w, h)") from None
            rects.append((x, y, w, h))
        if not 1 <= len(rects) <= self.batch:
            raise ValueError(f"{len(rects)} rectangles, but this detector runs 1 .. {self.batch} "
                             f"in one batch (Detector(..., batch=N))")
        frame, keep = _frame(image)
        frames = (_lib.fap_frame * len(rects))()
        for i, rect in enumerate(rects):
            frames[i] = frame
            frames[i].crop = _lib.fap_rect(*rect)
        results = (_lib.fap_result * len(rects))()
        with self._lock:
            _call("inference failed", _lib.fap_detector_run_batch, self._live(), frames,
                  len(rects), None, results)
            out = [self._result(r, threshold) for r in results]
        del keep
        return [dataclasses.replace(res, roi=rect) for res, rect in zip(out, rects)]

    def run_batch(self, images, threshold=None):
        """Scores a sequence of images (sizes may differ), up to .batch per core
        call; returns a list of Results in the same order."""
        prepared = [_frame(image) for image in images]  # validate all before running any
        out = []
        for start in range(0, len(prepared), self.batch):
            chunk = prepared[start:start + self.batch]
            frames = (_lib.fap_frame * len(chunk))(*(f for f, _ in chunk))
            results = (_lib.fap_result * len(chunk))()
            with self._lock:
                _call("batch inference failed", _lib.fap_detector_run_batch, self._live(),
                      frames, len(chunk), None, results)
                out.extend(self._result(r, threshold) for r in results)
        del prepared  # the arrays behind the frames, kept alive until here
        return out

    def _live(self):
        if self._handle is None:
            raise ValueError("the detector is closed")
        return self._handle

    def _result(self, r, threshold):
        t = self.threshold if threshold is None else float(threshold)
        s = r.map_size
        heat = np.ctypeslib.as_array(r.map, shape=(s, s)).copy()
        return Result(score=float(r.score), anomalous=bool(r.score > t), threshold=t, map=heat,
                      stage_ms=dict(zip(_lib.STAGES, r.stage_ms)), total_ms=r.total_ms,
                      frame_bytes_to_device=r.frame_bytes_to_device,
                      frame_bytes_from_device=r.frame_bytes_from_device)

    def close(self, _free=_lib.fap_detector_free):
        """Frees the detector (and its reference to the model)."""
        with self._lock:  # not while another thread runs on it
            handle, self._handle = self._handle, None
            if handle:
                _free(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None):
            self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"{self.backend} S={self.image_size} B={self.batch}"
        return f"<faprompt.Detector {state}>"
