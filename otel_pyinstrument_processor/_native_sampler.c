/* The sampler mode's native stack reader: a POSIX thread, not a Python one, that reads the
 * registered request threads' Python stacks every few milliseconds without taking the GIL.
 *
 * Why: the Python sampling thread (stack_sampler.py) needs the GIL to read a stack, and a
 * computing request thread gives it up only at its switch interval or when it blocks, so
 * each tick costs that thread a GIL hand-off (two thread switches) and makes frame objects
 * for its frames; Pyroscope's native sampler reads stacks without the GIL and was measured
 * cheaper per request (docs/performance.md). This thread never takes the GIL and never
 * runs Python code.
 *
 * How, safely: the thread reads the other threads' interpreter frames (CPython 3.11's
 * _PyInterpreterFrame chain from PyThreadState.cframe->current_frame) while they run, so
 * any of that memory may be freed under it. Every read of another thread's memory goes
 * through process_vm_readv(2) on this process (or pread of /proc/self/mem where that is
 * refused), which fails with EFAULT instead of faulting, as py-spy does from outside. The
 * thread's frames are mostly read in one copy of its data stack chunk, a near-instant
 * snapshot; a computing thread changes its innermost frames every microsecond, so a stack
 * is not required to be unchanged after the walk (it never would be): every frame's code
 * object read must be a code object and the walk must end at the thread's outermost frame
 * (read_stack), or the walk is retried once, then dropped.
 *
 * A sample is a list of indices into a table of the code objects seen (by address, with
 * their name, file and first line copied out, and checked again at every sighting, so that
 * a freed code object's address reused by another is told apart), the seconds since the
 * request's previous sample, and whether the thread was on the CPU: holding the GIL, or
 * using its CPU clock most of the time since the previous sample (C code without the GIL).
 * The request's own thread turns its samples into pyinstrument-style frame identifiers
 * when it ends (end()), with the GIL, building each code's identifier once.
 *
 * CPython 3.11 only (its frame layout); setup.py builds this only there, and stack_sampler
 * falls back to the Python sampling thread wherever it is missing or cannot read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "the native sampler reads CPython 3.11's frames"
#endif

#define Py_BUILD_CORE 1
#undef _PyGC_FINALIZED /* pycore_gc.h defines its own */
#include "internal/pycore_frame.h"
#include "internal/pycore_runtime.h"
#undef Py_BUILD_CORE

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 2000         /* deeper stacks keep their innermost frames, as in Python */
#define MAX_CODES 32768        /* distinct code objects remembered; then <unknown> frames */
#define CODE_TABLE (MAX_CODES * 2)
#define MAX_NAME 1024          /* bytes of a name or file name copied */
#define CHUNK_COPY (64 * 1024) /* bytes of the data stack read at once */
#define IDLE_AFTER 1.0         /* seconds without a request before the thread sleeps */
#define UNKNOWN_CODE 0xFFFFFFFFu

/* ---- safe reads of this process's memory ---------------------------------------------- */

static pid_t self_pid;
static int mem_fd = -1;     /* /proc/self/mem, where process_vm_readv is refused */
static int use_vm_readv = 1;

static int
safe_read(void *dst, uintptr_t src, size_t size)
{
    if (size == 0) {
        return 0;
    }
    if (use_vm_readv) {
        struct iovec local = {dst, size};
        struct iovec remote = {(void *)src, size};
        ssize_t got = process_vm_readv(self_pid, &local, 1, &remote, 1, 0);
        return got == (ssize_t)size ? 0 : -1;
    }
    ssize_t got = pread(mem_fd, dst, size, (off_t)src);
    return got == (ssize_t)size ? 0 : -1;
}

/* Pick the reader: process_vm_readv on ourselves, else /proc/self/mem; -1 if neither. */
static int
setup_reader(void)
{
    static volatile uint64_t probe = 0x5079737472756D;
    uint64_t copy = 0;
    self_pid = getpid();
    use_vm_readv = 1;
    if (safe_read(&copy, (uintptr_t)&probe, sizeof copy) == 0 && copy == probe) {
        return 0;
    }
    use_vm_readv = 0;
    if (mem_fd >= 0) {
        close(mem_fd);
    }
    mem_fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (mem_fd >= 0 && safe_read(&copy, (uintptr_t)&probe, sizeof copy) == 0 &&
        copy == probe) {
        return 0;
    }
    return -1;
}

/* ---- the code table ------------------------------------------------------------------- */

typedef struct {
    uintptr_t code, filename, name, qualname; /* addresses, checked at each sighting */
    int firstlineno;
    PyObject *identifier; /* built under the GIL on first use (end()) */
    /* The three strings, copied as they are stored: kind 1, 2 or 4 bytes a character. */
    char *text[3];
    Py_ssize_t length[3];
    int kind[3];
} CodeEntry;

static CodeEntry *codes;        /* MAX_CODES entries */
static uint32_t *code_slots;    /* open addressing: index + 1, 0 = free */
static uint32_t n_codes;

static uint32_t
hash_address(uintptr_t address)
{
    uint64_t h = (uint64_t)address * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 40) & (CODE_TABLE - 1);
}

/* Copy the string object at `address` into entry->text[which]; 0 if done. */
static int
copy_string(CodeEntry *entry, int which, uintptr_t address)
{
    PyCompactUnicodeObject header;
    if (address == 0 || safe_read(&header, address, sizeof header) != 0) {
        return -1;
    }
    PyASCIIObject *ascii = &header._base;
    if (ascii->ob_base.ob_type != &PyUnicode_Type || !ascii->state.compact) {
        return -1;
    }
    int kind = ascii->state.kind;
    if (kind != 1 && kind != 2 && kind != 4) {
        return -1;
    }
    Py_ssize_t length = ascii->length;
    if (length < 0) {
        return -1;
    }
    if (length > MAX_NAME / kind) {
        length = MAX_NAME / kind;
    }
    uintptr_t data = address + (ascii->state.ascii ? sizeof(PyASCIIObject)
                                                   : sizeof(PyCompactUnicodeObject));
    char *text = malloc((size_t)(length * kind) + 1);
    if (text == NULL || safe_read(text, data, (size_t)(length * kind)) != 0) {
        free(text);
        return -1;
    }
    entry->text[which] = text;
    entry->length[which] = length;
    entry->kind[which] = kind;
    return 0;
}

/* The table index of the code object at `address`, whose fields were read into `code`;
 * a new entry when the address is new or now holds another code object. */
static uint32_t
code_index(uintptr_t address, const PyCodeObject *code)
{
    uint32_t slot = hash_address(address);
    for (;;) {
        uint32_t index = code_slots[slot];
        if (index == 0) {
            break;
        }
        CodeEntry *entry = &codes[index - 1];
        if (entry->code == address) {
            if (entry->filename == (uintptr_t)code->co_filename &&
                entry->name == (uintptr_t)code->co_name &&
                entry->qualname == (uintptr_t)code->co_qualname &&
                entry->firstlineno == code->co_firstlineno) {
                return index - 1;
            }
            break; /* the address was freed and reused: a new entry replaces it here */
        }
        slot = (slot + 1) & (CODE_TABLE - 1);
    }
    if (n_codes >= MAX_CODES) {
        return UNKNOWN_CODE;
    }
    CodeEntry *entry = &codes[n_codes];
    memset(entry, 0, sizeof *entry);
    entry->code = address;
    entry->filename = (uintptr_t)code->co_filename;
    entry->name = (uintptr_t)code->co_name;
    entry->qualname = (uintptr_t)code->co_qualname;
    entry->firstlineno = code->co_firstlineno;
    if (copy_string(entry, 0, entry->name) != 0 ||
        copy_string(entry, 1, entry->filename) != 0 ||
        copy_string(entry, 2, entry->qualname) != 0) {
        for (int i = 0; i < 3; i++) {
            free(entry->text[i]);
        }
        return UNKNOWN_CODE;
    }
    code_slots[slot] = ++n_codes;
    return n_codes - 1;
}

/* ---- requests ------------------------------------------------------------------------- */

typedef struct {
    double elapsed;
    uint32_t offset, depth; /* into the request's frames, root first */
    uint8_t waiting;
} Sample;

typedef struct {
    int used;
    uint64_t serial; /* the handle's other half: a slot reused is not the old request */
    uintptr_t tstate;
    uintptr_t root_frame; /* the thread's outermost frame when it registered */
    clockid_t cpu_clock;
    int has_cpu_clock;
    double started, last, next_due, interval, deadline, cpu_last;
    int stopped_early;
    Sample *samples;
    size_t n_samples, samples_cap;
    uint32_t *frames;
    size_t n_frames, frames_cap;
} Request;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake; /* on CLOCK_MONOTONIC: init_wake() */
static Request *requests;
static size_t n_slots;    /* allocated */
static size_t n_active;
static uint64_t next_serial = 1;
static int thread_running, stopping, idle;
static pthread_t thread;
static double tick_interval = 0.01;
static double sleeping_until; /* the due time the thread waits for, 0 when it does not */
static double sleep_interval; /* the tick interval that due time is at */
static uint64_t passes, samples_taken, reads_failed;

static void
init_wake(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&wake, &attr);
    pthread_condattr_destroy(&attr);
}

static double
monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double
clock_seconds(clockid_t clock, int *ok)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0) {
        *ok = 0;
        return 0.0;
    }
    *ok = 1;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
free_request(Request *request)
{
    free(request->samples);
    free(request->frames);
    memset(request, 0, sizeof *request);
}

/* ---- reading a stack ------------------------------------------------------------------ */

typedef struct {
    uintptr_t code;
    _Py_CODEUNIT *prev_instr;
    char owner;
} FrameRead;

static FrameRead walk[MAX_DEPTH];
static uint32_t walk_codes[MAX_DEPTH];
static char chunk_copy[CHUNK_COPY];

/* The code objects of `tstate`'s stack, innermost first, into walk_codes; the depth, or
 * -1 if the stack could not be read consistently: a frame that was not a frame, or a walk
 * that did not end at `root_frame` (the thread's outermost frame, which outlives the
 * request): e.g. a generator's frame read just after it suspended, its caller unlinked. */
static int
read_stack(uintptr_t tstate, uintptr_t root_frame)
{
    PyThreadState ts;
    if (safe_read(&ts, tstate, sizeof ts) != 0 || ts.cframe == NULL) {
        return -1;
    }
    _PyCFrame cframe;
    if (safe_read(&cframe, (uintptr_t)ts.cframe, sizeof cframe) != 0) {
        return -1;
    }
    /* Most frames live in the thread's current data stack chunk: read it in one go. */
    uintptr_t chunk_start = (uintptr_t)ts.datastack_chunk;
    uintptr_t chunk_end = (uintptr_t)ts.datastack_top;
    if (chunk_start == 0 || chunk_end <= chunk_start ||
        chunk_end - chunk_start > CHUNK_COPY ||
        safe_read(chunk_copy, chunk_start, chunk_end - chunk_start) != 0) {
        chunk_end = chunk_start = 0;
    }
    size_t copied = chunk_end - chunk_start;
    int depth = 0;
    uintptr_t address = (uintptr_t)cframe.current_frame;
    uintptr_t outermost = 0;
    while (address != 0 && depth < MAX_DEPTH) {
        _PyInterpreterFrame copy;
        const _PyInterpreterFrame *frame;
        /* (Written so that no garbage address, read from a torn frame, can overflow.) */
        if (address >= chunk_start && copied >= sizeof copy &&
            address - chunk_start <= copied - sizeof copy) {
            frame = (const _PyInterpreterFrame *)(chunk_copy + (address - chunk_start));
        }
        else if (safe_read(&copy, address, sizeof copy) == 0) {
            frame = &copy;
        }
        else {
            return -1;
        }
        outermost = address;
        walk[depth].code = (uintptr_t)frame->f_code;
        walk[depth].prev_instr = frame->prev_instr;
        walk[depth].owner = frame->owner;
        depth++;
        address = (uintptr_t)frame->previous;
    }
    if (depth > 0 && depth < MAX_DEPTH && outermost != root_frame) {
        return -1; /* cut short (a deeper stack keeps its innermost MAX_DEPTH frames) */
    }
    /* The code objects: fields up to co_code_adaptive (the first instruction's address
     * tells an incomplete frame, one still being set up, which tracebacks skip too). */
    int kept = 0;
    for (int i = 0; i < depth; i++) {
        PyCodeObject code;
        size_t size = offsetof(PyCodeObject, co_code_adaptive);
        if (walk[i].code == 0 || safe_read(&code, walk[i].code, size) != 0 ||
            code.ob_base.ob_base.ob_type != &PyCode_Type) {
            return -1;
        }
        _Py_CODEUNIT *first =
            (_Py_CODEUNIT *)(walk[i].code + offsetof(PyCodeObject, co_code_adaptive));
        if (walk[i].owner != FRAME_OWNED_BY_GENERATOR &&
            walk[i].prev_instr < first + code._co_firsttraceable) {
            continue;
        }
        walk_codes[kept++] = code_index(walk[i].code, &code);
    }
    return kept;
}

static int
thread_holds_gil(uintptr_t tstate)
{
    struct _gil_runtime_state *gil = &_PyRuntime.ceval.gil;
    return _Py_atomic_load_relaxed(&gil->locked) &&
           (uintptr_t)_Py_atomic_load_relaxed(&gil->last_holder) == tstate;
}

static int
append_sample(Request *request, int depth, double elapsed, int waiting)
{
    if (request->n_samples == request->samples_cap) {
        size_t cap = request->samples_cap ? request->samples_cap * 2 : 8;
        Sample *grown = realloc(request->samples, cap * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        request->samples = grown;
        request->samples_cap = cap;
    }
    if (request->n_frames + (size_t)depth > request->frames_cap) {
        size_t cap = request->frames_cap ? request->frames_cap * 2 : 64;
        while (cap < request->n_frames + (size_t)depth) {
            cap *= 2;
        }
        uint32_t *grown = realloc(request->frames, cap * sizeof *grown);
        if (grown == NULL) {
            return -1;
        }
        request->frames = grown;
        request->frames_cap = cap;
    }
    Sample *sample = &request->samples[request->n_samples++];
    sample->elapsed = elapsed;
    sample->offset = (uint32_t)request->n_frames;
    sample->depth = (uint32_t)depth;
    sample->waiting = (uint8_t)waiting;
    for (int i = 0; i < depth; i++) { /* root first */
        request->frames[request->n_frames++] = walk_codes[depth - 1 - i];
    }
    return 0;
}

/* One pass over the requests (under the lock). */
static void
sample_all(void)
{
    double now = monotonic();
    double shortest = 0.0;
    passes++;
    for (size_t i = 0; i < n_slots; i++) {
        Request *request = &requests[i];
        if (!request->used) {
            continue;
        }
        if (shortest == 0.0 || request->interval < shortest) {
            shortest = request->interval;
        }
        if (now < request->next_due || request->stopped_early) {
            continue;
        }
        if (request->deadline > 0.0 && now > request->deadline) {
            request->stopped_early = 1;
            continue;
        }
        int holds_gil = thread_holds_gil(request->tstate);
        int depth = read_stack(request->tstate, request->root_frame);
        if (depth < 0) {
            depth = read_stack(request->tstate, request->root_frame);
        }
        double at = monotonic();
        if (depth < 0) {
            reads_failed++;
            continue; /* the time goes to the next sample */
        }
        if (depth == 0) {
            continue; /* no Python frame (a thread ending): nothing to attribute it to */
        }
        int waiting = !holds_gil;
        if (request->has_cpu_clock) {
            /* Without the GIL but computing most of the time since the previous sample:
             * C code that released the GIL (compression, hashing), not a wait. */
            int ok;
            double cpu = clock_seconds(request->cpu_clock, &ok);
            if (ok && waiting && cpu - request->cpu_last >= 0.9 * (at - request->last)) {
                waiting = 0;
            }
            if (ok) {
                request->cpu_last = cpu;
            }
            else {
                request->has_cpu_clock = 0; /* the thread is gone */
            }
        }
        if (append_sample(request, depth, now - request->last, waiting) != 0) {
            continue;
        }
        samples_taken++;
        request->last = now;
        double next = request->next_due + request->interval;
        request->next_due = next > now - request->interval * 0.5
                                ? next
                                : now - request->interval * 0.5;
    }
    if (shortest > 0.0) {
        tick_interval = shortest;
    }
}

static void *
run(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&lock);
    double due = monotonic();
    double last_busy = due;
    while (!stopping) {
        if (n_active == 0) {
            if (monotonic() - last_busy > IDLE_AFTER) {
                idle = 1;
                while (n_active == 0 && !stopping) {
                    pthread_cond_wait(&wake, &lock);
                }
                idle = 0;
                due = monotonic();
                continue;
            }
        }
        else {
            last_busy = monotonic();
        }
        double now = monotonic();
        due += tick_interval;
        if (due < now) {
            due = now; /* a tick later than a whole interval is not made up for */
        }
        /* Wait until the tick is due; register() wakes the thread early when a request
         * wants a shorter interval than the one it sleeps (then it waits again). */
        sleeping_until = due;
        sleep_interval = tick_interval;
        struct timespec at;
        at.tv_sec = (time_t)due;
        at.tv_nsec = (long)((due - (double)at.tv_sec) * 1e9);
        int woken = pthread_cond_timedwait(&wake, &lock, &at) != ETIMEDOUT;
        sleeping_until = 0.0;
        if (stopping) {
            break;
        }
        if (woken && monotonic() < due) {
            due = monotonic(); /* woken early: ticks at the new interval from now */
            continue;
        }
        if (n_active) {
            sample_all();
        }
    }
    thread_running = 0;
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* Start the thread if needed, or wake it from idling (under the lock); -1 on failure. */
static int
ensure_thread(void)
{
    if (thread_running) {
        stopping = 0; /* a stop() in progress: the thread goes on */
        if (idle) {
            pthread_cond_signal(&wake);
        }
        return 0;
    }
    stopping = 0;
    idle = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int failed = pthread_create(&thread, &attr, run, NULL);
    pthread_attr_destroy(&attr);
    if (failed) {
        return -1;
    }
    thread_running = 1;
    return 0;
}

static void
after_fork_in_child(void)
{
    /* The thread did not survive fork, and the requests were the parent's. */
    pthread_mutex_init(&lock, NULL);
    init_wake();
    for (size_t i = 0; i < n_slots; i++) {
        if (requests[i].used) {
            free_request(&requests[i]);
        }
    }
    n_active = 0;
    thread_running = stopping = idle = 0;
    sleeping_until = 0.0;
    if (setup_reader() != 0) {
        use_vm_readv = 1; /* reads fail: every request gets no sample, nothing breaks */
    }
}

/* ---- the Python API ------------------------------------------------------------------- */

static PyObject *identifier_factory; /* (name, filename, firstlineno, qualname) -> str */
static PyObject *wait_frame;         /* the identifier appended to a waiting sample */
static PyObject *unknown_frame;

PyDoc_STRVAR(register_doc,
"register(interval, max_duration, cpu_now) -> handle\n\n"
"Sample the calling thread every `interval` seconds from its next tick on (until\n"
"`max_duration` seconds, if > 0); `cpu_now`: its time.thread_time() now (read by the\n"
"caller anyway). Starts the sampling thread if needed.");

static PyObject *
py_register(PyObject *self, PyObject *args)
{
    double interval, max_duration, cpu_now;
    if (!PyArg_ParseTuple(args, "ddd", &interval, &max_duration, &cpu_now)) {
        return NULL;
    }
    if (!(interval > 0.0)) {
        PyErr_SetString(PyExc_ValueError, "interval must be > 0");
        return NULL;
    }
    PyThreadState *tstate = PyThreadState_Get();
    /* This thread's outermost frame (its own stack, read with the GIL: no tearing). */
    _PyInterpreterFrame *root = tstate->cframe->current_frame;
    while (root != NULL && root->previous != NULL) {
        root = root->previous;
    }
    clockid_t cpu_clock;
    int has_cpu_clock = pthread_getcpuclockid(pthread_self(), &cpu_clock) == 0;
    double now = monotonic();
    pthread_mutex_lock(&lock);
    size_t slot = n_slots;
    for (size_t i = 0; i < n_slots; i++) {
        if (!requests[i].used) {
            slot = i;
            break;
        }
    }
    if (slot == n_slots) {
        size_t count = n_slots ? n_slots * 2 : 64;
        Request *grown = realloc(requests, count * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&lock);
            return PyErr_NoMemory();
        }
        memset(grown + n_slots, 0, (count - n_slots) * sizeof *grown);
        requests = grown;
        n_slots = count;
    }
    Request *request = &requests[slot];
    memset(request, 0, sizeof *request);
    request->used = 1;
    request->serial = next_serial++;
    request->tstate = (uintptr_t)tstate;
    request->root_frame = (uintptr_t)root;
    request->cpu_clock = cpu_clock;
    request->has_cpu_clock = has_cpu_clock;
    request->cpu_last = cpu_now;
    request->started = request->last = now;
    request->next_due = now;
    /* The interval of the tick the thread now waits for (a registration may have
     * changed tick_interval since it began to wait). */
    double ticking = sleeping_until > 0.0 ? sleep_interval : tick_interval;
    if (interval > ticking * 1.5) {
        /* The thread ticks faster (other requests): a first sample at a random point of
         * this request's first interval, as a thread ticking at its interval would. */
        request->next_due += interval * drand48();
    }
    request->interval = interval;
    request->deadline = max_duration > 0.0 ? now + max_duration : 0.0;
    if (interval < tick_interval || n_active == 0) {
        tick_interval = interval;
        if (sleeping_until > now + interval) {
            pthread_cond_signal(&wake); /* it sleeps to a longer interval's tick */
        }
    }
    n_active++;
    uint64_t serial = request->serial;
    int failed = ensure_thread();
    if (failed) {
        free_request(request);
        n_active--;
    }
    pthread_mutex_unlock(&lock);
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "could not start the native sampling thread");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(((uint64_t)slot << 40) | serial);
}

/* The identifier of code table entry `index` (a new reference), built once. */
static PyObject *
identifier_of(uint32_t index)
{
    if (index == UNKNOWN_CODE) {
        Py_INCREF(unknown_frame);
        return unknown_frame;
    }
    CodeEntry *entry = &codes[index];
    if (entry->identifier == NULL) {
        PyObject *parts[3];
        for (int i = 0; i < 3; i++) {
            parts[i] =
                PyUnicode_FromKindAndData(entry->kind[i], entry->text[i], entry->length[i]);
            if (parts[i] == NULL) {
                for (int j = 0; j < i; j++) {
                    Py_DECREF(parts[j]);
                }
                return NULL;
            }
        }
        PyObject *identifier = PyObject_CallFunction(
            identifier_factory, "OOiO", parts[0], parts[1], entry->firstlineno, parts[2]);
        for (int i = 0; i < 3; i++) {
            Py_DECREF(parts[i]);
        }
        if (identifier == NULL) {
            return NULL;
        }
        entry->identifier = identifier;
    }
    Py_INCREF(entry->identifier);
    return entry->identifier;
}

PyDoc_STRVAR(end_doc,
"end(handle) -> (records, stopped_early)\n\n"
"Stop sampling the request `handle` and return its samples: a list of (stack, elapsed),\n"
"stack a list of frame identifiers, root first (a waiting sample ends in the wait frame),\n"
"elapsed the seconds since the previous sample; and whether max_duration stopped it.");

static PyObject *
py_end(PyObject *self, PyObject *arg)
{
    uint64_t handle = PyLong_AsUnsignedLongLong(arg);
    if (handle == (uint64_t)-1 && PyErr_Occurred()) {
        return NULL;
    }
    size_t slot = (size_t)(handle >> 40);
    uint64_t serial = handle & ((1ull << 40) - 1);
    Request taken;
    pthread_mutex_lock(&lock);
    if (slot >= n_slots || !requests[slot].used || requests[slot].serial != serial) {
        pthread_mutex_unlock(&lock);
        return Py_BuildValue("(OO)", Py_None, Py_False); /* not ours (a forked child's) */
    }
    taken = requests[slot];
    memset(&requests[slot], 0, sizeof requests[slot]);
    n_active--;
    pthread_mutex_unlock(&lock);
    /* The samples are this thread's now; the code table only grows, its entries stay. */
    PyObject *records = PyList_New((Py_ssize_t)taken.n_samples);
    if (records == NULL) {
        goto failed;
    }
    for (size_t i = 0; i < taken.n_samples; i++) {
        Sample *sample = &taken.samples[i];
        Py_ssize_t length = (Py_ssize_t)sample->depth + (sample->waiting ? 1 : 0);
        PyObject *stack = PyList_New(length);
        if (stack == NULL) {
            goto failed;
        }
        for (uint32_t j = 0; j < sample->depth; j++) {
            PyObject *identifier = identifier_of(taken.frames[sample->offset + j]);
            if (identifier == NULL) {
                Py_DECREF(stack);
                goto failed;
            }
            PyList_SET_ITEM(stack, j, identifier);
        }
        if (sample->waiting) {
            Py_INCREF(wait_frame);
            PyList_SET_ITEM(stack, length - 1, wait_frame);
        }
        PyObject *record = Py_BuildValue("(Nd)", stack, sample->elapsed);
        if (record == NULL) {
            goto failed;
        }
        PyList_SET_ITEM(records, (Py_ssize_t)i, record);
    }
    PyObject *result = Py_BuildValue("(NO)", records, taken.stopped_early ? Py_True : Py_False);
    free_request(&taken);
    return result;
failed:
    Py_XDECREF(records);
    free_request(&taken);
    return NULL;
}

PyDoc_STRVAR(stem_doc,
"stem(frame) -> list[str]\n\n"
"The identifiers of `frame` and its callers, root first, as frame.f_back would walk them\n"
"(a frame that has returned is linked to its caller's frame object), without making a\n"
"frame object for each: the stem of a profile started at `frame`. On the frame's thread.");

static PyObject *
py_stem(PyObject *self, PyObject *arg)
{
    if (!PyFrame_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "stem() takes a frame");
        return NULL;
    }
    uint32_t indices[MAX_DEPTH];
    int depth = 0;
    _PyInterpreterFrame *frame = ((PyFrameObject *)arg)->f_frame;
    pthread_mutex_lock(&lock); /* the code table: the sampling thread adds to it */
    while (frame != NULL && depth < MAX_DEPTH) {
        if (frame->owner == FRAME_OWNED_BY_GENERATOR || !_PyFrame_IsIncomplete(frame)) {
            indices[depth++] = code_index((uintptr_t)frame->f_code, frame->f_code);
        }
        if (frame->owner == FRAME_OWNED_BY_FRAME_OBJECT) {
            /* Returned: the frame was copied into its frame object, which holds the
             * caller's (take_ownership, which also clears the copy's frame_obj). */
            PyFrameObject *owner =
                (PyFrameObject *)((char *)frame - offsetof(PyFrameObject, _f_frame_data));
            PyFrameObject *back = owner->f_back;
            frame = back == NULL ? NULL : back->f_frame;
        }
        else {
            frame = frame->previous;
        }
    }
    pthread_mutex_unlock(&lock);
    /* Identifiers are built outside the lock: building one runs Python code, which may
     * let another thread run, and that one may wait for the lock holding the GIL. */
    PyObject *stem = PyList_New(depth);
    if (stem == NULL) {
        return NULL;
    }
    for (int i = 0; i < depth; i++) {
        PyObject *identifier = identifier_of(indices[depth - 1 - i]);
        if (identifier == NULL) {
            Py_DECREF(stem);
            return NULL;
        }
        PyList_SET_ITEM(stem, i, identifier);
    }
    return stem;
}

PyDoc_STRVAR(stop_doc, "stop()\n\nStop the sampling thread (it starts again at the next register()).");

static PyObject *
py_stop(PyObject *self, PyObject *unused)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&lock);
    stopping = 1;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    /* Detached: wait until it has left its loop (at most one interval). */
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&lock);
        int running = thread_running;
        pthread_mutex_unlock(&lock);
        if (!running) {
            break;
        }
        struct timespec nap = {0, 1000000};
        nanosleep(&nap, NULL);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stats_doc,
"stats() -> dict\n\nThe thread's counters: passes, samples, failed reads, active requests,\n"
"code objects known, whether it runs, and the reader ('process_vm_readv' or '/proc/self/mem').");

static PyObject *
py_stats(PyObject *self, PyObject *unused)
{
    pthread_mutex_lock(&lock);
    PyObject *result = Py_BuildValue(
        "{sKsKsKsnsIsOss}", "passes", (unsigned long long)passes, "samples",
        (unsigned long long)samples_taken, "failed_reads", (unsigned long long)reads_failed,
        "active", (Py_ssize_t)n_active, "codes", (unsigned int)n_codes, "running",
        thread_running ? Py_True : Py_False, "reader",
        use_vm_readv ? "process_vm_readv" : "/proc/self/mem");
    pthread_mutex_unlock(&lock);
    return result;
}

PyDoc_STRVAR(use_reader_doc,
"use_reader(name) -> bool\n\n"
"Read memory with 'process_vm_readv' or '/proc/self/mem' from now on (for tests; the\n"
"module picks the first that works when it loads); False if that one cannot read here.");

static PyObject *
py_use_reader(PyObject *self, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) {
        return NULL;
    }
    int vm_readv = strcmp(name, "process_vm_readv") == 0;
    if (!vm_readv && strcmp(name, "/proc/self/mem") != 0) {
        PyErr_Format(PyExc_ValueError, "unknown reader %R", arg);
        return NULL;
    }
    static volatile uint64_t probe = 0x5079737472756D;
    uint64_t copy = 0;
    int works;
    pthread_mutex_lock(&lock);
    if (!vm_readv && mem_fd < 0) {
        mem_fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    }
    int previous = use_vm_readv;
    use_vm_readv = vm_readv;
    works = (vm_readv || mem_fd >= 0) &&
            safe_read(&copy, (uintptr_t)&probe, sizeof copy) == 0 && copy == probe;
    if (!works) {
        use_vm_readv = previous;
    }
    pthread_mutex_unlock(&lock);
    return PyBool_FromLong(works);
}

static PyMethodDef methods[] = {
    {"use_reader", py_use_reader, METH_O, use_reader_doc},
    {"stem", py_stem, METH_O, stem_doc},
    {"register", py_register, METH_VARARGS, register_doc},
    {"end", py_end, METH_O, end_doc},
    {"stop", py_stop, METH_NOARGS, stop_doc},
    {"stats", py_stats, METH_NOARGS, stats_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc,
"The sampler mode's native stack reader (CPython 3.11): a thread that reads registered\n"
"request threads' stacks without the GIL. Use it through stack_sampler.StackSampler.\n\n"
"init(identifier_factory, wait_frame, unknown_frame) must be called once first.");

static PyObject *
py_init(PyObject *self, PyObject *args)
{
    PyObject *factory, *wait, *unknown;
    if (!PyArg_ParseTuple(args, "OUU", &factory, &wait, &unknown)) {
        return NULL;
    }
    Py_INCREF(factory);
    Py_INCREF(wait);
    Py_INCREF(unknown);
    Py_XSETREF(identifier_factory, factory);
    Py_XSETREF(wait_frame, wait);
    Py_XSETREF(unknown_frame, unknown);
    Py_RETURN_NONE;
}

static PyMethodDef init_method = {"init", py_init, METH_VARARGS, NULL};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native_sampler", module_doc, -1, methods,
};

PyMODINIT_FUNC
PyInit__native_sampler(void)
{
    if (setup_reader() != 0) {
        PyErr_SetString(PyExc_ImportError,
                        "the native sampler cannot read this process's memory "
                        "(process_vm_readv and /proc/self/mem are both refused here)");
        return NULL;
    }
    init_wake();
    codes = calloc(MAX_CODES, sizeof *codes);
    code_slots = calloc(CODE_TABLE, sizeof *code_slots);
    if (codes == NULL || code_slots == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *init = PyCFunction_New(&init_method, NULL);
    if (init == NULL || PyModule_AddObject(m, "init", init) != 0) {
        Py_XDECREF(init);
        Py_DECREF(m);
        return NULL;
    }
    pthread_atfork(NULL, NULL, after_fork_in_child);
    return m;
}
