/*
 * Category text without a Python object per element.
 *
 * A Vocabulary numbers every category name the loaded models know (append-only). Its
 * split() walks a raw BYTES buffer (Triton's layout: a 4-byte little-endian length, then
 * the bytes, per element) and gives each element's slot and a str: the vocabulary's own
 * object for a known name (a new reference, no allocation), a freshly decoded one for any
 * other. A slot is the name's id + 1, and 0 for a name not in the vocabulary, so that it
 * indexes a table with "unknown" first. ids() gives the slots of a sequence of str. The
 * ids let a model whose categorical inputs were rewritten to integer codes run without
 * ONNX Runtime converting strings (server/textcodes.py).
 *
 * split() returns None for any buffer it does not handle (malformed, or an element that is
 * not valid UTF-8): the caller then takes the plain path, which raises the precise error.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t size;      /* words */
    Py_ssize_t capacity;  /* of words/texts/lengths */
    PyObject **words;     /* str, owned */
    const char **texts;   /* UTF-8 of each word (kept alive by the str) */
    Py_ssize_t *lengths;
    int32_t *slots;       /* open addressing: word index or -1 */
    size_t mask;          /* slots - 1, a power of two minus one */
} Vocabulary;

static inline uint64_t hash_bytes(const char *p, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static inline int32_t find(const Vocabulary *v, const char *p, Py_ssize_t n) {
    size_t h = (size_t)hash_bytes(p, n) & v->mask;
    for (;;) {
        int32_t s = v->slots[h];
        if (s < 0)
            return -1;
        if (v->lengths[s] == n && memcmp(v->texts[s], p, (size_t)n) == 0)
            return s;
        h = (h + 1) & v->mask;
    }
}

/* word s into the first free slot of its probe sequence */
static inline void place(int32_t *table, size_t mask, const char *p, Py_ssize_t n, int32_t s) {
    size_t h = (size_t)hash_bytes(p, n) & mask;
    while (table[h] >= 0)
        h = (h + 1) & mask;
    table[h] = s;
}

static int rehash(Vocabulary *v, size_t slots) {
    int32_t *table = PyMem_Malloc(slots * sizeof(int32_t));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(table, 0xff, slots * sizeof(int32_t));
    size_t mask = slots - 1;
    for (Py_ssize_t s = 0; s < v->size; s++)
        place(table, mask, v->texts[s], v->lengths[s], (int32_t)s);
    PyMem_Free(v->slots);
    v->slots = table;
    v->mask = mask;
    return 0;
}

static PyObject *Vocabulary_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Vocabulary() takes no arguments");
        return NULL;
    }
    Vocabulary *v = (Vocabulary *)type->tp_alloc(type, 0);
    if (v == NULL)
        return NULL;
    v->slots = PyMem_Malloc(16 * sizeof(int32_t));
    if (v->slots == NULL) {
        Py_DECREF(v);
        return PyErr_NoMemory();
    }
    memset(v->slots, 0xff, 16 * sizeof(int32_t));
    v->mask = 15;
    return (PyObject *)v;
}

static void Vocabulary_dealloc(Vocabulary *v) {
    for (Py_ssize_t s = 0; s < v->size; s++)
        Py_DECREF(v->words[s]);
    PyMem_Free(v->words);
    PyMem_Free(v->texts);
    PyMem_Free(v->lengths);
    PyMem_Free(v->slots);
    Py_TYPE(v)->tp_free((PyObject *)v);
}

static PyObject *Vocabulary_add(Vocabulary *v, PyObject *word) {
    if (!PyUnicode_Check(word)) {
        PyErr_SetString(PyExc_TypeError, "a vocabulary word must be str");
        return NULL;
    }
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(word, &n);
    if (p == NULL)
        return NULL;
    int32_t found = find(v, p, n);
    if (found >= 0)
        return PyLong_FromLong(found);
    if (v->size >= INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "vocabulary full");
        return NULL;
    }
    if (v->size == v->capacity) {
        Py_ssize_t capacity = v->capacity ? 2 * v->capacity : 64;
        PyObject **words = PyMem_Realloc(v->words, capacity * sizeof(PyObject *));
        if (words == NULL)
            return PyErr_NoMemory();
        v->words = words;
        const char **texts = PyMem_Realloc(v->texts, capacity * sizeof(char *));
        if (texts == NULL)
            return PyErr_NoMemory();
        v->texts = texts;
        Py_ssize_t *lengths = PyMem_Realloc(v->lengths, capacity * sizeof(Py_ssize_t));
        if (lengths == NULL)
            return PyErr_NoMemory();
        v->lengths = lengths;
        v->capacity = capacity;
    }
    if ((size_t)(v->size + 1) * 2 > v->mask + 1) { /* keep the table at most half full */
        if (rehash(v, (v->mask + 1) * 2) < 0)
            return NULL;
    }
    Py_ssize_t s = v->size;
    Py_INCREF(word);
    v->words[s] = word;
    v->texts[s] = p;
    v->lengths[s] = n;
    v->size = s + 1;
    place(v->slots, v->mask, p, n, (int32_t)s);
    return PyLong_FromSsize_t(s);
}

/* a writable buffer of at least count int64 */
static int id_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t count) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->itemsize != 8 || view->len < count * 8) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "slots must be a writable int64 buffer of count items");
        return -1;
    }
    return 0;
}

static PyObject *Vocabulary_split(Vocabulary *v, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "split(buffer, count, slots)");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    if (count < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "count must not be negative");
        return NULL;
    }
    Py_buffer raw, idv;
    if (PyObject_GetBuffer(args[0], &raw, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (count > raw.len / 4) { /* each element needs its 4-byte prefix: allocate nothing */
        PyBuffer_Release(&raw);
        Py_RETURN_NONE;
    }
    if (id_buffer(args[2], &idv, count) < 0) {
        PyBuffer_Release(&raw);
        return NULL;
    }
    const unsigned char *buf = raw.buf;
    Py_ssize_t size = raw.len, pos = 0;
    int64_t *ids = idv.buf;
    PyObject *items = PyList_New(count);
    if (items == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (size - pos < 4)
            goto unhandled;
        uint32_t n = (uint32_t)buf[pos] | (uint32_t)buf[pos + 1] << 8 |
                     (uint32_t)buf[pos + 2] << 16 | (uint32_t)buf[pos + 3] << 24;
        pos += 4;
        if ((Py_ssize_t)n > size - pos)
            goto unhandled;
        const char *p = (const char *)buf + pos;
        pos += n;
        int32_t s = find(v, p, (Py_ssize_t)n);
        PyObject *item;
        if (s >= 0) {
            item = v->words[s];
            Py_INCREF(item);
        } else {
            item = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "strict");
            if (item == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    goto fail;
                PyErr_Clear();
                goto unhandled;
            }
        }
        ids[i] = (int64_t)s + 1;
        PyList_SET_ITEM(items, i, item);
    }
    if (pos != size)
        goto unhandled;
    PyBuffer_Release(&raw);
    PyBuffer_Release(&idv);
    return items;
unhandled:
    Py_DECREF(items);
    PyBuffer_Release(&raw);
    PyBuffer_Release(&idv);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(items);
    PyBuffer_Release(&raw);
    PyBuffer_Release(&idv);
    return NULL;
}

static PyObject *Vocabulary_ids(Vocabulary *v, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "ids(items, slots)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "items must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    Py_buffer idv;
    if (id_buffer(args[1], &idv, count) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    int64_t *ids = idv.buf;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *result = Py_True;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = items[i];
        const char *p;
        Py_ssize_t n;
        if (PyUnicode_Check(item)) {
            p = PyUnicode_AsUTF8AndSize(item, &n);
            if (p == NULL) { /* lone surrogates: UnicodeEncodeError, as ONNX Runtime raises */
                PyBuffer_Release(&idv);
                Py_DECREF(seq);
                return NULL;
            }
        } else {
            result = Py_False; /* not str: the caller stringifies, as ONNX Runtime does */
            break;
        }
        ids[i] = (int64_t)find(v, p, n) + 1;
    }
    PyBuffer_Release(&idv);
    Py_DECREF(seq);
    return Py_NewRef(result);
}

static PyObject *Vocabulary_word(Vocabulary *v, PyObject *arg) {
    Py_ssize_t s = PyLong_AsSsize_t(arg);
    if (s == -1 && PyErr_Occurred())
        return NULL;
    if (s < 0 || s >= v->size) {
        PyErr_SetString(PyExc_IndexError, "no such word");
        return NULL;
    }
    return Py_NewRef(v->words[s]);
}

static Py_ssize_t Vocabulary_len(Vocabulary *v) { return v->size; }

static PyMethodDef Vocabulary_methods[] = {
    {"add", (PyCFunction)Vocabulary_add, METH_O,
     "add(word: str) -> int: the word's id, numbering it first when new."},
    {"split", (PyCFunction)(void (*)(void))Vocabulary_split, METH_FASTCALL,
     "split(buffer, count, slots) -> list[str] | None: the elements of a raw BYTES buffer; "
     "slots (writable int64) gets each element's id + 1, 0 for a name not in the "
     "vocabulary. None for a buffer not handled here."},
    {"ids", (PyCFunction)(void (*)(void))Vocabulary_ids, METH_FASTCALL,
     "ids(items, slots) -> bool: the slot (id + 1, 0: unknown) of each str item; "
     "False when an item is not a str."},
    {"word", (PyCFunction)Vocabulary_word, METH_O, "word(id) -> str"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Vocabulary_as_sequence = {
    .sq_length = (lenfunc)Vocabulary_len,
};

static PyTypeObject VocabularyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "server._textcodes.Vocabulary",
    .tp_basicsize = sizeof(Vocabulary),
    .tp_dealloc = (destructor)Vocabulary_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Category names numbered in the order they were added.",
    .tp_methods = Vocabulary_methods,
    .tp_as_sequence = &Vocabulary_as_sequence,
    .tp_new = Vocabulary_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_textcodes", "Category text without a Python object per element.",
    -1, NULL,
};

PyMODINIT_FUNC PyInit__textcodes(void) {
    if (PyType_Ready(&VocabularyType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Vocabulary", (PyObject *)&VocabularyType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
