/* no_entry.c - a shared object without the entry symbol, which the loader must refuse. */
int mfpipe_not_the_entry(void);
int mfpipe_not_the_entry(void) { return 1; }
