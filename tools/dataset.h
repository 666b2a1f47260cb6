/* Test sets in the layouts the authors evaluate on, as one list of classes,
 * each a list of samples (image, optional mask, label):
 *   mvtec  <root>/<class>/test/<defect>/<name>.<ext>, masks
 *          <root>/<class>/ground_truth/<defect>/<name>_mask.png; defect "good"
 *          is normal and has no mask. <root> may also be one class folder.
 *   visa   <root>/split_csv/1cls.csv with columns object,split,label,image,mask
 *          (rows with split == test; label normal / anomaly; paths relative to
 *          <root>; mask may be empty).
 *   meta   <root>/meta.json, the authors' {"test": {class: [{"img_path",
 *          "mask_path", "cls_name", "specie_name", "anomaly"}]}}.
 * As in the authors' loader, a normal sample's mask is all zeros whatever its
 * mask path says, and an anomalous sample whose mask path is empty or a folder
 * also gets an all-zero mask (counted in missing_masks so callers can warn). */
#ifndef FAP_TOOLS_DATASET_H
#define FAP_TOOLS_DATASET_H

#include <glib.h>

typedef enum {
  DATASET_AUTO = 0,
  DATASET_MVTEC,
  DATASET_VISA,
  DATASET_META,
} dataset_layout;

typedef struct {
  char *image; /* full path */
  char *mask;  /* full path, NULL: all-zero mask */
  char *defect;
  int anomaly;
} dataset_sample;

typedef struct {
  char *name;
  GArray *samples; /* dataset_sample */
} dataset_class;

typedef struct {
  dataset_layout layout;
  char *root;
  GPtrArray *classes; /* dataset_class*, in the order of the source */
  int missing_masks;  /* anomalous samples without a mask file */
} dataset;

const char *dataset_layout_name(dataset_layout layout);
/* "mvtec" / "visa" / "meta" / "auto" -> layout; -1 when unknown. */
int dataset_layout_parse(const char *name);

/* Lists a test set. Checks that every image and mask path exists (not that it
 * decodes); the error names the first bad path and what was expected. */
dataset *dataset_open(const char *root, dataset_layout layout, GError **error);
void dataset_free(dataset *d);

/* Keeps at most n samples per class, spread evenly over the class's list
 * (sample floor(i * len / n) for i < n), so that normal and anomalous ones
 * both stay. */
void dataset_limit(dataset *d, int n);
/* Keeps only the named classes (comma separated); error on an unknown name. */
int dataset_select(dataset *d, const char *names, GError **error);

#endif
