/* test_config.c - unit tests of core/mf_config.c: parsing with positions, composition, merge,
 * overrides, conversions, schema validation, YAML dump round trip and suggestions. */
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_config.h"
#include "mf_error.h"
#include "mf_test.h"

static char g_dir[512];
static char *g_files[64]; /* written files, removed at the end */
static int g_nfiles;

static void write_file(const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    if (g_nfiles < 64) g_files[g_nfiles++] = mf_xstrdup(path);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static char *tmp_path(const char *name) { return mf_xasprintf("%s/%s", g_dir, name); }

static mf_node *parse(const char *text) {
    mf_node *n = mf_cfg_parse_string(text, "t.yaml");
    CHECK_MSG(n != NULL, "parse failed: %s", mf_last_error());
    return n;
}

static bool tree_equal(const mf_node *a, const mf_node *b) {
    if (a->kind != b->kind || a->n_children != b->n_children || a->quoted != b->quoted) return false;
    if ((a->key == NULL) != (b->key == NULL) || (a->key && strcmp(a->key, b->key))) return false;
    if ((a->value == NULL) != (b->value == NULL) || (a->value && strcmp(a->value, b->value))) return false;
    for (const mf_node *x = a->first, *y = b->first; x; x = x->next, y = y->next)
        if (!tree_equal(x, y)) return false;
    return true;
}

static void test_parse(void) {
    mf_node *r = parse("name: mnist\n"
                       "train:\n"
                       "  steps: 100\n"
                       "  lr: 2.0e-4\n"
                       "  tag: \"123\"\n"
                       "  other: 'x'\n"
                       "  none: ~\n"
                       "  empty:\n"
                       "  nul: null\n"
                       "  text: |\n"
                       "    line1\n"
                       "    line2\n"
                       "mult: [1, 2, 2]\n"
                       "stages:\n"
                       "  - kind: data\n"
                       "    n: 3\n"
                       "  - kind: train\n");
    if (!r) return;
    CHECK(r->kind == MF_NODE_MAP && r->n_children == 4);
    mf_node *n = mf_cfg_find(r, "name");
    CHECK(n && n->kind == MF_NODE_SCALAR && !strcmp(n->value, "mnist") && !n->quoted);
    CHECK(n && n->line == 1 && n->col == 1 && !strcmp(n->origin, "t.yaml"));
    n = mf_cfg_find(r, "train.steps");
    CHECK(n && !strcmp(n->value, "100") && n->line == 3 && n->col == 3); /* key position */
    n = mf_cfg_find(r, "train.tag");
    CHECK(n && n->quoted && !strcmp(n->value, "123"));
    n = mf_cfg_find(r, "train.other");
    CHECK(n && n->quoted && !strcmp(n->value, "x"));
    CHECK(mf_cfg_find(r, "train.none")->kind == MF_NODE_NULL);
    CHECK(mf_cfg_find(r, "train.empty")->kind == MF_NODE_NULL);
    CHECK(mf_cfg_find(r, "train.nul")->kind == MF_NODE_NULL);
    n = mf_cfg_find(r, "train.text");
    CHECK(n && n->quoted && !strcmp(n->value, "line1\nline2\n"));
    n = mf_cfg_find(r, "mult");
    CHECK(n && n->kind == MF_NODE_SEQ && n->n_children == 3 && n->line == 13);
    CHECK(n && n->first->line == 13 && n->first->col == 8 && !strcmp(n->last->value, "2"));
    n = mf_cfg_find(r, "stages[1].kind");
    CHECK(n && !strcmp(n->value, "train") && n->line == 17 && n->col == 5);
    n = mf_cfg_find(r, "stages[0].n");
    CHECK(n && !strcmp(n->value, "3") && n->line == 16);
    CHECK(mf_cfg_find(r, "stages[2]") == NULL && mf_cfg_find(r, "nope") == NULL && mf_cfg_find(r, "name.x") == NULL);
    char *p = mf_node_path(n);
    CHECK(!strcmp(p, "stages[0].n"));
    free(p);
    p = mf_node_path(mf_cfg_find(r, "train.lr"));
    CHECK(!strcmp(p, "train.lr"));
    free(p);
    char w[256];
    CHECK(!strcmp(mf_node_where(mf_cfg_find(r, "train.lr"), w, sizeof w), "t.yaml:4:3"));
    CHECK(mf_node_child(r, "train") == mf_cfg_find(r, "train"));

    /* clone is deep and equal */
    mf_node *c = mf_node_clone(r);
    CHECK(tree_equal(c, r) && c->first != r->first);
    mf_node_free(c);
    /* freeing a subtree unlinks it */
    mf_node_free(mf_cfg_find(r, "stages"));
    CHECK(r->n_children == 3 && mf_cfg_find(r, "stages") == NULL && r->last == mf_cfg_find(r, "mult"));
    mf_node_free(r);

    /* anchors and aliases are cloned */
    r = parse("base: &b {lr: 1, wd: 2}\nother: *b\nx: &s hello\ny: *s\n");
    if (r) {
        CHECK(!strcmp(mf_cfg_find(r, "other.wd")->value, "2") && mf_cfg_find(r, "other.wd") != mf_cfg_find(r, "base.wd"));
        CHECK(!strcmp(mf_cfg_find(r, "y")->value, "hello") && mf_cfg_find(r, "y")->line == 4);
        mf_node_free(r);
    }
    CHECK(mf_cfg_parse_string("a: *nope\n", "al.yaml") == NULL);
    CHECK_ERR_CONTAINS("al.yaml:1:4: unknown alias *nope");

    /* the root may be a scalar or a sequence */
    r = parse("[1, 2]");
    CHECK(r && r->kind == MF_NODE_SEQ && r->n_children == 2);
    mf_node_free(r);
}

static void test_parse_errors(void) {
    CHECK(mf_cfg_parse_string("a: 1\nb: [1, 2\nc: 3\n", "bad.yaml") == NULL);
    CHECK_ERR_CONTAINS("bad.yaml:");
    CHECK_MSG(strstr(mf_last_error(), "bad.yaml:3:") || strstr(mf_last_error(), "bad.yaml:4:"), "%s", mf_last_error());
    CHECK(mf_cfg_parse_string("a: 1\n  b: 2\n", "bad2.yaml") == NULL);
    CHECK_ERR_CONTAINS("bad2.yaml:2:4: mapping values are not allowed in this context");

    CHECK(mf_cfg_parse_string("train:\n  lr: 1\n  wd: 0\n  lr: 2\n", "dup.yaml") == NULL);
    CHECK_ERR_CONTAINS("dup.yaml:4:3: duplicate key 'lr' (first set at line 2)");

    CHECK(mf_cfg_parse_string("", "empty.yaml") == NULL);
    CHECK_ERR_CONTAINS("empty.yaml: empty document");
    CHECK(mf_cfg_parse_string("# only a comment\n", "empty.yaml") == NULL);
    CHECK_ERR_CONTAINS("empty.yaml: empty document");
    CHECK(mf_cfg_parse_string("a: 1\n---\nb: 2\n", "multi.yaml") == NULL);
    CHECK_ERR_CONTAINS("multi.yaml:2:1: only one YAML document");
    CHECK(mf_cfg_parse_string("a: &x [1, *x]\n", "rec.yaml") == NULL);
    CHECK_ERR_CONTAINS("rec.yaml:1:11: alias *x");
    CHECK(mf_cfg_parse_string("[1, 2]: 3\n", "ck.yaml") == NULL);
    CHECK_ERR_CONTAINS("ck.yaml:1:1: mapping keys must be");

    char *p = tmp_path("syntax.yaml");
    write_file("syntax.yaml", "a: 1\nb: \"unterminated\n");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS(p);
    CHECK_ERR_CONTAINS("found unexpected end of stream");
    free(p);
    p = tmp_path("emptyfile.yaml");
    write_file("emptyfile.yaml", "");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("emptyfile.yaml: empty document");
    free(p);
    p = tmp_path("list.yaml");
    write_file("list.yaml", "- 1\n- 2\n");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("list.yaml:1:1: the top level must be a mapping");
    free(p);
    CHECK(mf_cfg_load_file("/nonexistent/dir/x.yaml") == NULL);
    CHECK_ERR_CONTAINS("/nonexistent/dir/x.yaml: cannot open");
}

static void test_compose(void) {
    write_file("base.yaml", "seed: 1\n"
                            "model:\n"
                            "  width: 64\n"
                            "  mult: [1, 2, 2]\n"
                            "train:\n"
                            "  steps: 100\n"
                            "  lr: 0.001\n");
    write_file("big.yaml", "defaults: base.yaml\n"
                           "model:\n"
                           "  width: 128\n"
                           "  depth: 4\n");
    char *sub = tmp_path("sub");
    CHECK(mkdir(sub, 0700) == 0);
    free(sub);
    write_file("sub/exp.yaml", "defaults:\n"
                               "  - ../big.yaml\n"
                               "  - opt.yaml\n"
                               "train:\n"
                               "  steps: 500\n"
                               "model:\n"
                               "  mult: [1, 2]\n");
    write_file("sub/opt.yaml", "train:\n  lr: 0.01\n  warmup: 10\n");
    char *p = tmp_path("sub/exp.yaml");
    mf_node *r = mf_cfg_load_file(p);
    CHECK_MSG(r != NULL, "%s", mf_last_error());
    if (r) {
        char w[1024];
        CHECK(mf_cfg_find(r, "defaults") == NULL && mf_cfg_find(r, "include") == NULL);
        CHECK(!strcmp(mf_cfg_find(r, "seed")->value, "1"));
        CHECK(strstr(mf_cfg_find(r, "seed")->origin, "base.yaml") != NULL);
        CHECK(!strcmp(mf_cfg_find(r, "model.width")->value, "128"));
        mf_node_where(mf_cfg_find(r, "model.width"), w, sizeof w);
        CHECK_MSG(strstr(w, "big.yaml:3:3") != NULL, "%s", w);
        CHECK(!strcmp(mf_cfg_find(r, "model.depth")->value, "4"));
        CHECK(mf_cfg_find(r, "model.mult")->n_children == 2); /* sequences replace */
        CHECK(strstr(mf_cfg_find(r, "model.mult")->origin, "exp.yaml") != NULL);
        CHECK(!strcmp(mf_cfg_find(r, "train.steps")->value, "500"));
        mf_node_where(mf_cfg_find(r, "train.steps"), w, sizeof w);
        CHECK_MSG(strstr(w, "sub/exp.yaml:5:3") != NULL, "%s", w);
        CHECK(!strcmp(mf_cfg_find(r, "train.lr")->value, "0.01"));
        CHECK(strstr(mf_cfg_find(r, "train.lr")->origin, "opt.yaml") != NULL);
        CHECK(!strcmp(mf_cfg_find(r, "train.warmup")->value, "10"));
        CHECK(!strcmp(r->origin, p)); /* the top map belongs to the including file */
        mf_node_free(r);
    }
    free(p);

    /* include: as a single string, relative path */
    write_file("inc.yaml", "include: base.yaml\nseed: 7\n");
    p = tmp_path("inc.yaml");
    r = mf_cfg_load_file(p);
    CHECK_MSG(r && !strcmp(mf_cfg_find(r, "seed")->value, "7") && mf_cfg_find(r, "train.steps"), "%s", mf_last_error());
    mf_node_free(r);
    free(p);

    /* cycles */
    write_file("cyc_a.yaml", "x: 1\ndefaults: [cyc_b.yaml]\n");
    write_file("cyc_b.yaml", "y: 1\ndefaults:\n  - cyc_a.yaml\n");
    p = tmp_path("cyc_a.yaml");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("include cycle:");
    CHECK_ERR_CONTAINS("cyc_a.yaml -> ");
    CHECK_ERR_CONTAINS("cyc_b.yaml -> ");
    CHECK_ERR_CONTAINS("cyc_b.yaml:3:5:");
    free(p);
    write_file("self.yaml", "defaults: self.yaml\n");
    p = tmp_path("self.yaml");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("self.yaml:1:1: include cycle:");
    free(p);

    /* missing include names the including file and line */
    write_file("miss.yaml", "a: 1\ndefaults:\n  - base.yaml\n  - nothere.yaml\n");
    p = tmp_path("miss.yaml");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("miss.yaml:4:5: cannot open included file 'nothere.yaml'");
    free(p);

    /* bad defaults value */
    write_file("baddef.yaml", "defaults: {a: 1}\n");
    p = tmp_path("baddef.yaml");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("baddef.yaml:1:1: defaults: expected a file path or a list of file paths");
    free(p);

    /* an error inside an included file names that file */
    write_file("brokeninc.yaml", "a: [1\n");
    write_file("usesbroken.yaml", "defaults: [brokeninc.yaml]\n");
    p = tmp_path("usesbroken.yaml");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("brokeninc.yaml:2:1:");
    free(p);
}

static void test_merge(void) {
    mf_node *a = parse("a: 1\nm:\n  x: 1\n  y: [1, 2, 3]\n  z: {q: 1}\nlist: [1]\n");
    mf_node *b = mf_cfg_parse_string("m:\n  y: [9]\n  z: 5\n  w: new\nlist: {k: v}\nb: 2\n", "b.yaml");
    if (!a || !b) return;
    mf_cfg_merge(a, b);
    CHECK(!strcmp(mf_cfg_find(a, "a")->value, "1"));
    CHECK(!strcmp(mf_cfg_find(a, "m.x")->value, "1") && !strcmp(mf_cfg_find(a, "m.x")->origin, "t.yaml"));
    mf_node *y = mf_cfg_find(a, "m.y");
    CHECK(y->kind == MF_NODE_SEQ && y->n_children == 1 && !strcmp(y->origin, "b.yaml") && y->line == 2);
    CHECK(!strcmp(mf_cfg_find(a, "m.z")->value, "5") && mf_cfg_find(a, "m.z.q") == NULL);
    CHECK(!strcmp(mf_cfg_find(a, "m.w")->value, "new"));
    CHECK(mf_cfg_find(a, "list")->kind == MF_NODE_MAP && !strcmp(mf_cfg_find(a, "list.k")->value, "v"));
    CHECK(!strcmp(mf_cfg_find(a, "b")->value, "2") && a->n_children == 4);
    CHECK(!strcmp(a->first->key, "a") && !strcmp(a->last->key, "b")); /* order: dst keys, then new ones */
    /* a scalar replacing a map keeps the key and place */
    mf_node *s = mf_cfg_parse_string("3", "s.yaml");
    mf_cfg_merge(mf_cfg_find(a, "m"), s);
    CHECK(mf_cfg_find(a, "m")->kind == MF_NODE_SCALAR && !strcmp(a->first->next->key, "m"));
    mf_node_free(a);
}

static bool known_cb(void *user, const char *path) {
    (*(int *)user)++;
    return !strcmp(path, "model.dropout") || !strcmp(path, "extra.deep.key");
}

static void test_overrides(void) {
    mf_node *r = parse("seed: 1\nmodel:\n  width: 64\n  channel_mult: [1, 2]\nname: run\ntrain:\n  steps: 10\n  lr: 0.1\n");
    if (!r) return;
    char w[256];
    CHECK(mf_cfg_apply_override(r, "train.steps=200", NULL, NULL) == 0);
    mf_node *n = mf_cfg_find(r, "train.steps");
    CHECK(!strcmp(n->value, "200") && !strcmp(n->origin, "override 'train.steps=200'") && n->line == 0);
    CHECK(!strcmp(mf_node_where(n, w, sizeof w), "override 'train.steps=200'"));
    CHECK(mf_cfg_apply_override(r, "model.channel_mult=[1,2,2]", NULL, NULL) == 0);
    n = mf_cfg_find(r, "model.channel_mult");
    CHECK(n->kind == MF_NODE_SEQ && n->n_children == 3 && !strcmp(n->last->value, "2"));
    CHECK(!strcmp(n->first->origin, "override 'model.channel_mult=[1,2,2]'"));
    CHECK(mf_cfg_apply_override(r, "name=\"x y\"", NULL, NULL) == 0);
    n = mf_cfg_find(r, "name");
    CHECK(n->quoted && !strcmp(n->value, "x y"));
    CHECK(mf_cfg_apply_override(r, "seed=", NULL, NULL) == 0);
    CHECK(mf_cfg_find(r, "seed")->kind == MF_NODE_NULL);
    CHECK(mf_cfg_apply_override(r, "seed=5", NULL, NULL) == 0);

    /* nonexistent key: suggestion and a hint about + */
    CHECK(mf_cfg_apply_override(r, "train.stpes=5", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("override 'train.stpes=5': no key train.stpes; did you mean train.steps?");
    CHECK_ERR_CONTAINS("+train.stpes=5");
    CHECK(mf_cfg_apply_override(r, "tarin.steps=5", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("no key tarin.steps; did you mean train?");
    CHECK(mf_cfg_apply_override(r, "zzzzzz=1", NULL, NULL) == -1);
    CHECK_MSG(strstr(mf_last_error(), "did you mean") == NULL, "%s", mf_last_error());

    /* + adds (with intermediate maps), refuses existing keys */
    CHECK(mf_cfg_apply_override(r, "+train.warmup=50", NULL, NULL) == 0);
    CHECK(!strcmp(mf_cfg_find(r, "train.warmup")->value, "50"));
    CHECK(mf_cfg_apply_override(r, "+a.b.c=1", NULL, NULL) == 0);
    n = mf_cfg_find(r, "a.b.c");
    CHECK(n && !strcmp(n->value, "1") && !strcmp(mf_cfg_find(r, "a")->origin, "override '+a.b.c=1'"));
    CHECK(mf_cfg_apply_override(r, "+e=", NULL, NULL) == 0 && mf_cfg_find(r, "e")->kind == MF_NODE_NULL);
    CHECK(mf_cfg_apply_override(r, "+e.x=1", NULL, NULL) == 0); /* a null map (`e:`) can take keys */
    CHECK(mf_cfg_find(r, "e")->kind == MF_NODE_MAP && !strcmp(mf_cfg_find(r, "e.x")->value, "1"));
    CHECK(mf_cfg_apply_override(r, "+model.width=3", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("override '+model.width=3': model.width is already set at t.yaml:3:3; use model.width=3 to change it");

    /* ~ deletes */
    CHECK(mf_cfg_apply_override(r, "~train.lr", NULL, NULL) == 0);
    CHECK(mf_cfg_find(r, "train.lr") == NULL && mf_cfg_find(r, "train.steps") != NULL);
    CHECK(mf_cfg_apply_override(r, "~train.lr", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("override '~train.lr': no key train.lr to delete");
    CHECK(mf_cfg_apply_override(r, "~model.width=65", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("model.width is not 65");
    CHECK(mf_cfg_apply_override(r, "~model.width=64", NULL, NULL) == 0);
    CHECK(mf_cfg_find(r, "model.width") == NULL);

    /* known callback lets `=` create keys the schema knows */
    int calls = 0;
    CHECK(mf_cfg_apply_override(r, "model.dropout=0.1", known_cb, &calls) == 0 && calls == 1);
    CHECK(!strcmp(mf_cfg_find(r, "model.dropout")->value, "0.1"));
    CHECK(mf_cfg_apply_override(r, "extra.deep.key={a: 1}", known_cb, &calls) == 0);
    CHECK(mf_cfg_find(r, "extra.deep.key.a") != NULL);
    CHECK(mf_cfg_apply_override(r, "model.dropuot=0.1", known_cb, &calls) == -1);
    CHECK_ERR_CONTAINS("did you mean model.dropout?");

    /* setting below a scalar, bad syntax, bad values */
    CHECK(mf_cfg_apply_override(r, "seed.x=1", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("override 'seed.x=1': seed is not a mapping");
    CHECK(mf_cfg_apply_override(r, "+seed.x=1", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("seed is not a mapping");
    CHECK(mf_cfg_apply_override(r, "train.steps", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("expected key=value");
    CHECK(mf_cfg_apply_override(r, "train..steps=1", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("bad key path 'train..steps'");
    CHECK(mf_cfg_apply_override(r, "=1", NULL, NULL) == -1);
    CHECK(mf_cfg_apply_override(r, "train.steps=[1,", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("override 'train.steps=[1,': cannot parse the value");
    mf_node_free(r);
}

static void test_conversions(void) {
    mf_node *r = mf_cfg_parse_string("train:\n  steps: abc\n  big: 99999999999999999999\n  ok: -42\n  hex: 0x10\n"
                                     "  lr: 1e-4\n  lr2: 2.0e-4\n  half: .5\n  inf: .inf\n  nan: .nan\n  huge: 1e999\n"
                                     "  badf: 1.5x\n  q: \"12\"\n  b1: Yes\n  b2: off\n  b3: maybe\n  b4: 'true'\n"
                                     "  list: [1]\n  nul: ~\n",
                                     "experiments/x.yaml");
    CHECK_MSG(r != NULL, "%s", mf_last_error());
    if (!r) return;
    long long v = 0;
    double d = 0;
    bool b = false;
    const char *s = NULL;
    CHECK(mf_node_as_int(mf_cfg_find(r, "train.steps"), &v) == -1);
    CHECK_ERR_CONTAINS("experiments/x.yaml:2:3: train.steps: expected an integer, got 'abc'");
    CHECK(mf_node_as_int(mf_cfg_find(r, "train.big"), &v) == -1);
    CHECK_ERR_CONTAINS("experiments/x.yaml:3:3: train.big: expected an integer, got '99999999999999999999' (out of range)");
    CHECK(mf_node_as_int(mf_cfg_find(r, "train.ok"), &v) == 0 && v == -42);
    CHECK(mf_node_as_int(mf_cfg_find(r, "train.hex"), &v) == 0 && v == 16);
    CHECK(mf_node_as_int(mf_cfg_find(r, "train.lr"), &v) == -1);
    CHECK(mf_node_as_int(mf_cfg_find(r, "train.q"), &v) == -1);
    CHECK_ERR_CONTAINS("train.q: expected an integer, got the quoted string \"12\"");
    CHECK(mf_node_as_int(mf_cfg_find(r, "train.list"), &v) == -1);
    CHECK_ERR_CONTAINS("train.list: expected an integer, got a list");
    CHECK(mf_node_as_int(mf_cfg_find(r, "train.nul"), &v) == -1);
    CHECK_ERR_CONTAINS("train.nul: expected an integer, got null");
    CHECK(mf_node_as_int(mf_cfg_find(r, "train"), &v) == -1);
    CHECK_ERR_CONTAINS("experiments/x.yaml:1:1: train: expected an integer, got a mapping");

    CHECK(mf_node_as_double(mf_cfg_find(r, "train.lr"), &d) == 0 && d == 1e-4);
    CHECK(mf_node_as_double(mf_cfg_find(r, "train.lr2"), &d) == 0 && d == 2e-4);
    CHECK(mf_node_as_double(mf_cfg_find(r, "train.half"), &d) == 0 && d == 0.5);
    CHECK(mf_node_as_double(mf_cfg_find(r, "train.ok"), &d) == 0 && d == -42.0);
    CHECK(mf_node_as_double(mf_cfg_find(r, "train.inf"), &d) == -1);
    CHECK_ERR_CONTAINS("experiments/x.yaml:9:3: train.inf: expected a number, got '.inf' (infinity and NaN");
    CHECK(mf_node_as_double(mf_cfg_find(r, "train.nan"), &d) == -1);
    CHECK_ERR_CONTAINS("train.nan: expected a number");
    CHECK(mf_node_as_double(mf_cfg_find(r, "train.huge"), &d) == -1);
    CHECK_ERR_CONTAINS("train.huge: expected a number, got '1e999' (out of range)");
    CHECK(mf_node_as_double(mf_cfg_find(r, "train.badf"), &d) == -1);
    CHECK_ERR_CONTAINS("experiments/x.yaml:12:3: train.badf: expected a number, got '1.5x'");
    CHECK(mf_node_as_double(mf_cfg_find(r, "train.q"), &d) == -1);

    CHECK(mf_node_as_bool(mf_cfg_find(r, "train.b1"), &b) == 0 && b);
    CHECK(mf_node_as_bool(mf_cfg_find(r, "train.b2"), &b) == 0 && !b);
    CHECK(mf_node_as_bool(mf_cfg_find(r, "train.b3"), &b) == -1);
    CHECK_ERR_CONTAINS("experiments/x.yaml:16:3: train.b3: expected true or false");
    CHECK_ERR_CONTAINS("got 'maybe'");
    CHECK(mf_node_as_bool(mf_cfg_find(r, "train.b4"), &b) == -1);
    CHECK_ERR_CONTAINS("train.b4: expected true or false");

    CHECK(mf_node_as_string(mf_cfg_find(r, "train.q"), &s) == 0 && !strcmp(s, "12"));
    CHECK(mf_node_as_string(mf_cfg_find(r, "train.ok"), &s) == 0 && !strcmp(s, "-42"));
    CHECK(mf_node_as_string(mf_cfg_find(r, "train.nul"), &s) == 0 && s == NULL);
    CHECK(mf_node_as_string(mf_cfg_find(r, "train.list"), &s) == -1);
    CHECK_ERR_CONTAINS("train.list: expected a string, got a list");

    /* list elements are named by index; overrides name themselves as the origin */
    mf_node *l = mf_cfg_parse_string("a: [1, x]\n", "l.yaml");
    CHECK(mf_node_as_int(mf_cfg_find(l, "a[1]"), &v) == -1);
    CHECK_ERR_CONTAINS("l.yaml:1:8: a[1]: expected an integer, got 'x'");
    CHECK(mf_cfg_apply_override(l, "a=zz", NULL, NULL) == 0);
    CHECK(mf_node_as_int(mf_cfg_find(l, "a"), &v) == -1);
    CHECK_ERR_CONTAINS("override 'a=zz': a: expected an integer, got 'zz'");
    mf_node_free(l);
    mf_node_free(r);
}

static const mf_key train_keys[] = {
    MF_INT("steps", "1000", 1, 1e9, "number of optimizer steps"),
    MF_INT("batch", NULL, 1, 65536, "batch size"),
    MF_FLOAT("optimizer.lr", "2.0e-4", 0, 1, "learning rate"),
    MF_FLOAT("optimizer.wd", "0", 0, 10, "weight decay"),
    MF_ENUM("schedule", "cosine", "cosine|constant", "lr schedule"),
    MF_BOOL("ema", "true", "keep an EMA"),
    MF_STR("resume", "~", "checkpoint to resume from"),
    MF_STR("name", "run", "run name"),
    MF_INTS("channel_mult", "[1, 2, 2]", 1, 8, "channel multipliers"),
    MF_FLOATS("betas", "[0.9, 0.999]", 0, 1, "adam betas"),
    MF_STRS("tags", "[]", "tags"),
    MF_MAP("extra", "free-form"),
    MF_INT("maybe", "~", 0, 10, "optional"),
    MF_KEY_END,
};

/* Validate `text` (the train section of a file named exp.yaml); returns the root or NULL. */
static mf_node *validate_text(const char *text, int expect_rc) {
    mf_node *r = mf_cfg_parse_string(text, "exp.yaml");
    CHECK_MSG(r != NULL, "%s", mf_last_error());
    if (!r) return NULL;
    int rc = mf_cfg_validate(mf_cfg_find(r, "train"), "train", train_keys);
    CHECK_MSG(rc == expect_rc, "rc %d, error: %s", rc, mf_last_error());
    return r;
}

static void test_validate(void) {
    mf_node *r = validate_text("train:\n  batch: 32\n  optimizer:\n    lr: 0.001\n  extra:\n    anything: [1, 2]\n"
                               "  tags: [a, b]\n  name: \"007\"\n",
                               0);
    if (r) {
        const mf_node *t = mf_cfg_find(r, "train");
        CHECK(mf_cfg_int(t, "batch") == 32 && mf_cfg_int(t, "steps") == 1000);
        CHECK(mf_cfg_float(t, "optimizer.lr") == 0.001 && mf_cfg_float(t, "optimizer.wd") == 0.0);
        CHECK(!strcmp(mf_cfg_str(t, "schedule"), "cosine") && mf_cfg_bool(t, "ema"));
        CHECK(mf_cfg_str(t, "resume") == NULL && !strcmp(mf_cfg_str(t, "name"), "007"));
        long long m[8];
        double be[2];
        CHECK(mf_cfg_ints(t, "channel_mult", m, 8) == 3 && m[0] == 1 && m[2] == 2);
        CHECK(mf_cfg_ints(t, "channel_mult", m, 1) == 3);
        CHECK(mf_cfg_floats(t, "betas", be, 2) == 2 && be[1] == 0.999);
        mf_node *st = mf_cfg_find(t, "steps");
        CHECK(!strcmp(st->origin, "<default>") && st->line == 0);
        CHECK(!strcmp(mf_cfg_find(t, "optimizer.wd")->origin, "<default>"));
        CHECK(!strcmp(mf_cfg_find(t, "optimizer.lr")->origin, "exp.yaml"));
        CHECK(mf_cfg_find(t, "maybe")->kind == MF_NODE_NULL);
        CHECK(mf_cfg_find(t, "tags")->kind == MF_NODE_SEQ && mf_cfg_find(t, "tags")->n_children == 2);
        CHECK(mf_cfg_find(t, "extra.anything") != NULL);
        /* validating again is a no-op */
        CHECK(mf_cfg_validate(mf_cfg_find(r, "train"), "train", train_keys) == 0);
        mf_node_free(r);
    }
    /* unknown keys with suggestions, at the top level and nested */
    r = validate_text("train:\n  batch: 32\n  stpes: 10\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:3: train.stpes: unknown key; did you mean train.steps?");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  optimizer:\n    lrr: 1\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:4:5: train.optimizer.lrr: unknown key; did you mean train.optimizer.lr?");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  completely_different: 1\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:3: train.completely_different: unknown key");
    CHECK_MSG(strstr(mf_last_error(), "did you mean") == NULL, "%s", mf_last_error());
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  optimizer: adam\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:3: train.optimizer: expected a mapping, got 'adam'");
    mf_node_free(r);
    /* wrong types and ranges */
    r = validate_text("train:\n  batch: 32\n  steps: abc\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:3: train.steps: expected an integer in [1, 1e9], got 'abc'");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  steps: 0\n", -1);
    CHECK_ERR_CONTAINS("train.steps: expected an integer in [1, 1e9], got '0' (out of range)");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  steps: 99999999999999999999\n", -1);
    CHECK_ERR_CONTAINS("train.steps: expected an integer in [1, 1e9], got '99999999999999999999' (out of range)");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  optimizer: {lr: 1.5}\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:15: train.optimizer.lr: expected a number in [0, 1], got '1.5' (out of range)");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  optimizer: {lr: .inf}\n", -1);
    CHECK_ERR_CONTAINS("train.optimizer.lr: expected a number in [0, 1], got '.inf'");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  optimizer: {wd: 1}\n", 0); /* ints are fine for floats */
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  ema: maybe\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:3: train.ema: expected true or false, got 'maybe'");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  name: [a]\n", -1);
    CHECK_ERR_CONTAINS("train.name: expected a string, got a list");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  schedule: cosin\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:3: train.schedule: expected one of cosine|constant, got 'cosin' (did you mean cosine?)");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  schedule: linear\n", -1);
    CHECK_ERR_CONTAINS("expected one of cosine|constant, got 'linear'");
    CHECK_MSG(strstr(mf_last_error(), "did you mean") == NULL, "%s", mf_last_error());
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  schedule: \"constant\"\n", 0);
    mf_node_free(r);
    /* lists: element type and range, and the list itself */
    r = validate_text("train:\n  batch: 32\n  channel_mult: [1, 2, x]\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:24: train.channel_mult[2]: expected a list of integers in [1, 8], got 'x'");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  channel_mult:\n    - 1\n    - 9\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:5:7: train.channel_mult[1]: expected a list of integers in [1, 8], got '9' (out of range)");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  channel_mult: 3\n", -1);
    CHECK_ERR_CONTAINS("train.channel_mult: expected a list of integers in [1, 8], got '3'");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  betas: [0.9, 2]\n", -1);
    CHECK_ERR_CONTAINS("train.betas[1]: expected a list of numbers in [0, 1], got '2' (out of range)");
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  tags: [a, {b: 1}]\n", -1);
    CHECK_ERR_CONTAINS("train.tags[1]: expected a list of strings, got a mapping");
    mf_node_free(r);
    /* null: fine for strings and for keys whose default is ~, an error otherwise */
    r = validate_text("train:\n  batch: 32\n  name: ~\n  maybe: ~\n", 0);
    if (r) CHECK(mf_cfg_str(mf_cfg_find(r, "train"), "name") == NULL);
    mf_node_free(r);
    r = validate_text("train:\n  batch: 32\n  steps:\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml:3:3: train.steps: expected an integer in [1, 1e9], got null");
    mf_node_free(r);
    /* required keys */
    r = validate_text("train:\n  steps: 5\n", -1);
    CHECK_ERR_CONTAINS("exp.yaml: train.batch: required key missing");
    mf_node_free(r);
    /* MF_T_MAP is free-form but must be a mapping */
    r = validate_text("train:\n  batch: 1\n  extra: {a: {b: [1, {c: 2}]}, zz: 1}\n", 0);
    mf_node_free(r);
    r = validate_text("train:\n  batch: 1\n  extra: 5\n", -1);
    CHECK_ERR_CONTAINS("train.extra: expected a mapping, got '5'");
    mf_node_free(r);
    /* an empty section (null) gets all defaults; a non-map section is an error */
    r = mf_cfg_parse_string("train:\n", "e.yaml");
    static const mf_key opt_keys[] = {MF_INT("steps", "5", 1, 10, "s"), MF_KEY_END};
    CHECK(r && mf_cfg_validate(mf_cfg_find(r, "train"), "train", opt_keys) == 0);
    CHECK(r && mf_cfg_int(mf_cfg_find(r, "train"), "steps") == 5);
    mf_node_free(r);
    r = mf_cfg_parse_string("train: 3\n", "e.yaml");
    CHECK(r && mf_cfg_validate(mf_cfg_find(r, "train"), "train", opt_keys) == -1);
    CHECK_ERR_CONTAINS("e.yaml:1:1: train: expected a mapping, got '3'");
    mf_node_free(r);
    /* a broken schema default is reported */
    static const mf_key bad_keys[] = {MF_INT("steps", "abc", 1, 10, "s"), MF_KEY_END};
    r = mf_cfg_parse_string("train: {}\n", "e.yaml");
    CHECK(r && mf_cfg_validate(mf_cfg_find(r, "train"), "train", bad_keys) == -1);
    CHECK_ERR_CONTAINS("schema default of train.steps is invalid");
    mf_node_free(r);
    /* overrides on validated trees: a schema-known key can be set through the known callback */
    r = validate_text("train:\n  batch: 32\n  steps: 7\n", 0);
    if (r) {
        CHECK(mf_cfg_apply_override(r, "train.steps=12", NULL, NULL) == 0);
        CHECK(mf_cfg_validate(mf_cfg_find(r, "train"), "train", train_keys) == 0);
        CHECK(mf_cfg_int(mf_cfg_find(r, "train"), "steps") == 12);
        CHECK(mf_cfg_apply_override(r, "train.steps=0", NULL, NULL) == 0);
        CHECK(mf_cfg_validate(mf_cfg_find(r, "train"), "train", train_keys) == -1);
        CHECK_ERR_CONTAINS("override 'train.steps=0': train.steps: expected an integer in [1, 1e9], got '0'");
    }
    mf_node_free(r);
}

static mf_node *dump_and_parse(const mf_node *r, char **text) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(mf_cfg_dump_yaml(r, f) == 0);
    fclose(f);
    mf_node *back = mf_cfg_parse_string(buf, "dump.yaml");
    CHECK_MSG(back != NULL, "re-parse failed: %s\n%s", mf_last_error(), buf);
    *text = buf;
    return back;
}

static void test_dump(void) {
    const char *src = "name: mnist\n"
                      "num: \"123\"\n"
                      "t: 'true'\n"
                      "nul: \"~\"\n"
                      "empty: ''\n"
                      "colon: \"a: b\"\n"
                      "hash: \"x #y\"\n"
                      "lead: \"- x\"\n"
                      "star: '*x'\n"
                      "multi: |\n  a\n  \"b\"\\\n"
                      "realnull: ~\n"
                      "int: 42\n"
                      "f: 2.0e-4\n"
                      "b: yes\n"
                      "url: http://x/y\n"
                      "mult: [1, 2, 2]\n"
                      "mixed: [a, \"1\", ~, 'x,y']\n"
                      "commas:\n  - a,b\n  - c\n"
                      "emptylist: []\n"
                      "emptymap: {}\n"
                      "nested:\n  deep:\n    deeper: {x: 1}\n  list:\n    - {k: v, k2: [1, 2]}\n    - - 1\n      - [2]\n"
                      "    - plain\n    - {}\n"
                      "\"key: with colon\": 1\n"
                      "\"\": empty key\n";
    mf_node *r = parse(src);
    if (!r) return;
    char *text = NULL;
    mf_node *back = dump_and_parse(r, &text);
    CHECK_MSG(back && tree_equal(r, back), "round trip differs:\n%s", text);
    CHECK(strstr(text, "mult: [1, 2, 2]\n") != NULL);
    CHECK(strstr(text, "num: \"123\"\n") != NULL);
    CHECK(strstr(text, "name: mnist\n") != NULL);
    CHECK(strstr(text, "realnull: ~\n") != NULL);
    CHECK(strstr(text, "nested:\n  deep:\n    deeper:\n      x: 1\n") != NULL);
    /* dumping the dump gives the same text */
    char *text2 = NULL;
    mf_node *back2 = back ? dump_and_parse(back, &text2) : NULL;
    CHECK(text2 && !strcmp(text, text2));
    free(text);
    free(text2);
    mf_node_free(back);
    mf_node_free(back2);

    /* programmatic scalars that are not plain-safe get quoted */
    mf_cfg_apply_override(r, "name=x", NULL, NULL);
    mf_node *nm = mf_cfg_find(r, "name");
    free(nm->value);
    nm->value = mf_xstrdup("a: b # c");
    back = dump_and_parse(r, &text);
    CHECK(back && !strcmp(mf_cfg_find(back, "name")->value, "a: b # c"));
    free(text);
    mf_node_free(back);
    mf_node_free(r);

    /* scalar and sequence roots */
    r = parse("- a\n- {b: 1}\n- [1, x]\n");
    back = r ? dump_and_parse(r, &text) : NULL;
    CHECK_MSG(back && tree_equal(r, back), "%s", text);
    free(text);
    mf_node_free(back);
    mf_node_free(r);
    r = parse("\"hello\"\n");
    back = r ? dump_and_parse(r, &text) : NULL;
    CHECK_MSG(back && tree_equal(r, back), "%s", text);
    free(text);
    mf_node_free(back);
    mf_node_free(r);
}

static void test_suggest(void) {
    const char *const c[] = {"steps", "batch", "optimizer", "schedule", NULL, "lr"};
    CHECK(!strcmp(mf_suggest("stpes", c, 6), "steps"));
    CHECK(!strcmp(mf_suggest("step", c, 6), "steps"));
    CHECK(!strcmp(mf_suggest("optimzer", c, 6), "optimizer"));
    CHECK(!strcmp(mf_suggest("shcedul", c, 6), "schedule"));
    CHECK(!strcmp(mf_suggest("lr", c, 6), "lr"));
    CHECK(!strcmp(mf_suggest("l", c, 6), "lr"));
    CHECK(mf_suggest("zzzzzz", c, 6) == NULL);
    CHECK(mf_suggest("ab", c, 6) == NULL);
    CHECK(mf_suggest("steps", c, 0) == NULL);
    CHECK(mf_suggest("xyzxyzxyzxyzxyz", c, 6) == NULL);
}

/* ---- inputs stay bounded (issue 9) ------------------------------------------------------------- */

/* A YAML text of n top-level keys "k0: 0" ... with an optional prefix line and suffix lines. */
static char *many_keys(const char *head, const char *fmt, int n, const char *tail) {
    size_t cap = strlen(head) + strlen(tail) + (size_t)n * 48 + 1, len = 0;
    char *t = mf_xmalloc(cap);
    len += (size_t)snprintf(t + len, cap - len, "%s", head);
    for (int i = 0; i < n; i++) len += (size_t)snprintf(t + len, cap - len, fmt, i, i);
    snprintf(t + len, cap - len, "%s", tail);
    return t;
}

/* Key checking, duplicate detection, merging, aliases and validation are linear: 80k keys are
 * handled at once (quadratic versions took 26 s, 80 s for the aliases; ctest's timeout is the bound). */
static void test_many_keys(void) {
    enum { N = 80000 };
    static const mf_key keys[] = {MF_INT("steps", "10", 1, 1e9, "steps"), MF_KEY_END};
    char *t = many_keys("", "zz%d: %d\n", N, "");
    mf_node *r = mf_cfg_parse_string(t, "many.yaml");
    CHECK_MSG(r && r->n_children == N, "%s", mf_last_error());
    if (r) {
        CHECK(mf_cfg_validate(r, "train", keys) == -1);
        CHECK_ERR_CONTAINS("many.yaml:1:1: train.zz0: unknown key");
        mf_node_free(r);
    }
    free(t);
    /* the first unknown key is reported even after 80k known ones, with its suggestion */
    t = many_keys("", "s%d: %d\n", N, "stpes: 3\n");
    mf_key *big = mf_xcalloc(N + 2, sizeof *big);
    char **names = mf_xcalloc(N, sizeof *names);
    for (int i = 0; i < N; i++) {
        names[i] = mf_xasprintf("s%d", i);
        big[i] = (mf_key)MF_INT(names[i], "0", 0, 1e9, "x");
    }
    big[N] = (mf_key)MF_INT("steps", "10", 1, 1e9, "steps");
    big[N + 1] = (mf_key)MF_KEY_END;
    r = mf_cfg_parse_string(t, "many.yaml");
    CHECK(r != NULL);
    if (r) {
        CHECK(mf_cfg_validate(r, "", big) == -1);
        CHECK_ERR_CONTAINS("many.yaml:80001:1: stpes: unknown key; did you mean steps?");
        mf_node_free(r);
    }
    free(t);
    t = many_keys("", "s%d: %d\n", N, "");
    r = mf_cfg_parse_string(t, "many.yaml");
    CHECK(r && mf_cfg_validate(r, "", big) == 0 && r->n_children == N + 1);
    if (r) CHECK(!strcmp(mf_cfg_find(r, "steps")->value, "10") && !strcmp(mf_cfg_find(r, "s79999")->value, "79999"));
    mf_node_free(r);
    free(t);
    for (int i = 0; i < N; i++) free(names[i]);
    free(names);
    free(big);
    /* a duplicate at the end of 80k keys */
    t = many_keys("", "zz%d: %d\n", N, "zz0: again\n");
    CHECK(mf_cfg_parse_string(t, "dup.yaml") == NULL);
    CHECK_ERR_CONTAINS("dup.yaml:80001:1: duplicate key 'zz0' (first set at line 1)");
    free(t);
    /* 80k anchors, then 80k aliases */
    char *a = many_keys("", "a%d: &x%d v\n", N, ""), *b = many_keys(a, "b%d: *x%d\n", N, "");
    r = mf_cfg_parse_string(b, "alias.yaml");
    CHECK_MSG(r && r->n_children == 2 * N && !strcmp(mf_cfg_find(r, "b79999")->value, "v"), "%s", mf_last_error());
    mf_node_free(r);
    free(a);
    free(b);
    /* merging two maps of 80k keys (half of them shared), and comparing them in an override */
    a = many_keys("", "k%d: %d\n", N, "");
    b = mf_xmalloc((size_t)N * 24);
    for (size_t i = 0, bl = 0; i < N; i++) /* every other key of b is new: j1, j3, ... */
        bl += (size_t)sprintf(b + bl, "%c%zu: x%zu\n", i % 2 ? 'j' : 'k', i, i);
    mf_node *ra = mf_cfg_parse_string(a, "a.yaml"), *rb = mf_cfg_parse_string(b, "b.yaml");
    CHECK(ra && rb);
    if (ra && rb) {
        mf_cfg_merge(ra, rb);
        CHECK(ra->n_children == N + N / 2);
        CHECK(!strcmp(mf_cfg_find(ra, "k0")->value, "x0") && !strcmp(mf_cfg_find(ra, "k1")->value, "1"));
        CHECK(!strcmp(mf_cfg_find(ra, "j79999")->value, "x79999") && ra->last == mf_cfg_find(ra, "j79999"));
    }
    mf_node_free(ra);
    /* `~m={...}` compares an 80k-key map with the one in the tree (written in the reverse order) */
    char *in = many_keys("m:\n", "  k%d: %d\n", N, ""), *ov = mf_xstrdup("~m={"), *tail;
    size_t ol = strlen(ov);
    ov = mf_xrealloc(ov, ol + (size_t)N * 24 + 2);
    for (int i = N - 1; i >= 0; i--) ol += (size_t)sprintf(ov + ol, "k%d: %d%s", i, i, i ? ", " : "}");
    mf_node *root = mf_cfg_parse_string(in, "m.yaml");
    CHECK(root != NULL);
    if (root) {
        tail = strstr(ov, "k0: 0}");
        tail[4] = '1'; /* one value differs: not deleted */
        CHECK(mf_cfg_apply_override(root, ov, NULL, NULL) == -1 && mf_cfg_find(root, "m.k79999"));
        tail[4] = '0';
        CHECK_MSG(mf_cfg_apply_override(root, ov, NULL, NULL) == 0 && !mf_cfg_find(root, "m"), "%s", mf_last_error());
    }
    mf_node_free(root);
    free(in);
    free(ov);
    free(a);
    free(b);
}

/* A NUL byte cannot hide in a key or a value (it would cut every C string that carries it). */
static void test_nul_bytes(void) {
    CHECK(mf_cfg_parse_string("seed: 1\nname: \"yb\\0ase\"\n", "nul.yaml") == NULL);
    CHECK_ERR_CONTAINS("nul.yaml:2:7: a NUL byte (\\0) in a value is not allowed (at byte 3 of 'yb...')");
    CHECK(mf_cfg_parse_string("train:\n  \"se\\0ed\": 1\n", "nul.yaml") == NULL);
    CHECK_ERR_CONTAINS("nul.yaml:2:3: a NUL byte (\\0) in a key is not allowed");
    CHECK(mf_cfg_parse_string("a: [1, \"\\x00\"]\n", "nul.yaml") == NULL);
    CHECK_ERR_CONTAINS("nul.yaml:1:8: a NUL byte");
    /* a raw NUL byte in the file is refused by the YAML reader, with its byte offset */
    static const char raw[] = "a: x\0y\n";
    char *p = tmp_path("rawnul.yaml");
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite(raw, 1, sizeof raw - 1, f) == sizeof raw - 1);
    if (f) fclose(f);
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS(p);
    CHECK_ERR_CONTAINS("byte 4");
    unlink(p);
    free(p);
    /* overrides: values are YAML, so "\0" escapes reach the parser */
    mf_node *r = parse("name: x\n");
    CHECK(mf_cfg_apply_override(r, "name=\"a\\0b\"", NULL, NULL) == -1);
    CHECK_ERR_CONTAINS("override 'name=\"a\\0b\"': cannot parse the value: <value>:1:1: a NUL byte");
    CHECK(!strcmp(mf_cfg_find(r, "name")->value, "x"));
    mf_node_free(r);
}

/* Experiment files and the files they include: regular files only, size-limited. */
static void test_file_limits(void) {
    char *p = tmp_path("zero.yaml"), *d = tmp_path("adir"), *fifo = tmp_path("fifo.yaml"), *big = tmp_path("big16.yaml");
    write_file("zero.yaml", "seed: 1\ndefaults: [/dev/zero]\n");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("zero.yaml:2:12: cannot open included file '/dev/zero' (/dev/zero): is not a regular file");
    CHECK(mf_cfg_load_file("/dev/zero") == NULL);
    CHECK_ERR_CONTAINS("/dev/zero: cannot open: is not a regular file");
    CHECK(mkdir(d, 0700) == 0);
    write_file("usedir.yaml", "defaults: [adir]\n");
    free(p);
    p = tmp_path("usedir.yaml");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("usedir.yaml:1:12: cannot open included file 'adir'");
    CHECK_ERR_CONTAINS("adir): is a directory");
    CHECK(mf_cfg_load_file(d) == NULL);
    CHECK_ERR_CONTAINS("adir: cannot open: is a directory");
    CHECK(mkfifo(fifo, 0600) == 0); /* nobody writes to it: opening must not block */
    CHECK(mf_cfg_load_file(fifo) == NULL);
    CHECK_ERR_CONTAINS("fifo.yaml: cannot open: is not a regular file");
    /* one byte over the per-file limit (a sparse file: nothing big is written) */
    FILE *f = fopen(big, "w");
    CHECK(f && ftruncate(fileno(f), (off_t)MF_CFG_MAX_FILE_BYTES + 1) == 0);
    if (f) fclose(f);
    CHECK(mf_cfg_load_file(big) == NULL);
    CHECK_ERR_CONTAINS("big16.yaml: cannot open: is larger than 16777216 bytes, the limit for experiment files");
    write_file("usebig.yaml", "defaults:\n  - big16.yaml\n");
    free(p);
    p = tmp_path("usebig.yaml");
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("usebig.yaml:2:5: cannot open included file 'big16.yaml'");
    CHECK_ERR_CONTAINS("is larger than 16777216 bytes");
    /* the whole composition is bounded too: a 4 MiB file included 17 times */
    f = fopen(big, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("a: 1\n#", f);
        for (int i = 0; i < (4 << 20) - 8; i++) fputc('x', f);
        fputc('\n', f);
        fclose(f);
    }
    char *t = many_keys("defaults:\n", "  - big16.yaml # %d %d\n", 17, "");
    write_file("usebig.yaml", t);
    free(t);
    CHECK(mf_cfg_load_file(p) == NULL);
    CHECK_ERR_CONTAINS("big16.yaml: the composed experiment");
    CHECK_ERR_CONTAINS("larger than 67108864 bytes");
    t = many_keys("defaults:\n", "  - big16.yaml # %d %d\n", 3, "");
    write_file("usebig.yaml", t);
    free(t);
    mf_node *r = mf_cfg_load_file(p);
    CHECK_MSG(r && !strcmp(mf_cfg_find(r, "a")->value, "1"), "%s", mf_last_error());
    mf_node_free(r);
    unlink(big);
    unlink(fifo);
    rmdir(d);
    free(p);
    free(d);
    free(fifo);
    free(big);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", mf_test_tmpdir());
    test_parse();
    test_parse_errors();
    test_compose();
    test_merge();
    test_overrides();
    test_conversions();
    test_validate();
    test_dump();
    test_suggest();
    test_many_keys();
    test_nul_bytes();
    test_file_limits();
    for (int i = g_nfiles - 1; i >= 0; i--) {
        unlink(g_files[i]);
        free(g_files[i]);
    }
    char *sub = tmp_path("sub");
    rmdir(sub);
    free(sub);
    CHECK_MSG(rmdir(g_dir) == 0, "could not remove %s", g_dir);
    return mf_test_summary("test_config");
}
