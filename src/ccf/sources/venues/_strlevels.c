/* The hot loops of ccf.sources.venues.strbook in C: applying a batch of (price text,
 * quantity text) levels to one side, and the flat top-N tuple of a side. Same data as
 * the pure-Python Side (a list of ascending float sort keys and a dict key -> (price
 * text, quantity text, (price, quantity))), same float() parsing, same results: the
 * Python code stays the reference and the fallback (CCF_BOOK_IMPL=python). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

static Py_ssize_t bisect_left_d(PyObject *keys, double k) {
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(keys);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (PyFloat_AS_DOUBLE(PyList_GET_ITEM(keys, mid)) < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* apply(keys, levels, sign, watch, updates) -> changes that touched the best `watch` */
static PyObject *apply(PyObject *self, PyObject *args) {
    PyObject *keys, *levels, *updates;
    double sign;
    Py_ssize_t watch;
    if (!PyArg_ParseTuple(args, "O!O!dnO", &PyList_Type, &keys, &PyDict_Type, &levels, &sign,
                          &watch, &updates))
        return NULL;
    PyObject *seq = PySequence_Fast(updates, "updates must be a sequence of levels");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    long changes = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lv = PySequence_Fast_GET_ITEM(seq, i), *px, *qty;
        if (PyTuple_Check(lv) && PyTuple_GET_SIZE(lv) >= 2) {
            px = PyTuple_GET_ITEM(lv, 0);
            qty = PyTuple_GET_ITEM(lv, 1);
        } else if (PyList_Check(lv) && PyList_GET_SIZE(lv) >= 2) {
            px = PyList_GET_ITEM(lv, 0);
            qty = PyList_GET_ITEM(lv, 1);
        } else {
            PyErr_SetString(PyExc_ValueError, "a level is [price, quantity, ...]");
            goto fail;
        }
        PyObject *pf = PyFloat_FromString(px);
        if (pf == NULL)
            goto fail;
        PyObject *qf = PyFloat_FromString(qty);
        if (qf == NULL) {
            Py_DECREF(pf);
            goto fail;
        }
        double p = PyFloat_AS_DOUBLE(pf), q = PyFloat_AS_DOUBLE(qf), k = sign * p;
        Py_ssize_t len = PyList_GET_SIZE(keys);
        int top = len <= watch || k <= PyFloat_AS_DOUBLE(PyList_GET_ITEM(keys, watch - 1));
        PyObject *kf = PyFloat_FromDouble(k);
        int ok = kf != NULL;
        if (ok) {
            int has = PyDict_Contains(levels, kf);
            if (has < 0) {
                ok = 0;
            } else if (q == 0.0) {
                if (has) {
                    Py_ssize_t j = bisect_left_d(keys, k);
                    ok = PyDict_DelItem(levels, kf) == 0 && PyList_SetSlice(keys, j, j + 1, NULL) == 0;
                    changes += top;
                }
            } else {
                if (!has) {
                    Py_ssize_t j = bisect_left_d(keys, k);
                    ok = PyList_Insert(keys, j, kf) == 0;
                }
                PyObject *pair = ok ? PyTuple_Pack(2, pf, qf) : NULL;
                PyObject *val = pair ? PyTuple_Pack(3, px, qty, pair) : NULL;
                ok = val != NULL && PyDict_SetItem(levels, kf, val) == 0;
                Py_XDECREF(pair);
                Py_XDECREF(val);
                changes += top;
            }
        }
        Py_XDECREF(kf);
        Py_DECREF(pf);
        Py_DECREF(qf);
        if (!ok)
            goto fail;
    }
    Py_DECREF(seq);
    return PyLong_FromLong(changes);
fail:
    Py_DECREF(seq);
    return NULL;
}

/* flat(keys, levels, depth) -> (price, quantity, ...) of the best `depth`, NaN-padded */
static PyObject *flat(PyObject *self, PyObject *args) {
    PyObject *keys, *levels;
    Py_ssize_t depth;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyList_Type, &keys, &PyDict_Type, &levels, &depth))
        return NULL;
    PyObject *out = PyTuple_New(2 * depth);
    if (out == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys) < depth ? PyList_GET_SIZE(keys) : depth;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *val = PyDict_GetItemWithError(levels, PyList_GET_ITEM(keys, i));
        if (val == NULL || !PyTuple_Check(val) || PyTuple_GET_SIZE(val) < 3 ||
            !PyTuple_Check(PyTuple_GET_ITEM(val, 2))) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_KeyError, "book keys and levels disagree");
            Py_DECREF(out);
            return NULL;
        }
        PyObject *pair = PyTuple_GET_ITEM(val, 2);
        PyObject *p = PyTuple_GET_ITEM(pair, 0), *q = PyTuple_GET_ITEM(pair, 1);
        Py_INCREF(p);
        Py_INCREF(q);
        PyTuple_SET_ITEM(out, 2 * i, p);
        PyTuple_SET_ITEM(out, 2 * i + 1, q);
    }
    for (Py_ssize_t i = 2 * n; i < 2 * depth; i++) {
        PyObject *nan = PyFloat_FromDouble(NAN);
        if (nan == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, nan);
    }
    return out;
}

/* The level value's price and quantity texts, checked. */
static int level_texts(PyObject *levels, PyObject *key, PyObject **px, PyObject **qty) {
    PyObject *val = PyDict_GetItemWithError(levels, key);
    if (val == NULL || !PyTuple_Check(val) || PyTuple_GET_SIZE(val) < 3 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(val, 0)) || !PyUnicode_Check(PyTuple_GET_ITEM(val, 1))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_KeyError, "book keys and levels disagree");
        return -1;
    }
    *px = PyTuple_GET_ITEM(val, 0);
    *qty = PyTuple_GET_ITEM(val, 1);
    return 0;
}

/* okx_text(bid_keys, bid_levels, ask_keys, ask_levels, depth) -> "bpx:bsz:apx:asz:..." */
static PyObject *okx_text(PyObject *self, PyObject *args) {
    PyObject *bk, *bl, *ak, *al;
    Py_ssize_t depth;
    if (!PyArg_ParseTuple(args, "O!O!O!O!n", &PyList_Type, &bk, &PyDict_Type, &bl, &PyList_Type,
                          &ak, &PyDict_Type, &al, &depth))
        return NULL;
    Py_ssize_t nb = PyList_GET_SIZE(bk) < depth ? PyList_GET_SIZE(bk) : depth;
    Py_ssize_t na = PyList_GET_SIZE(ak) < depth ? PyList_GET_SIZE(ak) : depth;
    PyObject *parts = PyList_New(0);
    if (parts == NULL)
        return NULL;
    Py_ssize_t n = nb > na ? nb : na;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *px, *qty;
        if (i < nb) {
            if (level_texts(bl, PyList_GET_ITEM(bk, i), &px, &qty) < 0 ||
                PyList_Append(parts, px) < 0 || PyList_Append(parts, qty) < 0)
                goto fail;
        }
        if (i < na) {
            if (level_texts(al, PyList_GET_ITEM(ak, i), &px, &qty) < 0 ||
                PyList_Append(parts, px) < 0 || PyList_Append(parts, qty) < 0)
                goto fail;
        }
    }
    PyObject *sep = PyUnicode_FromString(":");
    PyObject *out = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    return out;
fail:
    Py_DECREF(parts);
    return NULL;
}

/* Appends `text` without its '.' and leading zeros; returns the new length or -1. */
static Py_ssize_t put_digits(char *buf, Py_ssize_t at, Py_ssize_t cap, PyObject *text) {
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(text, &len);
    if (s == NULL)
        return -1;
    int leading = 1;
    for (Py_ssize_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.')
            continue;
        if (leading && c == '0')
            continue;
        leading = 0;
        if (at >= cap) {
            PyErr_SetString(PyExc_ValueError, "level text too long for a checksum");
            return -1;
        }
        buf[at++] = c;
    }
    return at;
}

/* kraken_side(keys, levels, depth) -> the side's part of Kraken's checksum string */
static PyObject *kraken_side(PyObject *self, PyObject *args) {
    PyObject *keys, *levels;
    Py_ssize_t depth;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyList_Type, &keys, &PyDict_Type, &levels, &depth))
        return NULL;
    char buf[4096];
    Py_ssize_t at = 0;
    Py_ssize_t n = PyList_GET_SIZE(keys) < depth ? PyList_GET_SIZE(keys) : depth;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *px, *qty;
        if (level_texts(levels, PyList_GET_ITEM(keys, i), &px, &qty) < 0)
            return NULL;
        at = put_digits(buf, at, (Py_ssize_t)sizeof buf, px);
        if (at < 0)
            return NULL;
        at = put_digits(buf, at, (Py_ssize_t)sizeof buf, qty);
        if (at < 0)
            return NULL;
    }
    return PyUnicode_FromStringAndSize(buf, at);
}

static PyMethodDef methods[] = {
    {"apply", apply, METH_VARARGS, "apply(keys, levels, sign, watch, updates) -> top changes"},
    {"flat", flat, METH_VARARGS, "flat(keys, levels, depth) -> the top levels as a flat tuple"},
    {"okx_text", okx_text, METH_VARARGS, "OKX's checksum string of the top `depth` levels"},
    {"kraken_side", kraken_side, METH_VARARGS, "one side's part of Kraken's checksum string"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_strlevels",
    .m_doc = NULL,
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__strlevels(void) { return PyModule_Create(&module); }
