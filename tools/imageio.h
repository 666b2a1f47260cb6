/* Image files for the faprompt-* tools, through gdk-pixbuf (PNG, JPEG, BMP,
 * TIFF, ... whatever loaders are installed): listing a folder, decoding into a
 * fap_frame, writing the heatmap overlay and the raw map as a 16-bit PNG. */
#ifndef FAP_TOOLS_IMAGEIO_H
#define FAP_TOOLS_IMAGEIO_H

#include "fap.h"

#include <gdk-pixbuf/gdk-pixbuf.h>
#include <glib.h>

#define TOOLS_ERROR (tools_error_quark())
GQuark tools_error_quark(void);

/* Lower-case extensions some installed gdk-pixbuf loader claims. */
GHashTable *imageio_extensions(void);
int imageio_has_extension(GHashTable *exts, const char *name);

/* Appends the image files of dir (sorted by name, not recursive) to files
 * (which frees with g_free). Returns the number added, -1 with *error set
 * when dir cannot be read. */
int imageio_list_dir(GPtrArray *files, GHashTable *exts, const char *dir, GError **error);

/* File name without directory and without its last extension. */
gchar *imageio_stem(const char *path);

/* Decodes path; on success *frame views the returned pixbuf's pixels (valid
 * while the pixbuf lives). RGB or RGBA, 8 bits; grey images arrive as RGB.
 * EXIF orientation is not applied, as PIL's Image.open does not either. */
GdkPixbuf *imageio_load(const char *path, fap_frame *frame, GError **error);

/* The input at its own size with the map drawn in by the core
 * (fap_blend_frame: jet on a fixed scale, the element's look), as PNG. */
int imageio_write_heatmap(const char *path, GdkPixbuf *image, const float *map, int size,
                          const fap_blend *blend, GError **error);
/* The same with n maps, map i drawn into crop i (fap_frame.crop), in order. */
int imageio_write_heatmap_crops(const char *path, GdkPixbuf *image, const float *const *maps,
                                const fap_rect *crops, int n, int size, const fap_blend *blend,
                                GError **error);

/* The map as a 16-bit greyscale PNG: round(clamp(v, 0, 1) * 65535). Returns
 * 0 with *error set when libpng was not available at build time. */
int imageio_write_map_png16(const char *path, const float *map, int size, GError **error);
int imageio_have_png16(void);

#endif
