/* The map side's counting loop, compiled: mapside.py uses it when it built.

   count_run(pairs, counts, value, limit) -> (counted, odd)

   Takes up to `limit` items from the iterator `pairs`.  Each item that is a
   2-tuple whose value is the object `value` (identity, as in values.py's
   run-length form) adds one to counts[key].  The first item that is anything
   else is taken from the iterator but not counted, and returned as
   odd = (item,) so that the caller handles it (and reports it if it breaks
   the job's contract); otherwise odd = ().  `counted` < `limit` with no odd
   item means `pairs` is exhausted.

   Why: the guide's word count yields tens of millions of (word, 1) pairs.
   In Python the cheapest way to count them is chunks of 512 (islice), a
   strict zip to split and check them, an identity check per value and
   Counter's C loop: ~28% more map-side time than this one loop, which
   touches each pair once (measured in docs/performance.md).  An unhashable
   key comes back as the odd item too, so that the caller's message names it;
   an exception from the iterator (the job's mapfn) propagates. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *
count_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "count_run(pairs, counts, value, limit) takes 4 arguments");
        return NULL;
    }
    PyObject *pairs = args[0], *counts = args[1], *value = args[2];
    if (!PyIter_Check(pairs) || !PyDict_Check(counts)) {
        PyErr_SetString(PyExc_TypeError, "count_run: pairs must be an iterator and counts a dict");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;

    iternextfunc next = Py_TYPE(pairs)->tp_iternext;
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL)
        return NULL;
    PyObject *odd = NULL;  /* the item that stopped the loop, owned */
    Py_ssize_t counted = 0;
    while (counted < limit) {
        PyObject *item = next(pairs);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_StopIteration))
                    goto error;
                PyErr_Clear();
            }
            break;
        }
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 || PyTuple_GET_ITEM(item, 1) != value) {
            odd = item;
            break;
        }
        PyObject *key = PyTuple_GET_ITEM(item, 0);
        PyObject *old = PyDict_GetItemWithError(counts, key);  /* borrowed */
        PyObject *updated;
        if (old != NULL) {
            updated = PyNumber_Add(old, one);
        } else if (!PyErr_Occurred()) {
            updated = Py_NewRef(one);
        } else if (PyErr_ExceptionMatches(PyExc_TypeError)) {  /* unhashable key */
            PyErr_Clear();
            odd = item;
            break;
        } else {
            updated = NULL;
        }
        if (updated == NULL || PyDict_SetItem(counts, key, updated) < 0) {
            Py_XDECREF(updated);
            Py_DECREF(item);
            goto error;
        }
        Py_DECREF(updated);
        Py_DECREF(item);
        counted++;
    }
    Py_DECREF(one);
    if (odd == NULL)
        return Py_BuildValue("(n())", counted);
    return Py_BuildValue("(n(N))", counted, odd);

error:
    Py_DECREF(one);
    return NULL;
}

static PyMethodDef runcount_methods[] = {
    {"count_run", (PyCFunction)(void (*)(void))count_run, METH_FASTCALL,
     "count_run(pairs, counts, value, limit) -> (counted, odd): count keys of (key, value) pairs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef runcount_module = {
    PyModuleDef_HEAD_INIT, "octostore.worker._runcount", "The map side's compiled counting loop.", 0,
    runcount_methods,
};

PyMODINIT_FUNC
PyInit__runcount(void)
{
    return PyModule_Create(&runcount_module);
}
