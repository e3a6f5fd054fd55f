/* KeyCounts: the map side's run-length counts, compiled.  mapside.py uses it
   when it built (setup.py), and collections.Counter with chunks when not.

   counts = KeyCounts()
   counts.count_run(pairs, value, limit) -> (counted, odd)
   counts.add(keys)
   len(counts), counts.keys(), counts.values(), counts.newest_key()

   count_run takes up to `limit` items from the iterator `pairs`.  Each item
   that is a 2-tuple whose value is the object `value` (identity, as in
   values.py's run-length form) adds one to its key's count.  The first item
   that is anything else is taken from the iterator but not counted, and
   returned as odd = (item,) so that the caller handles it (and reports it if
   it breaks the job's contract); otherwise odd = ().  `counted` < `limit`
   with no odd item means `pairs` is exhausted.  An unhashable key comes back
   as the odd item too, so that the caller's message names it; an exception
   from the iterator (the job's mapfn) propagates.  add(keys) counts each key
   of an iterable once (a chunk already checked), raising TypeError for an
   unhashable one.

   keys() and values() list the keys in the order they were first counted and
   their counts, in the same order (a dict keeps insertion order, and a key's
   slot is its insertion number).

   Why compiled: the guide's word count yields tens of millions of (word, 1)
   pairs.  In Python the cheapest way to count them is chunks of 512
   (islice), a strict zip to split and check them, an identity check per
   value and Counter's C loop; one C loop that touches each pair once costs
   ~28% less map-side time.  Why a slot per key and a C array of counts rather
   than a dict of counts: one dict lookup per pair instead of a lookup, an
   int allocation and a store (~10% less again, docs/performance.md). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    PyObject *slots;   /* dict: key -> its slot number, an int */
    int64_t *counts;   /* counts[slot] */
    Py_ssize_t capacity;
    PyObject *newest;  /* the key counted first most recently, or NULL */
} KeyCounts;

static int
KeyCounts_init(KeyCounts *self, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "KeyCounts() takes no arguments");
        return -1;
    }
    if (self->slots != NULL)
        return 0;
    self->slots = PyDict_New();
    return self->slots == NULL ? -1 : 0;
}

/* Keys may be any hashable object, one that refers back to its KeyCounts included: take part in GC. */
static int
KeyCounts_traverse(KeyCounts *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slots);
    Py_VISIT(self->newest);
    return 0;
}

static int
KeyCounts_clear(KeyCounts *self)
{
    Py_CLEAR(self->slots);
    Py_CLEAR(self->newest);
    return 0;
}

static void
KeyCounts_dealloc(KeyCounts *self)
{
    PyObject_GC_UnTrack(self);
    KeyCounts_clear(self);
    PyMem_Free(self->counts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Give `key` a new slot with count 1; 0 on success, -1 with an exception set. */
static int
add_key(KeyCounts *self, PyObject *key)
{
    Py_ssize_t slot = PyDict_GET_SIZE(self->slots);
    if (slot == self->capacity) {
        Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 1024;
        int64_t *counts = PyMem_Realloc(self->counts, capacity * sizeof(int64_t));
        if (counts == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->counts = counts;
        self->capacity = capacity;
    }
    PyObject *number = PyLong_FromSsize_t(slot);
    if (number == NULL)
        return -1;
    int rc = PyDict_SetItem(self->slots, key, number);
    Py_DECREF(number);
    if (rc < 0)
        return -1;
    self->counts[slot] = 1;
    Py_XSETREF(self->newest, Py_NewRef(key));
    return 0;
}

/* Add one to key's count; 0 on success, -1 with an exception set (TypeError if unhashable). */
static int
count_key(KeyCounts *self, PyObject *key)
{
    PyObject *slot = PyDict_GetItemWithError(self->slots, key);  /* borrowed */
    if (slot != NULL) {
        self->counts[PyLong_AsSsize_t(slot)] += 1;  /* slots are ints we made: no error possible */
        return 0;
    }
    return PyErr_Occurred() ? -1 : add_key(self, key);
}

static PyObject *
KeyCounts_count_run(KeyCounts *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "count_run(pairs, value, limit) takes 3 arguments");
        return NULL;
    }
    PyObject *pairs = args[0], *value = args[1];
    if (!PyIter_Check(pairs)) {
        PyErr_SetString(PyExc_TypeError, "count_run: pairs must be an iterator");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;

    iternextfunc next = Py_TYPE(pairs)->tp_iternext;
    PyObject *odd = NULL;  /* the item that stopped the loop, owned */
    Py_ssize_t counted = 0;
    while (counted < limit) {
        PyObject *item = next(pairs);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_StopIteration))
                    return NULL;
                PyErr_Clear();
            }
            break;
        }
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 || PyTuple_GET_ITEM(item, 1) != value) {
            odd = item;
            break;
        }
        if (count_key(self, PyTuple_GET_ITEM(item, 0)) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {  /* e.g. a key whose __eq__ raised */
                Py_DECREF(item);
                return NULL;
            }
            PyErr_Clear();  /* unhashable: the caller reports it */
            odd = item;
            break;
        }
        Py_DECREF(item);
        counted++;
    }
    if (odd == NULL)
        return Py_BuildValue("(n())", counted);
    return Py_BuildValue("(n(N))", counted, odd);
}

static PyObject *
KeyCounts_add(KeyCounts *self, PyObject *keys)
{
    PyObject *iterator = PyObject_GetIter(keys);
    if (iterator == NULL)
        return NULL;
    PyObject *key;
    while ((key = PyIter_Next(iterator)) != NULL) {
        int rc = count_key(self, key);
        Py_DECREF(key);
        if (rc < 0)
            break;
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
KeyCounts_keys(KeyCounts *self, PyObject *Py_UNUSED(ignored))
{
    return PySequence_List(self->slots);
}

static PyObject *
KeyCounts_values(KeyCounts *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = PyDict_GET_SIZE(self->slots);
    PyObject *values = PyList_New(n);
    if (values == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *count = PyLong_FromLongLong(self->counts[i]);
        if (count == NULL) {
            Py_DECREF(values);
            return NULL;
        }
        PyList_SET_ITEM(values, i, count);
    }
    return values;
}

static PyObject *
KeyCounts_newest_key(KeyCounts *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->newest ? self->newest : Py_None);
}

static Py_ssize_t
KeyCounts_len(KeyCounts *self)
{
    return PyDict_GET_SIZE(self->slots);
}

static PyMethodDef KeyCounts_methods[] = {
    {"count_run", (PyCFunction)(void (*)(void))KeyCounts_count_run, METH_FASTCALL,
     "count_run(pairs, value, limit) -> (counted, odd): count the keys of (key, value) pairs."},
    {"add", (PyCFunction)KeyCounts_add, METH_O, "add(keys): count each key of an iterable once."},
    {"keys", (PyCFunction)KeyCounts_keys, METH_NOARGS, "The keys, in the order first counted."},
    {"values", (PyCFunction)KeyCounts_values, METH_NOARGS, "The counts, in the order of keys()."},
    {"newest_key", (PyCFunction)KeyCounts_newest_key, METH_NOARGS, "The key counted first most recently."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods KeyCounts_as_sequence = {.sq_length = (lenfunc)KeyCounts_len};

static PyTypeObject KeyCountsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "octostore.worker._keycounts.KeyCounts",
    .tp_doc = "Counts of keys of (key, value) pairs that share one value.",
    .tp_basicsize = sizeof(KeyCounts),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)KeyCounts_traverse,
    .tp_clear = (inquiry)KeyCounts_clear,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)KeyCounts_init,
    .tp_dealloc = (destructor)KeyCounts_dealloc,
    .tp_methods = KeyCounts_methods,
    .tp_as_sequence = &KeyCounts_as_sequence,
};

static struct PyModuleDef keycounts_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "octostore.worker._keycounts",
    .m_doc = "The map side's compiled run-length counts.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__keycounts(void)
{
    if (PyType_Ready(&KeyCountsType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&keycounts_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "KeyCounts", (PyObject *)&KeyCountsType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
