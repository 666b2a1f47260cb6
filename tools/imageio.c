#include "imageio.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#ifdef FAP_HAVE_LIBPNG
#include <png.h>
#endif

G_DEFINE_QUARK(faprompt-tools-error-quark, tools_error)

GHashTable *imageio_extensions(void) {
  GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  GSList *formats = gdk_pixbuf_get_formats();
  for (GSList *l = formats; l; l = l->next) {
    GdkPixbufFormat *f = l->data;
    if (gdk_pixbuf_format_is_disabled(f))
      continue;
    gchar **exts = gdk_pixbuf_format_get_extensions(f);
    for (int i = 0; exts && exts[i]; i++)
      g_hash_table_add(set, g_ascii_strdown(exts[i], -1));
    g_strfreev(exts);
  }
  g_slist_free(formats);
  return set;
}

int imageio_has_extension(GHashTable *exts, const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot || dot == name || !dot[1])
    return 0;
  gchar *ext = g_ascii_strdown(dot + 1, -1);
  int yes = g_hash_table_contains(exts, ext);
  g_free(ext);
  return yes;
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int imageio_list_dir(GPtrArray *files, GHashTable *exts, const char *dir, GError **error) {
  GDir *d = g_dir_open(dir, 0, error);
  if (!d)
    return -1;
  GPtrArray *found = g_ptr_array_new();
  const char *name;
  while ((name = g_dir_read_name(d))) {
    if (!imageio_has_extension(exts, name))
      continue;
    gchar *path = g_build_filename(dir, name, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
      g_ptr_array_add(found, path);
    else
      g_free(path);
  }
  g_dir_close(d);
  g_ptr_array_sort(found, compare_strings);
  for (guint i = 0; i < found->len; i++)
    g_ptr_array_add(files, found->pdata[i]);
  int n = (int)found->len;
  g_ptr_array_free(found, TRUE);
  return n;
}

gchar *imageio_stem(const char *path) {
  gchar *base = g_path_get_basename(path);
  char *dot = strrchr(base, '.');
  if (dot && dot != base)
    *dot = '\0';
  return base;
}

GdkPixbuf *imageio_load(const char *path, fap_frame *frame, GError **error) {
  GdkPixbuf *image = gdk_pixbuf_new_from_file(path, error);
  if (!image)
    return NULL;
  const int channels = gdk_pixbuf_get_n_channels(image);
  if (gdk_pixbuf_get_colorspace(image) != GDK_COLORSPACE_RGB ||
      gdk_pixbuf_get_bits_per_sample(image) != 8 || (channels != 3 && channels != 4)) {
    g_set_error(error, TOOLS_ERROR, 0, "decoded to an unsupported layout (%d channels, %d bits)",
                channels, gdk_pixbuf_get_bits_per_sample(image));
    g_object_unref(image);
    return NULL;
  }
  /* Alpha is ignored by the core, as PIL's convert("RGB") does in the
   * reference pipeline. Rows may be padded. */
  memset(frame, 0, sizeof *frame);
  frame->format = channels == 4 ? FAP_PIXEL_RGBA : FAP_PIXEL_RGB;
  frame->width = gdk_pixbuf_get_width(image);
  frame->height = gdk_pixbuf_get_height(image);
  frame->stride = (size_t)gdk_pixbuf_get_rowstride(image);
  frame->data = gdk_pixbuf_read_pixels(image);
  return image;
}

/* The core draws (fap_blend_frame): the same look, pixel for pixel, as the
 * faprompt element on the same frame and map. */
int imageio_write_heatmap(const char *path, GdkPixbuf *image, const float *map, int size,
                          const fap_blend *blend, GError **error) {
  const fap_rect whole = {0, 0, 0, 0};
  return imageio_write_heatmap_crops(path, image, &map, &whole, 1, size, blend, error);
}

int imageio_write_heatmap_crops(const char *path, GdkPixbuf *image, const float *const *maps,
                                const fap_rect *crops, int n, int size, const fap_blend *blend,
                                GError **error) {
  GdkPixbuf *out = gdk_pixbuf_copy(image);
  if (!out) {
    g_set_error(error, TOOLS_ERROR, 0, "out of memory");
    return 0;
  }
  fap_frame frame = {gdk_pixbuf_get_n_channels(out) == 4 ? FAP_PIXEL_RGBA : FAP_PIXEL_RGB,
                     gdk_pixbuf_get_width(out), gdk_pixbuf_get_height(out),
                     (size_t)gdk_pixbuf_get_rowstride(out), gdk_pixbuf_get_pixels(out)};
  for (int i = 0; i < n; i++) {
    frame.crop = crops[i];
    fap_status st = fap_blend_frame(&frame, maps[i], size, blend);
    if (st != FAP_OK) {
      g_set_error(error, TOOLS_ERROR, 0, "cannot draw the heatmap: %s", fap_last_error());
      g_object_unref(out);
      return 0;
    }
  }
  int ok = gdk_pixbuf_save(out, path, "png", error, NULL);
  g_object_unref(out);
  return ok;
}

int imageio_have_png16(void) {
#ifdef FAP_HAVE_LIBPNG
  return 1;
#else
  return 0;
#endif
}

int imageio_write_map_png16(const char *path, const float *map, int size, GError **error) {
#ifdef FAP_HAVE_LIBPNG
  FILE *f = fopen(path, "wb");
  if (!f) {
    g_set_error(error, TOOLS_ERROR, 0, "%s", g_strerror(errno));
    return 0;
  }
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  uint8_t *row = g_malloc((size_t)size * 2);
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fclose(f);
    g_free(row);
    g_unlink(path);
    g_set_error(error, TOOLS_ERROR, 0, "libpng could not write the file");
    return 0;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)size, (png_uint_32)size, 16, PNG_COLOR_TYPE_GRAY,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < size; y++) {
    for (int x = 0; x < size; x++) {
      float v = map[(size_t)y * size + x];
      v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f; /* NaN -> 0 */
      unsigned q = (unsigned)lrintf(v * 65535.0f);
      row[2 * x] = (uint8_t)(q >> 8); /* PNG is big-endian */
      row[2 * x + 1] = (uint8_t)(q & 0xff);
    }
    png_write_row(png, row);
  }
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  g_free(row);
  if (fclose(f) != 0) {
    g_set_error(error, TOOLS_ERROR, 0, "%s", g_strerror(errno));
    g_unlink(path);
    return 0;
  }
  return 1;
#else
  (void)path;
  (void)map;
  (void)size;
  g_set_error(error, TOOLS_ERROR, 0, "built without libpng (Debian: libpng-dev)");
  return 0;
#endif
}
