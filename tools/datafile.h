/* Where the tools find the files they ship beside them (the PyTorch scripts
 * the benchmarks start: reference/authors_speed.py, reference/faprompt_ref.py).
 * Installed, in the install's data folder (share/faprompt, FAP_DATA_DIR); run
 * from the build tree, in the source tree, which the file faprompt-data-dir
 * beside the executable names (written by tools/meson.build, never
 * installed). An installed program holds no path into a source tree. */
#ifndef FAP_TOOLS_DATAFILE_H
#define FAP_TOOLS_DATAFILE_H

/* The path of @name (e.g. "reference/faprompt_ref.py") in the data folder of
 * this program; free with g_free. */
char *tool_data_file(const char *name);

#endif
