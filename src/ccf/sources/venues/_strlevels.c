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

static PyMethodDef methods[] = {
    {"apply", apply, METH_VARARGS, "apply(keys, levels, sign, watch, updates) -> top changes"},
    {"flat", flat, METH_VARARGS, "flat(keys, levels, depth) -> the top levels as a flat tuple"},
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
