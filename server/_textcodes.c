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
 *
 * decode_infer() reads a ModelInfer request from its wire bytes in one pass, without a
 * protobuf message or a Python call per tensor: the common forms (tritonclient's raw
 * contents, or typed contents, with no parameters) become the decoded request's fields,
 * each tensor a numpy array.
 * Anything else, including every request the decoder would refuse, gives None, and the
 * caller takes the plain path through the protobuf message (server/oip_codec.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

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

/* UTF-8 text as str; NULL with no exception set when it is not valid UTF-8 */
static PyObject *utf8_or_null(const char *p, Py_ssize_t n) {
    PyObject *text = PyUnicode_DecodeUTF8(p, n, "strict");
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear();
    return text;
}

/* the str of one element: the vocabulary's own object when known (its slot, id + 1, in
 * *slot; 0 when unknown); NULL with no exception set when it is not valid UTF-8 */
static PyObject *element_str(Vocabulary *v, const char *p, Py_ssize_t n, int64_t *slot) {
    int32_t s = find(v, p, n);
    *slot = (int64_t)s + 1;
    if (s >= 0)
        return Py_NewRef(v->words[s]);
    return utf8_or_null(p, n);
}

/* the count elements of a raw BYTES buffer into items (each NULL or None before; a new
 * reference after) and their slots into ids. 0: done; -1: a buffer not handled here (no
 * exception set), or an error (set); items set so far stay for the caller to release */
static int split_texts(Vocabulary *v, const unsigned char *buf, Py_ssize_t size,
                       Py_ssize_t count, PyObject **items, int64_t *ids) {
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (size - pos < 4)
            return -1;
        uint32_t n = (uint32_t)buf[pos] | (uint32_t)buf[pos + 1] << 8 |
                     (uint32_t)buf[pos + 2] << 16 | (uint32_t)buf[pos + 3] << 24;
        pos += 4;
        if ((Py_ssize_t)n > size - pos)
            return -1;
        PyObject *item = element_str(v, (const char *)buf + pos, (Py_ssize_t)n, &ids[i]);
        if (item == NULL)
            return -1;
        Py_XSETREF(items[i], item);
        pos += n;
    }
    return pos == size ? 0 : -1;
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
    PyObject *items = PyList_New(count); /* its items start as NULL */
    if (items != NULL &&
        split_texts(v, raw.buf, raw.len, count, PySequence_Fast_ITEMS(items), idv.buf) < 0)
        Py_CLEAR(items);
    PyBuffer_Release(&raw);
    PyBuffer_Release(&idv);
    if (items == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return items;
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

/* ---- ModelInfer requests from their wire bytes ---------------------------------------- */

enum { KIND_INT, KIND_FP32, KIND_FP64, KIND_BYTES };

typedef struct {
    const char *name;
    int typenum;
    int itemsize;
    int kind;
    int field;  /* of InferTensorContents for typed contents */
    int64_t lo; /* the range of an integer type's values */
    uint64_t hi;
} WireType;

/* the datatypes decoded here; BOOL and FP16 take the plain path */
static const WireType WIRE_TYPES[] = {
    {"UINT8", NPY_UINT8, 1, KIND_INT, 4, 0, UINT8_MAX},
    {"UINT16", NPY_UINT16, 2, KIND_INT, 4, 0, UINT16_MAX},
    {"UINT32", NPY_UINT32, 4, KIND_INT, 4, 0, UINT32_MAX},
    {"UINT64", NPY_UINT64, 8, KIND_INT, 5, 0, UINT64_MAX},
    {"INT8", NPY_INT8, 1, KIND_INT, 2, INT8_MIN, INT8_MAX},
    {"INT16", NPY_INT16, 2, KIND_INT, 2, INT16_MIN, INT16_MAX},
    {"INT32", NPY_INT32, 4, KIND_INT, 2, INT32_MIN, INT32_MAX},
    {"INT64", NPY_INT64, 8, KIND_INT, 3, INT64_MIN, INT64_MAX},
    {"FP32", NPY_FLOAT32, 4, KIND_FP32, 6, 0, 0},
    {"FP64", NPY_FLOAT64, 8, KIND_FP64, 7, 0, 0},
    {"BYTES", NPY_OBJECT, 0, KIND_BYTES, 8, 0, 0},
};
#define N_WIRE_TYPES (sizeof(WIRE_TYPES) / sizeof(WIRE_TYPES[0]))
#define MAX_TENSORS 256 /* more inputs or outputs: the plain path */
#define MAX_DIMS 32

/* set by configure(): the Python objects a decoded request is made of */
static PyObject *tensor_type = NULL;     /* server.core.Tensor(name, datatype, data) */
static PyObject *text_array_type = NULL; /* server.textcodes.TextArray */
static PyObject *wire_datatypes[N_WIRE_TYPES]; /* server.datatypes.Datatype of each */
static PyObject *slots_attr = NULL;      /* "slots" */

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Span;

/* 0, or -1 for a varint that runs past the end or over ten bytes */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end)
            return -1;
        uint8_t b = *p++;
        value |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *out = value;
            return 0;
        }
    }
    return -1;
}

/* a field's tag: as protobuf reads it, at most five bytes and 32 bits */
static inline int read_tag(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *start = *pp;
    if (read_varint(pp, end, out) < 0 || *pp - start > 5 || *out > UINT32_MAX)
        return -1;
    return 0;
}

/* a length-delimited field's bytes; -1 when they run past the end */
static inline int read_span(const uint8_t **pp, const uint8_t *end, Span *span) {
    uint64_t n;
    if (read_varint(pp, end, &n) < 0 || n > (uint64_t)(end - *pp))
        return -1;
    span->p = *pp;
    span->n = (Py_ssize_t)n;
    *pp += n;
    return 0;
}

/* a proto3 string as str; NULL with no exception set when it is not valid UTF-8 */
static PyObject *span_str(Span s) { return utf8_or_null((const char *)s.p, s.n); }

typedef struct {
    Span name, datatype, contents;
    int has_contents;
    npy_intp dims[MAX_DIMS];
    int ndim;
} WireInput;

/* 1: parsed; 0: not a form decoded here */
static int parse_input(Span msg, WireInput *in) {
    const uint8_t *p = msg.p, *end = msg.p + msg.n;
    in->name.n = in->datatype.n = 0;
    in->ndim = in->has_contents = 0;
    while (p < end) {
        uint64_t key;
        if (read_tag(&p, end, &key) < 0)
            return 0;
        uint64_t field = key >> 3, wire = key & 7;
        if (field == 3 && wire == 0) { /* one shape value, unpacked */
            uint64_t d;
            if (read_varint(&p, end, &d) < 0 || in->ndim == MAX_DIMS ||
                d > (uint64_t)NPY_MAX_INTP)
                return 0; /* a negative dimension among them: the plain path says so */
            in->dims[in->ndim++] = (npy_intp)d;
            continue;
        }
        if (wire != 2)
            return 0;
        Span s;
        if (read_span(&p, end, &s) < 0)
            return 0;
        if (field == 1) {
            in->name = s;
        } else if (field == 2) {
            in->datatype = s;
        } else if (field == 3) { /* packed shape */
            const uint8_t *q = s.p, *qend = s.p + s.n;
            while (q < qend) {
                uint64_t d;
                if (read_varint(&q, qend, &d) < 0 || in->ndim == MAX_DIMS ||
                    d > (uint64_t)NPY_MAX_INTP)
                    return 0;
                in->dims[in->ndim++] = (npy_intp)d;
            }
        } else if (field == 5 && !in->has_contents) {
            in->contents = s;
            in->has_contents = 1;
        } else {
            return 0; /* parameters, or contents sent in parts */
        }
    }
    return 1;
}

/* the element count, or -1 when the shape is one the plain path refuses (or empty) */
static Py_ssize_t element_count(const WireInput *in, Py_ssize_t max_elements,
                                Py_ssize_t max_batch) {
    if (in->ndim == 0 || in->dims[0] > max_batch)
        return -1;
    Py_ssize_t count = 1;
    for (int k = 0; k < in->ndim; k++) {
        npy_intp d = in->dims[k];
        if (d <= 0 || d > max_elements)
            return -1;
        count *= d; /* both at most max_elements, which fits in 31 bits... */
        if (count > max_elements)
            return -1; /* ...and so does every product checked here */
    }
    return count;
}

/* a raw BYTES tensor: a plain object array for one element, a TextArray with its slots for
 * more (as server.textcodes.split_known gives); NULL and no exception: not handled */
static PyObject *decode_text(Vocabulary *v, Span raw, const WireInput *in, Py_ssize_t count) {
    if (count > raw.n / 4)
        return NULL;
    PyObject *slots = NULL;
    int64_t one_slot;
    int64_t *ids = &one_slot;
    if (count > 1) {
        npy_intp n = count;
        slots = PyArray_SimpleNew(1, &n, NPY_INT64);
        if (slots == NULL)
            return NULL;
        ids = PyArray_DATA((PyArrayObject *)slots);
    }
    PyTypeObject *type = count > 1 ? (PyTypeObject *)text_array_type : &PyArray_Type;
    PyArray_Descr *descr = PyArray_DescrFromType(NPY_OBJECT);
    PyObject *arr = PyArray_NewFromDescr(type, descr, in->ndim, (npy_intp *)in->dims, NULL,
                                         NULL, 0, NULL);
    if (arr == NULL) {
        Py_XDECREF(slots);
        return NULL;
    }
    if (split_texts(v, raw.p, raw.n, count, PyArray_DATA((PyArrayObject *)arr), ids) < 0)
        goto unhandled; /* malformed, not UTF-8, or out of memory: the exception says */
    if (slots != NULL) {
        if (PyObject_SetAttr(arr, slots_attr, slots) < 0)
            goto unhandled;
        Py_DECREF(slots);
        PyArray_CLEARFLAGS((PyArrayObject *)arr, NPY_ARRAY_WRITEABLE);
    }
    return arr;
unhandled:
    Py_DECREF(arr); /* items not yet set are NULL or None: freeing skips or releases them */
    Py_XDECREF(slots);
    return NULL;
}

static int all_finite(const WireType *t, const uint8_t *p, Py_ssize_t count) {
    if (t->kind == KIND_FP32) {
        for (Py_ssize_t i = 0; i < count; i++) {
            float f;
            memcpy(&f, p + 4 * i, 4);
            if (!isfinite(f))
                return 0;
        }
    } else if (t->kind == KIND_FP64) {
        for (Py_ssize_t i = 0; i < count; i++) {
            double f;
            memcpy(&f, p + 8 * i, 8);
            if (!isfinite(f))
                return 0;
        }
    }
    return 1;
}

/* typed contents: the datatype's own field of InferTensorContents and no other, packed;
 * NULL and no exception: not handled */
static PyObject *decode_typed(Vocabulary *v, Span contents, const WireType *t,
                              const WireInput *in, Py_ssize_t count) {
    const uint8_t *p = contents.p, *end = contents.p + contents.n;
    Span values = {p, 0};
    int seen = 0;
    Py_ssize_t n_texts = 0;
    while (p < end) { /* find the field, and count BYTES elements */
        uint64_t key;
        Span s;
        if (read_tag(&p, end, &key) < 0 || (key & 7) != 2 || read_span(&p, end, &s) < 0 ||
            (int)(key >> 3) != t->field)
            return NULL; /* another field, or one sent unpacked */
        if (t->kind == KIND_BYTES) {
            n_texts++;
        } else if (seen++) {
            return NULL; /* packed in several parts */
        }
        values = s;
    }
    if (t->kind == KIND_BYTES) {
        if (n_texts != count)
            return NULL;
        PyObject *arr = PyArray_SimpleNew(in->ndim, (npy_intp *)in->dims, NPY_OBJECT);
        if (arr == NULL)
            return NULL;
        PyObject **items = PyArray_DATA((PyArrayObject *)arr);
        p = contents.p;
        for (Py_ssize_t i = 0; i < count; i++) { /* the walk above checked every step */
            uint64_t key;
            Span s;
            int64_t slot;
            PyObject *item = NULL;
            if (read_tag(&p, end, &key) == 0 && read_span(&p, end, &s) == 0)
                item = element_str(v, (const char *)s.p, s.n, &slot);
            if (item == NULL) {
                Py_DECREF(arr);
                return NULL;
            }
            Py_XSETREF(items[i], item);
        }
        return arr;
    }
    if (t->kind != KIND_INT) { /* floats: fixed width */
        if (values.n != count * t->itemsize || !all_finite(t, values.p, count))
            return NULL;
        PyObject *arr = PyArray_SimpleNew(in->ndim, (npy_intp *)in->dims, t->typenum);
        if (arr != NULL && values.n)
            memcpy(PyArray_DATA((PyArrayObject *)arr), values.p, (size_t)values.n);
        return arr;
    }
    if (values.n < count) /* a varint takes at least a byte: allocate nothing */
        return NULL;
    PyObject *arr = PyArray_SimpleNew(in->ndim, (npy_intp *)in->dims, t->typenum);
    if (arr == NULL)
        return NULL;
    char *out = PyArray_DATA((PyArrayObject *)arr);
    const uint8_t *q = values.p, *qend = values.p + values.n;
    int is_signed = t->field == 2 || t->field == 3;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t raw;
        if (read_varint(&q, qend, &raw) < 0)
            goto unhandled;
        if (t->field == 2 || t->field == 4) /* int32 and uint32 fields keep 32 bits */
            raw = t->field == 2 ? (uint64_t)(int64_t)(int32_t)(uint32_t)raw : (uint32_t)raw;
        if (is_signed ? ((int64_t)raw < t->lo || (int64_t)raw > (int64_t)t->hi) : raw > t->hi)
            goto unhandled; /* out of the datatype's range: the plain path says so */
        switch (t->itemsize) {
        case 1: { uint8_t x = (uint8_t)raw; memcpy(out + i, &x, 1); break; }
        case 2: { uint16_t x = (uint16_t)raw; memcpy(out + 2 * i, &x, 2); break; }
        case 4: { uint32_t x = (uint32_t)raw; memcpy(out + 4 * i, &x, 4); break; }
        default: memcpy(out + 8 * i, &raw, 8);
        }
    }
    if (q != qend)
        goto unhandled; /* more values than the shape holds */
    return arr;
unhandled:
    Py_DECREF(arr);
    return NULL;
}

/* one input as a Tensor; NULL and no exception: not handled */
static PyObject *decode_tensor(Vocabulary *v, Span msg, const Span *raw,
                               Py_ssize_t max_elements, Py_ssize_t max_batch) {
    WireInput in;
    if (!parse_input(msg, &in) || (raw != NULL) == in.has_contents)
        return NULL; /* both raw and typed contents, or neither: the plain path's error */
    const WireType *t = NULL;
    Py_ssize_t type_index = 0;
    for (; type_index < (Py_ssize_t)N_WIRE_TYPES; type_index++) {
        const WireType *c = &WIRE_TYPES[type_index];
        if ((size_t)in.datatype.n == strlen(c->name) &&
            memcmp(in.datatype.p, c->name, (size_t)in.datatype.n) == 0) {
            t = c;
            break;
        }
    }
    if (t == NULL)
        return NULL;
    Py_ssize_t count = element_count(&in, max_elements, max_batch);
    if (count < 0)
        return NULL;
    PyObject *data;
    if (raw == NULL) {
        data = decode_typed(v, in.contents, t, &in, count);
    } else if (t->kind == KIND_BYTES) {
        data = decode_text(v, *raw, &in, count);
    } else {
        if (raw->n != count * t->itemsize || !all_finite(t, raw->p, count))
            return NULL;
        data = PyArray_SimpleNew(in.ndim, in.dims, t->typenum);
        if (data != NULL)
            memcpy(PyArray_DATA((PyArrayObject *)data), raw->p, (size_t)raw->n);
    }
    if (data == NULL)
        return NULL;
    PyObject *name = span_str(in.name);
    if (name == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    PyObject *args[3] = {name, wire_datatypes[type_index], data};
    PyObject *tensor = PyObject_Vectorcall(tensor_type, args, 3, NULL);
    Py_DECREF(name);
    Py_DECREF(data);
    return tensor;
}

/* the name of a requested output; NULL and no exception: not handled */
static PyObject *output_name(Span msg) {
    const uint8_t *p = msg.p, *end = msg.p + msg.n;
    Span name = {p, 0};
    while (p < end) {
        uint64_t key;
        Span s;
        if (read_tag(&p, end, &key) < 0 || (key & 7) != 2 || read_span(&p, end, &s) < 0)
            return NULL;
        if ((key >> 3) != 1)
            return NULL; /* parameters */
        name = s;
    }
    return span_str(name);
}

static PyObject *decode_infer(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyObject_TypeCheck(args[0], &VocabularyType) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "decode_infer(vocabulary, data: bytes, max_elements, max_batch)");
        return NULL;
    }
    if (tensor_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "decode_infer before configure");
        return NULL;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    Py_RETURN_NONE; /* numbers travel little-endian: the plain path converts them */
#endif
    Vocabulary *v = (Vocabulary *)args[0];
    Py_ssize_t max_elements = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_batch = PyLong_AsSsize_t(args[3]);
    if ((max_elements == -1 || max_batch == -1) && PyErr_Occurred())
        return NULL;
    if (max_elements > INT32_MAX)
        max_elements = INT32_MAX; /* keeps element_count's products in range */
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(args[1]);
    const uint8_t *end = p + PyBytes_GET_SIZE(args[1]);
    Span strings[3] = {{p, 0}, {p, 0}, {p, 0}}; /* model_name, model_version, id */
    Span inputs[MAX_TENSORS], outputs[MAX_TENSORS], raws[MAX_TENSORS];
    Py_ssize_t n_inputs = 0, n_outputs = 0, n_raws = 0;
    while (p < end) {
        uint64_t key;
        Span s;
        if (read_tag(&p, end, &key) < 0 || (key & 7) != 2 || read_span(&p, end, &s) < 0)
            Py_RETURN_NONE;
        switch (key >> 3) {
        case 1: case 2: case 3:
            strings[(key >> 3) - 1] = s;
            break;
        case 5:
            if (n_inputs == MAX_TENSORS)
                Py_RETURN_NONE;
            inputs[n_inputs++] = s;
            break;
        case 6:
            if (n_outputs == MAX_TENSORS)
                Py_RETURN_NONE;
            outputs[n_outputs++] = s;
            break;
        case 7:
            if (n_raws == MAX_TENSORS)
                Py_RETURN_NONE;
            raws[n_raws++] = s;
            break;
        default: /* parameters, or a field this message does not have */
            Py_RETURN_NONE;
        }
    }
    if (n_inputs == 0 || (n_raws && n_raws != n_inputs))
        Py_RETURN_NONE; /* a request the plain path refuses */
    PyObject *result = NULL, *tensors = NULL, *names = NULL;
    PyObject *text[3] = {NULL, NULL, NULL};
    tensors = PyList_New(n_inputs);
    names = PyList_New(n_outputs);
    if (tensors == NULL || names == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n_inputs; i++) {
        PyObject *tensor =
            decode_tensor(v, inputs[i], n_raws ? &raws[i] : NULL, max_elements, max_batch);
        if (tensor == NULL)
            goto done;
        PyList_SET_ITEM(tensors, i, tensor);
    }
    for (Py_ssize_t i = 0; i < n_outputs; i++) {
        PyObject *name = output_name(outputs[i]);
        if (name == NULL)
            goto done;
        PyList_SET_ITEM(names, i, name);
    }
    for (int k = 0; k < 3; k++) {
        text[k] = span_str(strings[k]);
        if (text[k] == NULL)
            goto done;
    }
    result = PyTuple_Pack(6, text[0], text[1], tensors, names, text[2],
                          n_raws ? Py_True : Py_False);
done:
    Py_XDECREF(tensors);
    Py_XDECREF(names);
    for (int k = 0; k < 3; k++)
        Py_XDECREF(text[k]);
    if (result == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return result;
}

static PyObject *configure(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[1]) ||
        !PyType_IsSubtype((PyTypeObject *)args[1], &PyArray_Type) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(tensor_type, text_array_type, datatypes: dict)");
        return NULL;
    }
    PyObject *found[N_WIRE_TYPES];
    for (size_t k = 0; k < N_WIRE_TYPES; k++) {
        found[k] = PyDict_GetItemString(args[2], WIRE_TYPES[k].name); /* borrowed */
        if (found[k] == NULL) {
            PyErr_Format(PyExc_KeyError, "no datatype %s", WIRE_TYPES[k].name);
            return NULL;
        }
    }
    for (size_t k = 0; k < N_WIRE_TYPES; k++)
        Py_XSETREF(wire_datatypes[k], Py_NewRef(found[k]));
    Py_XSETREF(tensor_type, Py_NewRef(args[0]));
    Py_XSETREF(text_array_type, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"decode_infer", (PyCFunction)(void (*)(void))decode_infer, METH_FASTCALL,
     "decode_infer(vocabulary, data, max_elements, max_batch) -> tuple | None: "
     "(model_name, model_version, tensors, output names, id, raw output) of a ModelInfer "
     "request with raw or typed contents and no parameters, read from its wire bytes; None "
     "for any request left to the plain path."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(tensor_type, text_array_type, datatypes): what decode_infer builds."},
    {NULL, NULL, 0, NULL},
};



static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_textcodes", "Category text without a Python object per element.",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__textcodes(void) {
    import_array();
    slots_attr = PyUnicode_InternFromString("slots");
    if (slots_attr == NULL || PyType_Ready(&VocabularyType) < 0)
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
