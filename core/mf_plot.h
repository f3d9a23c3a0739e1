/* mf_plot.h - `mfpipe plot`: a CSV table (header row, comma-separated) to an SVG line chart
 * (mf_svg.h); and the small CSV reader it uses. Format and command: docs/plots.md. */
#ifndef MF_PLOT_H
#define MF_PLOT_H

#ifdef __cplusplus
extern "C" {
#endif

/* A CSV table: the header's names and the rows' fields as strings (trimmed, quotes removed), with
 * the line and character column (1-based) of every field for error messages. Format: one record per
 * line, fields separated by commas; spaces and tabs around a field are dropped; a field may be
 * double-quoted ("a, b", "say ""hi""") but may not span lines; empty lines and lines starting with
 * '#' are skipped; CRLF line ends and a UTF-8 byte-order mark are accepted; every row has as many
 * fields as the header. */
typedef struct mf_table {
    char *path;
    int ncol, nrow;
    char **head;  /* ncol */
    int *head_col;
    char **cell;  /* nrow * ncol, row-major */
    int *line;    /* nrow: line number of each row */
    int *col;     /* nrow * ncol: column of each field */
} mf_table;

#define MF_TABLE_MAX_BYTES ((size_t)256 << 20)
/* Read (a gzipped file is inflated). 0, or -1 with mf_fail naming the file, line and column. */
int mf_table_read(const char *path, mf_table *t);
void mf_table_free(mf_table *t);
/* Index of the column named `name`, or -1 with mf_fail naming the file and the columns it has (or,
 * for a name the header has twice, both positions). */
int mf_table_column(const mf_table *t, const char *name);
/* The field as a number: any strtod syntax, surrounding spaces dropped; an empty field, nan, NA,
 * null and - are missing values (NaN). 0, or -1 with mf_fail("FILE:LINE:COL: column 'NAME': ..."). */
int mf_table_number(const mf_table *t, int row, int col, double *v);
static inline const char *mf_table_cell(const mf_table *t, int row, int col) { return t->cell[(long)row * t->ncol + col]; }

/* `mfpipe plot ARGS`: 0 done; 1 bad input (mf_fail set); 2 bad command line (mf_fail set). */
int mf_plot_cmd(int argc, char **argv);
extern const char mf_plot_help[];

#ifdef __cplusplus
}
#endif
#endif
