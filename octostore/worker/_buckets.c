/* The spill's encode, partition and sort for str keys, compiled: mapside.py
   uses it when it built (setup.py) and the job has no partitionfn or
   combinefn, and its column-at-a-time Python otherwise.

   bucket_str_records(keys, counts, payloads, partitions) -> buckets or None

   For row i, the record (encode_key(keys[i]), counts[i], payloads[i]) goes to
   buckets[crc32(encoding) % partitions], and each bucket is sorted by encoded
   key, rows of equal keys in row order: exactly what
   keys.encode_and_partition (which owns the rule) and a stable sort give
   (tests/test_mapside.py compares them).  A str key's encoding is 0x30, its
   UTF-8, 0x00 (keys.py).  None when a key is not a plain str, holds a NUL
   (escaped in the encoding) or a lone surrogate (not strict UTF-8): the
   caller then takes the general path.

   Why compiled: a word count spill has ~160 k distinct keys; in Python,
   encoding them in bulk, hashing, bucketing and sorting costs ~1.5 us a key
   (0.24-0.30 s for 163 k keys; 0.11-0.12 s here), more than the rest of the
   spill.  CRC-32 is written out here (the table
   zlib uses) so that building needs no zlib headers. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t crc_table[256];

static void
make_crc_table(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t
crc32_of(const unsigned char *data, Py_ssize_t size)
{
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < size; i++)
        c = crc_table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

typedef struct {
    uint64_t prefix;    /* the key's first 8 bytes after the tag, big-endian, zero-padded */
    PyObject *encoded;  /* owned */
    Py_ssize_t row;
    Py_ssize_t partition;
} Row;

/* Most comparisons end on the prefix, which is in the row: the keys' bytes are
   scattered over the heap, and reading them is what a sort of them costs. */
static int
compare_rows(const void *a, const void *b)
{
    const Row *x = a, *y = b;
    if (x->prefix != y->prefix)
        return x->prefix < y->prefix ? -1 : 1;
    Py_ssize_t nx = PyBytes_GET_SIZE(x->encoded), ny = PyBytes_GET_SIZE(y->encoded);
    int c = memcmp(PyBytes_AS_STRING(x->encoded), PyBytes_AS_STRING(y->encoded), nx < ny ? nx : ny);
    if (c != 0)
        return c;
    if (nx != ny)
        return nx < ny ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;  /* equal keys keep row order: a stable sort */
}

/* The encoding of a plain str key without NUL or lone surrogates; NULL without an exception if it has none. */
static PyObject *
encode_str(PyObject *key)
{
    if (!PyUnicode_CheckExact(key))
        return NULL;
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(key, &size);
    if (utf8 == NULL) {  /* a lone surrogate: strict UTF-8 refuses it */
        PyErr_Clear();
        return NULL;
    }
    if (memchr(utf8, 0, size) != NULL)
        return NULL;
    PyObject *encoded = PyBytes_FromStringAndSize(NULL, size + 2);
    if (encoded == NULL) {
        PyErr_Clear();  /* out of memory: the general path will say so */
        return NULL;
    }
    char *out = PyBytes_AS_STRING(encoded);
    out[0] = 0x30;
    memcpy(out + 1, utf8, size);
    out[size + 1] = 0x00;
    return encoded;
}

static inline int
row_less(const Row *x, const Row *y)
{
    return x->prefix != y->prefix ? x->prefix < y->prefix : compare_rows(x, y) < 0;
}

static inline void
swap_rows(Row *x, Row *y)
{
    Row t = *x;
    *x = *y;
    *y = t;
}

/* Quicksort with the prefix test inlined (2x faster than qsort's calls here), insertion sort
   for short ranges and qsort past a depth limit, so no input makes it quadratic.  compare_rows
   is a total order (rows differ), so the result is the one order a stable sort gives. */
static void
sort_rows(Row *a, Py_ssize_t n, int depth)
{
    while (n > 16) {
        if (depth-- == 0) {
            qsort(a, n, sizeof(Row), compare_rows);
            return;
        }
        Py_ssize_t mid = n / 2;
        if (row_less(&a[mid], &a[0]))
            swap_rows(&a[mid], &a[0]);
        if (row_less(&a[n - 1], &a[0]))
            swap_rows(&a[n - 1], &a[0]);
        if (row_less(&a[n - 1], &a[mid]))
            swap_rows(&a[n - 1], &a[mid]);
        Row pivot = a[mid];
        Py_ssize_t i = 0, j = n - 1;
        for (;;) {
            while (row_less(&a[i], &pivot))
                i++;
            while (row_less(&pivot, &a[j]))
                j--;
            if (i >= j)
                break;
            swap_rows(&a[i], &a[j]);
            i++;
            j--;
        }
        /* a[0..j] <= pivot <= a[j+1..n-1]: recurse into the smaller side, loop on the larger */
        if (j + 1 < n - j - 1) {
            sort_rows(a, j + 1, depth);
            a += j + 1;
            n -= j + 1;
        } else {
            sort_rows(a + j + 1, n - j - 1, depth);
            n = j + 1;
        }
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        Row r = a[i];
        Py_ssize_t j = i;
        for (; j > 0 && row_less(&r, &a[j - 1]); j--)
            a[j] = a[j - 1];
        a[j] = r;
    }
}

/* Rows in partition order (a counting sort: stable), each partition's rows sorted by key. */
static int
sort_by_partition_and_key(Row *rows, Py_ssize_t n, Py_ssize_t partitions)
{
    Py_ssize_t *starts = PyMem_Calloc(partitions + 1, sizeof(Py_ssize_t));
    Row *sorted = PyMem_Malloc((n ? n : 1) * sizeof(Row));
    if (starts == NULL || sorted == NULL) {
        PyMem_Free(starts);
        PyMem_Free(sorted);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        starts[rows[i].partition + 1]++;
    for (Py_ssize_t p = 0; p < partitions; p++)
        starts[p + 1] += starts[p];
    for (Py_ssize_t i = 0; i < n; i++)
        sorted[starts[rows[i].partition]++] = rows[i];  /* starts[p] ends as the start of p + 1 */
    memcpy(rows, sorted, n * sizeof(Row));
    PyMem_Free(sorted);
    for (Py_ssize_t p = 0, start = 0; p < partitions; start = starts[p++])
        sort_rows(rows + start, starts[p] - start, 64);
    PyMem_Free(starts);
    return 0;
}

static void
free_rows(Row *rows, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(rows[i].encoded);
    PyMem_Free(rows);
}

static PyObject *
bucket_str_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "bucket_str_records(keys: list, counts: list, payloads: list, partitions)");
        return NULL;
    }
    PyObject *keys = args[0], *counts = args[1], *payloads = args[2];
    Py_ssize_t partitions = PyLong_AsSsize_t(args[3]);
    if (partitions == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (partitions < 1 || PyList_GET_SIZE(counts) != n || PyList_GET_SIZE(payloads) != n) {
        PyErr_SetString(PyExc_ValueError, "bucket_str_records: columns of different lengths, or no partitions");
        return NULL;
    }

    PyObject *buckets = NULL;
    Row *rows = PyMem_Malloc((n ? n : 1) * sizeof(Row));
    if (rows == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *encoded = encode_str(PyList_GET_ITEM(keys, i));
        if (encoded == NULL) {
            free_rows(rows, i);
            Py_RETURN_NONE;
        }
        const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(encoded);
        Py_ssize_t size = PyBytes_GET_SIZE(encoded);
        uint64_t prefix = 0;
        for (Py_ssize_t j = 1; j < 9; j++)
            prefix = prefix << 8 | (j < size ? bytes[j] : 0);
        rows[i].prefix = prefix;
        rows[i].encoded = encoded;
        rows[i].row = i;
        rows[i].partition = crc32_of(bytes, size) % partitions;
    }
    if (sort_by_partition_and_key(rows, n, partitions) < 0)
        goto error;

    buckets = PyList_New(partitions);
    if (buckets == NULL)
        goto error;
    for (Py_ssize_t p = 0; p < partitions; p++) {
        PyObject *bucket = PyList_New(0);
        if (bucket == NULL)
            goto error;
        PyList_SET_ITEM(buckets, p, bucket);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t row = rows[i].row;
        PyObject *record = PyTuple_Pack(3, rows[i].encoded, PyList_GET_ITEM(counts, row), PyList_GET_ITEM(payloads, row));
        if (record == NULL)
            goto error;
        /* bytes, an int and bytes: no cycle can go through it, so the collector need not visit it */
        if (PyBytes_CheckExact(PyTuple_GET_ITEM(record, 2)) && PyLong_CheckExact(PyTuple_GET_ITEM(record, 1)))
            PyObject_GC_UnTrack(record);
        int rc = PyList_Append(PyList_GET_ITEM(buckets, rows[i].partition), record);
        Py_DECREF(record);
        if (rc < 0)
            goto error;
    }
    free_rows(rows, n);
    return buckets;

error:
    Py_XDECREF(buckets);
    free_rows(rows, n);
    return NULL;
}

static PyObject *
crc32(PyObject *module, PyObject *data)
{
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "crc32(data: bytes)");
        return NULL;
    }
    return PyLong_FromUnsignedLong(crc32_of((unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)));
}

static PyMethodDef buckets_methods[] = {
    {"bucket_str_records", (PyCFunction)(void (*)(void))bucket_str_records, METH_FASTCALL,
     "bucket_str_records(keys, counts, payloads, partitions) -> sorted records per partition, or None."},
    {"crc32", (PyCFunction)crc32, METH_O, "crc32(data) -> zlib.crc32(data), for the tests."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef buckets_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "octostore.worker._buckets",
    .m_doc = "The spill's encode, partition and sort for str keys, compiled.",
    .m_size = -1,
    .m_methods = buckets_methods,
};

PyMODINIT_FUNC
PyInit__buckets(void)
{
    make_crc_table();
    return PyModule_Create(&buckets_module);
}
