/* The order book's hot parts in C: one book side, and a parser for Binance's
 * level lists. The pure-Python ``ccf.sources.binance.book.BookSide`` has the
 * same design and API; it stays the fallback and the reference the tests hold
 * this one to.
 *
 * BookSide: every level lives in an open-addressing hash table (key = sign *
 * price -> quantity) and, beside it, a sorted array of only the best ``keep``
 * keys ("near" levels: every key <= ``bound``). Most level changes on Binance
 * are far from the touch: they cost one hash operation. When deletions thin
 * the near array below the depth asked for, it is rebuilt from the table with
 * a quickselect (rare: ~50 times per 6,500 updates).
 *
 * Levels: ``parse_levels(b'[["61737.63000000","0.00000000"],...]')`` reads a
 * JSON list of [price, qty] pairs (strings or numbers) into a flat array of
 * doubles, without a Python object per value. Each value is the correctly
 * rounded double of its decimal text, as ``float()`` gives: the mantissa of a
 * Binance decimal (13-16 digits) is exact in a double and so is 10**k for
 * k <= 22, so one IEEE division rounds correctly (Clinger's fast path); other
 * numbers go through ``PyOS_string_to_double``, Python's own ``float()``.
 * Anything but plain finite non-negative JSON numbers, with every price > 0,
 * is a ValueError (the rules of ``schemas.Level``, which msgspec checks on the
 * general path), which sends the frame back to the general msgspec decoder:
 * it refuses the same values, and the frame becomes a dead letter.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* -- Levels: parsed [price, qty] pairs -------------------------------------------------- */

typedef struct {
    PyObject_VAR_HEAD
    double v[1]; /* price_0, qty_0, price_1, qty_1, ... (ob_size pairs) */
} Levels;

static PyTypeObject LevelsType;

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int
parse_error(const char *what, Py_ssize_t at)
{
    PyErr_Format(PyExc_ValueError, "levels: %s at byte %zd", what, at);
    return -1;
}

static inline const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static inline int
is_digit(char c)
{
    return (unsigned char)(c - '0') < 10;
}

/* One non-negative JSON number, bare or inside a JSON string, at *pp; finite, and
 * > 0 when ``price``. The caller guarantees the text ends with ']', so no scan
 * below runs past the end: every loop stops at a character that is not ']' or at
 * that ']' itself. */
static int
parse_number(const char **pp, const char *start, double *out, int price)
{
    const char *p = *pp;
    int quoted = *p == '"';
    p += quoted;
    const char *tok = p;
    uint64_t m = 0; /* every digit, the point ignored; exact while ndigits <= 19 */
    if (*p == '0')
        p++; /* a leading 0 stands alone: "01" is not JSON */
    else if (is_digit(*p))
        while (is_digit(*p))
            m = m * 10 + (uint64_t)(*p++ - '0');
    else
        return parse_error("expected a non-negative number", p - start);
    Py_ssize_t ndigits = p - tok;
    int frac = 0;
    if (*p == '.') {
        const char *f = ++p;
        while (is_digit(*p))
            m = m * 10 + (uint64_t)(*p++ - '0');
        frac = (int)(p - f);
        if (frac == 0)
            return parse_error("expected a digit after '.'", p - start);
        ndigits += frac;
    }
    int exp = 0;
    if (*p == 'e' || *p == 'E') {
        int sign = 1;
        p++;
        if (*p == '+' || *p == '-')
            sign = *p++ == '-' ? -1 : 1;
        const char *e = p;
        while (is_digit(*p)) {
            if (exp < 100000)
                exp = exp * 10 + (*p - '0');
            p++;
        }
        if (p == e)
            return parse_error("expected a digit in the exponent", p - start);
        exp *= sign;
    }
    const char *tok_end = p;
    if (quoted && *p++ != '"')
        return parse_error("expected '\"' after a number", p - 1 - start);
    int e10 = exp - frac; /* value = m * 10**e10 */
    if (ndigits <= 19 && m <= (1ULL << 53) && e10 >= -22 && e10 <= 22) {
        double x = (double)m; /* exact */
        *out = e10 < 0 ? x / POW10[-e10] : x * POW10[e10];
    }
    else { /* long or extreme: Python's own correctly rounded conversion */
        char buf[128];
        size_t n = (size_t)(tok_end - tok);
        if (n >= sizeof buf)
            return parse_error("number too long", tok - start);
        memcpy(buf, tok, n);
        buf[n] = '\0';
        char *stop;
        double x = PyOS_string_to_double(buf, &stop, NULL);
        if (x == -1.0 && PyErr_Occurred())
            return -1;
        if (stop != buf + n)
            return parse_error("bad number", tok - start);
        if (!isfinite(x)) /* 1e400: out of a double's range */
            return parse_error("number out of range", tok - start);
        *out = x;
    }
    if (price && *out == 0.0)
        return parse_error("a price must be > 0", tok - start);
    *pp = p;
    return 0;
}

/* A scratch array reused by every parse (the GIL serialises them). */
static double *scratch;
static Py_ssize_t scratch_cap; /* in doubles */

static int
scratch_reserve(Py_ssize_t n)
{
    if (n <= scratch_cap)
        return 0;
    Py_ssize_t cap = scratch_cap ? scratch_cap : 256;
    while (cap < n)
        cap *= 2;
    double *p = PyMem_Realloc(scratch, (size_t)cap * sizeof(double));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    scratch = p;
    scratch_cap = cap;
    return 0;
}

static PyObject *
levels_from_text(const char *start, Py_ssize_t len)
{
    const char *p = start, *end = start + len;
    Py_ssize_t n = 0; /* values parsed */
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    if (end == p || end[-1] != ']') /* parse_number relies on this ']' */
        return parse_error("expected ']' at the end", end - start), NULL;
    p = skip_ws(p, end);
    if (!(p < end && *p == '['))
        return parse_error("expected '['", p - start), NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']') {
        p++;
    }
    else {
        for (;;) {
            if (!(p < end && *p == '['))
                return parse_error("expected '[' opening a level", p - start), NULL;
            if (scratch_reserve(n + 2) < 0)
                return NULL;
            p = skip_ws(p + 1, end);
            if (parse_number(&p, start, &scratch[n], 1) < 0)
                return NULL;
            p = skip_ws(p, end);
            if (!(p < end && *p == ','))
                return parse_error("expected ',' inside a level", p - start), NULL;
            p = skip_ws(p + 1, end);
            if (parse_number(&p, start, &scratch[n + 1], 0) < 0)
                return NULL;
            p = skip_ws(p, end);
            if (!(p < end && *p == ']'))
                return parse_error("expected ']' closing a level", p - start), NULL;
            n += 2;
            p = skip_ws(p + 1, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == ']') {
                p++;
                break;
            }
            return parse_error("expected ',' or ']' after a level", p - start), NULL;
        }
    }
    if (p != end)
        return parse_error("trailing data", p - start), NULL;
    Levels *lv = PyObject_NewVar(Levels, &LevelsType, n / 2);
    if (lv == NULL)
        return NULL;
    if (n)
        memcpy(lv->v, scratch, (size_t)n * sizeof(double));
    return (PyObject *)lv;
}

static PyObject *
parse_levels(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (PyUnicode_Check(arg)) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(arg, &len);
        return s == NULL ? NULL : levels_from_text(s, len);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = levels_from_text(view.buf, view.len);
    PyBuffer_Release(&view);
    return r;
}

static Py_ssize_t
Levels_len(Levels *lv)
{
    return Py_SIZE(lv);
}

static PyObject *
Levels_item(Levels *lv, Py_ssize_t i)
{
    if (i < 0 || i >= Py_SIZE(lv)) {
        PyErr_SetString(PyExc_IndexError, "level index out of range");
        return NULL;
    }
    return Py_BuildValue("(dd)", lv->v[2 * i], lv->v[2 * i + 1]);
}

static PyObject *
Levels_repr(Levels *lv)
{
    PyObject *list = PySequence_List((PyObject *)lv);
    if (list == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("Levels(%R)", list);
    Py_DECREF(list);
    return r;
}

static PySequenceMethods Levels_as_sequence = {
    .sq_length = (lenfunc)Levels_len,
    .sq_item = (ssizeargfunc)Levels_item,
};

static PyTypeObject LevelsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ccf.sources.binance._cbook.Levels",
    .tp_basicsize = offsetof(Levels, v),
    .tp_itemsize = 2 * sizeof(double),
    .tp_repr = (reprfunc)Levels_repr,
    .tp_as_sequence = &Levels_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Parsed [price, qty] pairs (from parse_levels); a sequence of (price, qty) tuples.",
};

/* -- BookSide: hash table + near array -------------------------------------------------- */

typedef struct {
    double key;
    double qty; /* 0.0 marks an empty slot: a level with quantity 0 does not exist */
} Entry;

typedef struct {
    PyObject_HEAD
    double sign;
    Py_ssize_t keep;
    Entry *table;
    size_t mask; /* capacity - 1, capacity a power of two */
    Py_ssize_t used;
    double *near; /* sorted ascending (best first) */
    Py_ssize_t near_len;
    Py_ssize_t near_cap;
    double bound; /* every key <= bound is in near; INFINITY: near holds every key */
} BookSide;

static PyTypeObject BookSideType;
static PyObject *NAN_OBJ; /* one shared NaN float for padding */

static inline size_t
hash_key(double k)
{
    uint64_t x;
    memcpy(&x, &k, sizeof x);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (size_t)x;
}

/* Slot holding ``k``, or the empty slot where it would go; *found says which. */
static inline size_t
probe(const BookSide *s, double k, int *found)
{
    size_t i = hash_key(k) & s->mask;
    const Entry *t = s->table;
    while (t[i].qty != 0.0) {
        if (t[i].key == k) {
            *found = 1;
            return i;
        }
        i = (i + 1) & s->mask;
    }
    *found = 0;
    return i;
}

static int
table_alloc(BookSide *s, size_t capacity)
{
    Entry *t = PyMem_Calloc(capacity, sizeof(Entry));
    if (t == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->table = t;
    s->mask = capacity - 1;
    s->used = 0;
    return 0;
}

static int
table_grow(BookSide *s)
{
    Entry *old = s->table;
    size_t old_cap = s->mask + 1;
    Py_ssize_t used = s->used;
    if (table_alloc(s, old_cap * 2) < 0)
        return -1;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].qty != 0.0) {
            int found;
            s->table[probe(s, old[i].key, &found)] = old[i];
        }
    }
    s->used = used;
    PyMem_Free(old);
    return 0;
}

/* True when ``h`` lies in the cyclic range (i, j]. */
static inline int
between(size_t i, size_t h, size_t j)
{
    return i <= j ? (i < h && h <= j) : (i < h || h <= j);
}

/* Empty slot ``i`` and shift back the entries that probed past it. */
static void
table_erase(BookSide *s, size_t i)
{
    Entry *t = s->table;
    size_t j = i;
    for (;;) {
        j = (j + 1) & s->mask;
        if (t[j].qty == 0.0)
            break;
        if (!between(i, hash_key(t[j].key) & s->mask, j)) {
            t[i] = t[j];
            i = j;
        }
    }
    t[i].qty = 0.0;
    s->used--;
}

static inline Py_ssize_t
lower_bound(const double *a, Py_ssize_t n, double k)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) >> 1;
        if (a[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int
near_reserve(BookSide *s, Py_ssize_t n)
{
    if (n <= s->near_cap)
        return 0;
    Py_ssize_t cap = s->near_cap ? s->near_cap : 16;
    while (cap < n)
        cap *= 2;
    double *p = PyMem_Realloc(s->near, (size_t)cap * sizeof(double));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->near = p;
    s->near_cap = cap;
    return 0;
}

static int
near_insert(BookSide *s, double k)
{
    if (near_reserve(s, s->near_len + 1) < 0)
        return -1;
    Py_ssize_t i = lower_bound(s->near, s->near_len, k);
    memmove(s->near + i + 1, s->near + i, (size_t)(s->near_len - i) * sizeof(double));
    s->near[i] = k;
    s->near_len++;
    return 0;
}

static void
near_remove(BookSide *s, double k)
{
    Py_ssize_t i = lower_bound(s->near, s->near_len, k);
    if (i < s->near_len && s->near[i] == k) {
        memmove(s->near + i, s->near + i + 1, (size_t)(s->near_len - i - 1) * sizeof(double));
        s->near_len--;
    }
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Rearrange a[0..n) so that a[0..m) holds its m smallest values, in any order
 * (Hoare's selection, as in Wirth's "Algorithms + Data Structures"). */
static void
select_smallest(double *a, Py_ssize_t n, Py_ssize_t m)
{
    Py_ssize_t k = m - 1, lo = 0, hi = n - 1;
    while (lo < hi) {
        double x = a[k];
        Py_ssize_t i = lo, j = hi;
        do {
            while (a[i] < x)
                i++;
            while (x < a[j])
                j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < k)
            lo = i;
        if (k < i)
            hi = j;
    }
}

/* Rebuild near from the table: the best ``keep`` keys, or all of them. */
static int
refill(BookSide *s)
{
    Py_ssize_t n = s->used;
    if (near_reserve(s, n > 0 ? n : 1) < 0)
        return -1;
    Py_ssize_t w = 0;
    for (size_t i = 0; i <= s->mask; i++) {
        if (s->table[i].qty != 0.0)
            s->near[w++] = s->table[i].key;
    }
    if (n > s->keep) {
        select_smallest(s->near, n, s->keep);
        qsort(s->near, (size_t)s->keep, sizeof(double), cmp_double);
        s->near_len = s->keep;
        s->bound = s->near[s->keep - 1];
    }
    else {
        qsort(s->near, (size_t)n, sizeof(double), cmp_double);
        s->near_len = n;
        s->bound = INFINITY;
    }
    return 0;
}

/* Set one level; quantity zero removes it (``skip_zero``: ignores it, as reset does). */
static int
set_level(BookSide *s, double price, double qty, int skip_zero)
{
    if (qty == 0.0 && skip_zero)
        return 0;
    double k = s->sign * price;
    if (k == 0.0)
        k = 0.0; /* one key for -0.0 and 0.0, as in a dict */
    int found;
    size_t i = probe(s, k, &found);
    if (qty != 0.0) {
        if (found) {
            s->table[i].qty = qty;
            return 0;
        }
        if ((size_t)(s->used + 1) * 2 > s->mask + 1) {
            if (table_grow(s) < 0)
                return -1;
            i = probe(s, k, &found);
        }
        if (k <= s->bound && near_insert(s, k) < 0)
            return -1;
        s->table[i].key = k;
        s->table[i].qty = qty;
        s->used++;
    }
    else if (found) {
        table_erase(s, i);
        if (k <= s->bound)
            near_remove(s, k);
    }
    return 0;
}

static int
as_double(PyObject *o, double *v)
{
    *v = PyFloat_CheckExact(o) ? PyFloat_AS_DOUBLE(o) : PyFloat_AsDouble(o);
    return *v == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static int
set_pair(BookSide *s, PyObject *item, int skip_zero)
{
    PyObject *seq = PySequence_Fast(item, "a level must be a (price, qty) pair");
    if (seq == NULL)
        return -1;
    int rc = -1;
    double p, q;
    if (PySequence_Fast_GET_SIZE(seq) != 2)
        PyErr_SetString(PyExc_ValueError, "a level must be a (price, qty) pair");
    else if (as_double(PySequence_Fast_GET_ITEM(seq, 0), &p) == 0 &&
             as_double(PySequence_Fast_GET_ITEM(seq, 1), &q) == 0)
        rc = set_level(s, p, q, skip_zero);
    Py_DECREF(seq);
    return rc;
}

static int
set_levels(BookSide *s, PyObject *levels, int skip_zero)
{
    if (Py_IS_TYPE(levels, &LevelsType)) { /* the hot path: no objects at all */
        const Levels *lv = (const Levels *)levels;
        for (Py_ssize_t i = 0; i < Py_SIZE(lv); i++) {
            if (set_level(s, lv->v[2 * i], lv->v[2 * i + 1], skip_zero) < 0)
                return -1;
        }
        return 0;
    }
    PyObject *it = PyObject_GetIter(levels);
    if (it == NULL)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int rc = set_pair(s, item, skip_zero);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return -1;
        }
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *
BookSide_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    BookSide *s = (BookSide *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    s->sign = 1.0;
    s->keep = 100;
    s->bound = INFINITY;
    if (table_alloc(s, 64) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    return (PyObject *)s;
}

static int
BookSide_init(BookSide *s, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sign", "keep", NULL};
    double sign;
    Py_ssize_t keep = 100;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "d|n", kwlist, &sign, &keep))
        return -1;
    if (sign != 1.0 && sign != -1.0) {
        PyErr_SetString(PyExc_ValueError, "sign must be 1.0 (asks) or -1.0 (bids)");
        return -1;
    }
    if (keep < 1) {
        PyErr_SetString(PyExc_ValueError, "keep must be at least 1");
        return -1;
    }
    memset(s->table, 0, (s->mask + 1) * sizeof(Entry));
    s->used = 0;
    s->sign = sign;
    s->keep = keep;
    s->near_len = 0;
    s->bound = INFINITY;
    return 0;
}

static void
BookSide_dealloc(BookSide *s)
{
    PyMem_Free(s->table);
    PyMem_Free(s->near);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *
BookSide_reset(BookSide *s, PyObject *levels)
{
    memset(s->table, 0, (s->mask + 1) * sizeof(Entry));
    s->used = 0;
    s->near_len = 0;
    s->bound = -INFINITY; /* no level goes to near one by one: refill sorts them once */
    int rc = set_levels(s, levels, 1);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int rc2 = refill(s); /* even after an error: near must match what was set */
    if (rc < 0) {
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    return rc2 < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
BookSide_apply(BookSide *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "apply(levels, depth)");
        return NULL;
    }
    Py_ssize_t depth = PyLong_AsSsize_t(args[1]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    double bound = s->bound;
    if (set_levels(s, args[0], 0) < 0)
        return NULL;
    if (s->near_len > 2 * s->keep) {
        s->near_len = s->keep;
        s->bound = s->near[s->keep - 1];
    }
    else if (s->near_len < depth && bound != INFINITY) {
        if (refill(s) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
BookSide_best(BookSide *s, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(s->near_len ? s->sign * s->near[0] : Py_NAN);
}

/* Store the top ``depth`` levels of ``s`` as price, qty, ... into ``out`` from ``pos``. */
static int
fill_top(const BookSide *s, Py_ssize_t depth, PyObject *out, Py_ssize_t pos)
{
    Py_ssize_t n = s->near_len < depth ? s->near_len : depth;
    for (Py_ssize_t i = 0; i < n; i++) {
        int found;
        double k = s->near[i];
        PyObject *p = PyFloat_FromDouble(s->sign * k);
        if (p == NULL)
            return -1;
        PyTuple_SET_ITEM(out, pos++, p);
        PyObject *q = PyFloat_FromDouble(s->table[probe(s, k, &found)].qty);
        if (q == NULL)
            return -1;
        PyTuple_SET_ITEM(out, pos++, q);
    }
    for (Py_ssize_t i = n; i < depth; i++) {
        PyTuple_SET_ITEM(out, pos++, Py_NewRef(NAN_OBJ));
        PyTuple_SET_ITEM(out, pos++, Py_NewRef(NAN_OBJ));
    }
    return 0;
}

static Py_ssize_t
depth_arg(PyObject *o)
{
    Py_ssize_t depth = PyLong_AsSsize_t(o);
    if (depth < 0 && !PyErr_Occurred())
        depth = 0;
    return depth;
}

static PyObject *
BookSide_top(BookSide *s, PyObject *arg)
{
    Py_ssize_t depth = depth_arg(arg);
    if (depth == -1)
        return NULL;
    PyObject *t = PyTuple_New(2 * depth);
    if (t == NULL)
        return NULL;
    if (fill_top(s, depth, t, 0) < 0) {
        Py_DECREF(t); /* unset items are NULL, which tuple dealloc skips */
        return NULL;
    }
    PyObject *l = PySequence_List(t);
    Py_DECREF(t);
    return l;
}

static PyObject *
BookSide_levels(BookSide *s, PyObject *Py_UNUSED(ignored))
{
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i <= s->mask; i++) {
        const Entry *e = &s->table[i];
        if (e->qty == 0.0)
            continue;
        PyObject *p = PyFloat_FromDouble(s->sign * e->key);
        PyObject *q = PyFloat_FromDouble(e->qty);
        int rc = p && q ? PyDict_SetItem(d, p, q) : -1;
        Py_XDECREF(p);
        Py_XDECREF(q);
        if (rc < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static PyObject *
BookSide_get_near(BookSide *s, void *Py_UNUSED(closure))
{
    PyObject *l = PyList_New(s->near_len);
    if (l == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < s->near_len; i++) {
        PyObject *f = PyFloat_FromDouble(s->near[i]);
        if (f == NULL) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, i, f);
    }
    return l;
}

static PyObject *
BookSide_get_bound(BookSide *s, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(s->bound);
}

static PyObject *
BookSide_get_sign(BookSide *s, void *Py_UNUSED(closure))
{
    return PyFloat_FromDouble(s->sign);
}

static PyObject *
BookSide_get_keep(BookSide *s, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(s->keep);
}

static Py_ssize_t
BookSide_len(BookSide *s)
{
    return s->used;
}

static PyMethodDef BookSide_methods[] = {
    {"reset", (PyCFunction)BookSide_reset, METH_O, "reset(levels): replace every level."},
    {"apply", (PyCFunction)(void (*)(void))BookSide_apply, METH_FASTCALL,
     "apply(levels, depth): set each level; quantity zero removes it."},
    {"best", (PyCFunction)BookSide_best, METH_NOARGS, "Best price, NaN when empty."},
    {"top", (PyCFunction)BookSide_top, METH_O,
     "top(depth): [price_0, qty_0, ...] padded with NaN to ``depth`` levels."},
    {"levels", (PyCFunction)BookSide_levels, METH_NOARGS, "Every level as price -> quantity."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef BookSide_getset[] = {
    {"near", (getter)BookSide_get_near, NULL, "The near keys, sorted best first (a copy).", NULL},
    {"bound", (getter)BookSide_get_bound, NULL, "Every key <= bound is in near.", NULL},
    {"sign", (getter)BookSide_get_sign, NULL, "1.0 for asks, -1.0 for bids.", NULL},
    {"keep", (getter)BookSide_get_keep, NULL, "How many near keys a trim keeps.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods BookSide_as_sequence = {
    .sq_length = (lenfunc)BookSide_len,
};

static PyTypeObject BookSideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ccf.sources.binance._cbook.BookSide",
    .tp_basicsize = sizeof(BookSide),
    .tp_dealloc = (destructor)BookSide_dealloc,
    .tp_as_sequence = &BookSide_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BookSide(sign, keep=100): one side of the book; sign 1.0 asks, -1.0 bids.",
    .tp_methods = BookSide_methods,
    .tp_getset = BookSide_getset,
    .tp_init = (initproc)BookSide_init,
    .tp_new = BookSide_new,
};

/* top(asks, bids, depth) -> the flat levels tuple in records.book_columns order. */
static PyObject *
book_top(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &BookSideType) ||
        !PyObject_TypeCheck(args[1], &BookSideType)) {
        PyErr_SetString(PyExc_TypeError, "top(asks: BookSide, bids: BookSide, depth: int)");
        return NULL;
    }
    Py_ssize_t depth = depth_arg(args[2]);
    if (depth == -1)
        return NULL;
    PyObject *t = PyTuple_New(4 * depth);
    if (t == NULL)
        return NULL;
    if (fill_top((BookSide *)args[0], depth, t, 0) < 0 ||
        fill_top((BookSide *)args[1], depth, t, 2 * depth) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

static PyMethodDef module_methods[] = {
    {"top", (PyCFunction)(void (*)(void))book_top, METH_FASTCALL,
     "top(asks, bids, depth): flat (a_p_0, a_q_0, ..., b_p_0, b_q_0, ...), NaN padded."},
    {"parse_levels", (PyCFunction)parse_levels, METH_O,
     "parse_levels(json_text) -> Levels: a JSON list of [price, qty] pairs, parsed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cbook_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ccf.sources.binance._cbook",
    .m_doc = "C order book side and level parser; ccf.sources.binance.book has the reference.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__cbook(void)
{
    if (PyType_Ready(&BookSideType) < 0 || PyType_Ready(&LevelsType) < 0)
        return NULL;
    NAN_OBJ = PyFloat_FromDouble(Py_NAN);
    if (NAN_OBJ == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&cbook_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "BookSide", (PyObject *)&BookSideType) < 0 ||
        PyModule_AddObjectRef(m, "Levels", (PyObject *)&LevelsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
