"""The evaluation metrics of FAPrompt's test code (which is AnomalyCLIP's),
written from their formulas with scikit-learn and scikit-image, plus the
standard MVTec AD AUPRO and the authors' mask preparation with PIL. The tests
compare faprompt-eval against these. Each returns None where the authors' code
would raise or produce NaN.
"""
import warnings

import numpy as np
from PIL import Image
from skimage import measure
from sklearn import metrics


def _nan_to_none(v):
    v = float(v)
    return None if np.isnan(v) else v


def image_auroc(labels, scores):
    try:
        return _nan_to_none(metrics.roc_auc_score(labels, scores))
    except ValueError:  # "Only one class present in y_true"
        return None


def image_ap(labels, scores):
    if np.sum(labels) == 0:
        return None  # sklearn warns and returns 0; faprompt-eval reports n/a
    return _nan_to_none(metrics.average_precision_score(labels, scores))


def pixel_auroc(masks, maps):
    try:
        return _nan_to_none(metrics.roc_auc_score(masks.ravel(), maps.ravel()))
    except ValueError:
        return None


def pro_thresholds(maps):
    """np.arange(min, max, (max - min) / 200) on the float32 maps (numpy 1.x)."""
    min_th, max_th = maps.min(), maps.max()
    delta = (max_th - min_th) / 200
    return np.arange(min_th, max_th, delta)


def aupro_authors(masks, maps, max_step=200, expect_fpr=0.3):
    """cal_pro_score: 200 thresholds between the class's min and max map value,
    PRO = mean over all connected regions of the fraction detected, FPR over
    all mask-free pixels; keep FPR < 0.3, rescale those FPRs to [0, 1] by their
    own span, area under PRO(FPR) with sklearn.metrics.auc."""
    masks = masks.astype(np.float32)
    maps = maps.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            min_th, max_th = maps.min(), maps.max()
            delta = (max_th - min_th) / max_step
            ths = np.arange(min_th, max_th, delta)
        except (ValueError, ZeroDivisionError):
            return None
        regions = [[(r.coords[:, 0], r.coords[:, 1], r.area) for r in measure.regionprops(measure.label(m))]
                   for m in masks]
        inverse = 1 - masks
        inverse_sum = inverse.sum()
        pros, fprs = [], []
        for th in ths:
            binary = maps > th
            ratios = [binary[i][rows, cols].sum() / area
                      for i, regs in enumerate(regions) for rows, cols, area in regs]
            pros.append(np.array(ratios).mean())
            fprs.append(np.logical_and(inverse, binary).sum() / inverse_sum)
        pros, fprs = np.array(pros), np.array(fprs)
        keep = fprs < expect_fpr
        try:
            f = fprs[keep]
            f = (f - f.min()) / (f.max() - f.min())
            return _nan_to_none(metrics.auc(f, pros[keep]))
        except ValueError:
            return None


def aupro_mvtec(masks, maps, limit=0.3):
    """MVTec AD evaluation code: the PRO curve at every distinct map value
    (descending), FPR and PRO cumulated, (0, 0) and (1, 1) added, integrated
    with trapezoids up to FPR = limit (interpolating there), divided by limit."""
    masks = masks.astype(bool)
    ok = ~masks
    num_ok = ok.sum()
    weights = np.zeros(masks.shape, dtype=np.float64)
    num_regions = 0
    for i, m in enumerate(masks):
        lab = measure.label(m, connectivity=2)
        for r in measure.regionprops(lab):
            weights[i][r.coords[:, 0], r.coords[:, 1]] = 1.0 / r.area
            num_regions += 1
    if num_ok == 0 or num_regions == 0:
        return None
    scores = maps.astype(np.float32).ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    s = scores[order]
    fp = np.cumsum(ok.ravel()[order].astype(np.int64))
    pw = np.cumsum(weights.ravel()[order])
    last = np.append(np.diff(s) != 0, True)
    fprs = np.clip(fp[last] / num_ok, None, 1.0)
    pros = np.clip(pw[last] / num_regions, None, 1.0)
    x = np.concatenate(([0.0], fprs, [1.0]))
    y = np.concatenate(([0.0], pros, [1.0]))
    correction = 0.0
    if limit not in x:
        ins = int(np.searchsorted(x, limit, side="right"))
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (limit - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y[ins - 1] + y_interp) * (limit - x[ins - 1])
    keep = x <= limit
    x, y = x[keep], y[keep]
    area = np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) + correction
    return float(area / limit)


def all_metrics(labels, scores, masks, maps):
    return {
        "image_auroc": image_auroc(labels, scores),
        "image_ap": image_ap(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps),
        "pixel_aupro": aupro_authors(masks, maps),
        "pixel_aupro_mvtec": aupro_mvtec(masks, maps),
    }


def authors_mask(path, size, anomaly=1):
    """The ground truth the authors' loader and test loop make of a mask file:
    convert('L') > 0 as 0/255, transforms.Resize((S, S)) (PIL bilinear on a PIL
    image), CenterCrop (no-op), ToTensor (/255), > 0.5."""
    if not anomaly or path is None:
        return np.zeros((size, size), dtype=np.uint8)
    m = np.array(Image.open(path).convert("L")) > 0
    m = Image.fromarray(m.astype(np.uint8) * 255, mode="L")
    m = m.resize((size, size), Image.BILINEAR)
    t = np.asarray(m, dtype=np.float32) / 255.0
    return (t > 0.5).astype(np.uint8)
