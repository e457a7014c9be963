/* One side of a price-level order book, in C: the same structure and API as
 * the pure-Python ``ccf.sources.binance.book.BookSide`` (which stays the
 * reference and the fallback).
 *
 * Every level lives in an open-addressing hash table (key = sign * price ->
 * the price and quantity float objects as they came in), and beside it a
 * sorted array of only the best ``keep`` keys ("near" levels, every key <=
 * ``bound``). Most level changes on Binance are far from the touch: they cost
 * one hash operation. ``top()`` walks the near array and hands out the stored
 * float objects, so a 20-level book record allocates one tuple and no floats.
 * When deletions thin the near array below the depth asked for, it is rebuilt
 * from the table with a quickselect (rare: ~50 times per 6,500 updates).
 *
 * Keys are compared as doubles, exactly like the Python dict keys: the book
 * holds the exact floats parsed from Binance's decimal strings.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    double key;
    PyObject *price; /* NULL marks an empty slot */
    PyObject *qty;
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
    double bound; /* every key <= bound is in near; INFINITY: near holds all keys */
} BookSide;

static PyObject *NAN_OBJ; /* one shared NaN float for padding, like book.NAN */

/* -- hash table ------------------------------------------------------------------------- */

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
    while (t[i].price != NULL) {
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
    if (table_alloc(s, old_cap * 2) < 0) {
        s->table = old;
        s->mask = old_cap - 1;
        return -1;
    }
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].price != NULL) {
            int found;
            size_t j = probe(s, old[i].key, &found);
            s->table[j] = old[i];
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

/* Remove slot ``i`` (its references already released) by shifting back its followers. */
static void
table_erase(BookSide *s, size_t i)
{
    Entry *t = s->table;
    size_t j = i;
    for (;;) {
        j = (j + 1) & s->mask;
        if (t[j].price == NULL)
            break;
        size_t h = hash_key(t[j].key) & s->mask;
        if (!between(i, h, j)) {
            t[i] = t[j];
            i = j;
        }
    }
    t[i].price = NULL;
    t[i].qty = NULL;
    s->used--;
}

static void
table_clear(BookSide *s)
{
    if (s->table == NULL)
        return;
    for (size_t i = 0; i <= s->mask; i++) {
        if (s->table[i].price != NULL) {
            Py_CLEAR(s->table[i].price);
            Py_CLEAR(s->table[i].qty);
        }
    }
    s->used = 0;
}

/* -- near array ------------------------------------------------------------------------- */

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

/* Rearrange a[0..n) so that a[0..m) holds its m smallest values (any order). */
static void
select_smallest(double *a, Py_ssize_t n, Py_ssize_t m)
{
    Py_ssize_t lo = 0, hi = n - 1;
    while (lo < hi) {
        double x = a[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < x)
                i++;
            while (a[j] > x)
                j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        /* now a[lo..j] <= x <= a[i..hi], j < i */
        if (m - 1 <= j)
            hi = j;
        else if (m - 1 >= i)
            lo = i;
        else
            return;
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
        if (s->table[i].price != NULL)
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

/* -- levels in -------------------------------------------------------------------------- */

/* A float object for ``o`` (a new reference) and its value. */
static PyObject *
as_float(PyObject *o, double *v)
{
    if (PyFloat_CheckExact(o)) {
        *v = PyFloat_AS_DOUBLE(o);
        Py_INCREF(o);
        return o;
    }
    PyObject *f = PyNumber_Float(o);
    if (f != NULL)
        *v = PyFloat_AS_DOUBLE(f);
    return f;
}

/* Set one level; quantity zero removes it. */
static int
set_level(BookSide *s, PyObject *p, PyObject *q, int skip_zero)
{
    double pv, qv;
    PyObject *pf = as_float(p, &pv);
    if (pf == NULL)
        return -1;
    PyObject *qf = as_float(q, &qv);
    if (qf == NULL) {
        Py_DECREF(pf);
        return -1;
    }
    if (qv == 0.0 && skip_zero) { /* reset: a zero level is skipped, not deleted */
        Py_DECREF(pf);
        Py_DECREF(qf);
        return 0;
    }
    double k = s->sign * pv;
    if (k == 0.0)
        k = 0.0; /* one key for -0.0 and 0.0, as in a dict */
    int found;
    size_t i = probe(s, k, &found);
    if (qv != 0.0) {
        if (found) {
            Py_SETREF(s->table[i].qty, qf);
            Py_DECREF(pf);
            return 0;
        }
        if ((size_t)(s->used + 1) * 2 > s->mask + 1) {
            if (table_grow(s) < 0)
                goto fail;
            i = probe(s, k, &found);
        }
        if (k <= s->bound && near_insert(s, k) < 0)
            goto fail;
        s->table[i].key = k;
        s->table[i].price = pf;
        s->table[i].qty = qf;
        s->used++;
        return 0;
    }
    Py_DECREF(pf);
    Py_DECREF(qf);
    if (found) {
        PyObject *op = s->table[i].price, *oq = s->table[i].qty;
        table_erase(s, i);
        if (k <= s->bound)
            near_remove(s, k);
        Py_DECREF(op);
        Py_DECREF(oq);
    }
    return 0;
fail:
    Py_DECREF(pf);
    Py_DECREF(qf);
    return -1;
}

static int
set_pair(BookSide *s, PyObject *item, int skip_zero)
{
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2)
        return set_level(s, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1), skip_zero);
    if (PyList_CheckExact(item) && PyList_GET_SIZE(item) == 2)
        return set_level(s, PyList_GET_ITEM(item, 0), PyList_GET_ITEM(item, 1), skip_zero);
    PyObject *seq = PySequence_Fast(item, "a level must be a (price, qty) pair");
    if (seq == NULL)
        return -1;
    int rc;
    if (PySequence_Fast_GET_SIZE(seq) != 2) {
        PyErr_SetString(PyExc_ValueError, "a level must be a (price, qty) pair");
        rc = -1;
    }
    else {
        rc = set_level(s, PySequence_Fast_GET_ITEM(seq, 0), PySequence_Fast_GET_ITEM(seq, 1), skip_zero);
    }
    Py_DECREF(seq);
    return rc;
}

static int
set_levels(BookSide *s, PyObject *levels, int skip_zero)
{
    if (PyList_CheckExact(levels)) {
        /* The decoder's lists: index directly (a level never reenters Python code). */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(levels); i++) {
            if (set_pair(s, PyList_GET_ITEM(levels, i), skip_zero) < 0)
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

/* -- the type --------------------------------------------------------------------------- */

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
    table_clear(s);
    s->sign = sign;
    s->keep = keep;
    s->near_len = 0;
    s->bound = INFINITY;
    return 0;
}

static void
BookSide_dealloc(BookSide *s)
{
    table_clear(s);
    PyMem_Free(s->table);
    PyMem_Free(s->near);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *
BookSide_reset(BookSide *s, PyObject *levels)
{
    table_clear(s);
    s->near_len = 0;
    s->bound = -INFINITY; /* no level goes to near one by one: refill sorts them once */
    if (set_levels(s, levels, 1) < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        refill(s); /* keep the side consistent with what was set */
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (refill(s) < 0)
        return NULL;
    Py_RETURN_NONE;
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

/* Write the top ``depth`` levels of ``s`` as price, qty, ... into ``out`` from ``pos``. */
static void
fill_top(const BookSide *s, Py_ssize_t depth, PyObject *out, Py_ssize_t pos)
{
    Py_ssize_t n = s->near_len < depth ? s->near_len : depth;
    for (Py_ssize_t i = 0; i < n; i++) {
        int found;
        const Entry *e = &s->table[probe(s, s->near[i], &found)];
        Py_INCREF(e->price);
        PyTuple_SET_ITEM(out, pos++, e->price);
        Py_INCREF(e->qty);
        PyTuple_SET_ITEM(out, pos++, e->qty);
    }
    for (Py_ssize_t i = n; i < depth; i++) {
        Py_INCREF(NAN_OBJ);
        PyTuple_SET_ITEM(out, pos++, NAN_OBJ);
        Py_INCREF(NAN_OBJ);
        PyTuple_SET_ITEM(out, pos++, NAN_OBJ);
    }
}

static PyObject *
BookSide_top(BookSide *s, PyObject *arg)
{
    Py_ssize_t depth = PyLong_AsSsize_t(arg);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    if (depth < 0)
        depth = 0;
    PyObject *t = PyTuple_New(2 * depth);
    if (t == NULL)
        return NULL;
    fill_top(s, depth, t, 0);
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
        if (e->price != NULL && PyDict_SetItem(d, e->price, e->qty) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

static PyObject *
BookSide_near(BookSide *s, void *Py_UNUSED(closure))
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
    {"reset", (PyCFunction)BookSide_reset, METH_O, "Replace every level with ``levels``."},
    {"apply", (PyCFunction)(void (*)(void))BookSide_apply, METH_FASTCALL,
     "apply(levels, depth): set each level; quantity zero removes it."},
    {"best", (PyCFunction)BookSide_best, METH_NOARGS, "Best price, NaN when empty."},
    {"top", (PyCFunction)BookSide_top, METH_O,
     "top(depth): [price_0, qty_0, ...] padded with NaN to ``depth`` levels."},
    {"levels", (PyCFunction)BookSide_levels, METH_NOARGS, "Every level as price -> quantity."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef BookSide_getset[] = {
    {"near", (getter)BookSide_near, NULL, "The near keys, sorted best first (a copy).", NULL},
    {"bound", (getter)BookSide_get_bound, NULL, "Largest key near is sure to hold.", NULL},
    {"sign", (getter)BookSide_get_sign, NULL, "1.0 for asks, -1.0 for bids.", NULL},
    {"keep", (getter)BookSide_get_keep, NULL, "How many near keys to keep.", NULL},
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
    Py_ssize_t depth = PyLong_AsSsize_t(args[2]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    if (depth < 0)
        depth = 0;
    PyObject *t = PyTuple_New(4 * depth);
    if (t == NULL)
        return NULL;
    fill_top((BookSide *)args[0], depth, t, 0);
    fill_top((BookSide *)args[1], depth, t, 2 * depth);
    return t;
}

static PyMethodDef module_methods[] = {
    {"top", (PyCFunction)(void (*)(void))book_top, METH_FASTCALL,
     "top(asks, bids, depth): flat (a_p_0, a_q_0, ..., b_p_0, b_q_0, ...), NaN padded."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cbook_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ccf.sources.binance._cbook",
    .m_doc = "C order book side; see ccf.sources.binance.book for the Python reference.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__cbook(void)
{
    if (PyType_Ready(&BookSideType) < 0)
        return NULL;
    NAN_OBJ = PyFloat_FromDouble(Py_NAN);
    if (NAN_OBJ == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&cbook_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BookSideType);
    if (PyModule_AddObject(m, "BookSide", (PyObject *)&BookSideType) < 0) {
        Py_DECREF(&BookSideType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "NAN", NAN_OBJ) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(NAN_OBJ); /* the module's reference was stolen; keep ours for padding */
    return m;
}
