/* LD_PRELOAD guard for tests/test_check_messages.py: aborts the process when
 * code inside lstm_ext's own extension (a file whose path contains
 * "lstm_ext/_C") writes to a C++ stream, and forwards every other caller to
 * libstdc++.
 *
 * Why: writing a number through a std::ostream compiled into lstm_ext is what
 * crashed the first GPU run's error paths (see csrc/message.h). lstm_ext's
 * checks build their messages without streams; this guard turns any stream
 * use that creeps back in into a failure on any machine, GPU or not.
 *
 * Interposed (libstdc++'s mangled names): the ostringstream constructors,
 * the number, bool and pointer inserters, and the string and character
 * writers a TORCH_CHECK message goes through.
 * iostream_guard_forwarded() counts the calls from other libraries (torch's),
 * so a test can check the guard is in place. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long forwarded;

long iostream_guard_forwarded(void) { return forwarded; }

static void* real(const char* name) {
  void* lib = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);
  void* fn = lib ? dlsym(lib, name) : NULL;
  if (!fn) {
    fprintf(stderr, "iostream_guard: %s not found in libstdc++.so.6\n", name);
    abort();
  }
  return fn;
}

struct lookup {
  unsigned long address;
  const char* file;
};

static int find_object(struct dl_phdr_info* info, size_t size, void* data) {
  struct lookup* l = data;
  (void)size;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)* ph = &info->dlpi_phdr[i];
    unsigned long start = info->dlpi_addr + ph->p_vaddr;
    if (ph->p_type == PT_LOAD && l->address >= start && l->address < start + ph->p_memsz) {
      l->file = info->dlpi_name;
      return 1;
    }
  }
  return 0;
}

/* The caller's file by its load segments (dladdr would also search the
 * symbol tables, which makes torch's import, with its thousands of stream
 * calls, take seconds). */
static void check_caller(void* return_address, const char* name) {
  struct lookup l = {(unsigned long)return_address, NULL};
  dl_iterate_phdr(find_object, &l);
  if (l.file && strstr(l.file, "lstm_ext/_C")) {
    fprintf(stderr, "IOSTREAM_FROM_LSTM_EXT: %s called from %s\n", name, l.file);
    abort();
  }
  ++forwarded;
}

/* Each wrapper looks its target up once (torch's import alone makes
 * thousands of stream calls). */
#define INSERTER(sym, type)                                                  \
  void* sym(void* os, type v) {                                              \
    static void* (*fn)(void*, type);                                         \
    check_caller(__builtin_return_address(0), #sym);                         \
    if (!fn) fn = (void* (*)(void*, type))real(#sym);                        \
    return fn(os, v);                                                        \
  }

INSERTER(_ZNSo9_M_insertIlEERSoT_, long)
INSERTER(_ZNSo9_M_insertImEERSoT_, unsigned long)
INSERTER(_ZNSo9_M_insertIxEERSoT_, long long)
INSERTER(_ZNSo9_M_insertIyEERSoT_, unsigned long long)
INSERTER(_ZNSo9_M_insertIdEERSoT_, double)
INSERTER(_ZNSo9_M_insertIeEERSoT_, long double)
INSERTER(_ZNSo9_M_insertIbEERSoT_, int) /* bool, passed as an int register */
INSERTER(_ZNSo9_M_insertIPKvEERSoT_, const void*)
INSERTER(_ZNSolsEi, int)
INSERTER(_ZNSolsEj, unsigned int)
INSERTER(_ZNSolsEs, int) /* short, promoted */
INSERTER(_ZNSo3putEc, int) /* char, promoted */

/* std::__ostream_insert<char>(ostream&, const char*, long): strings. */
void* _ZSt16__ostream_insertIcSt11char_traitsIcEERSt13basic_ostreamIT_T0_ES6_PKS3_l(void* os, const char* s,
                                                                                   long n) {
  static void* (*fn)(void*, const char*, long);
  check_caller(__builtin_return_address(0), "std::__ostream_insert");
  if (!fn)
    fn = (void* (*)(void*, const char*, long))real(
        "_ZSt16__ostream_insertIcSt11char_traitsIcEERSt13basic_ostreamIT_T0_ES6_PKS3_l");
  return fn(os, s, n);
}

/* std::ostream::write(const char*, long). */
void* _ZNSo5writeEPKcl(void* os, const char* s, long n) {
  static void* (*fn)(void*, const char*, long);
  check_caller(__builtin_return_address(0), "std::ostream::write");
  if (!fn) fn = (void* (*)(void*, const char*, long))real("_ZNSo5writeEPKcl");
  return fn(os, s, n);
}

/* std::ostringstream::ostringstream(): the complete-object (C1) and base-object
 * (C2) constructors. */
#define CONSTRUCTOR(sym)                                                     \
  void sym(void* self) {                                                     \
    static void (*fn)(void*);                                                \
    check_caller(__builtin_return_address(0), "std::ostringstream::ostringstream"); \
    if (!fn) fn = (void (*)(void*))real(#sym);                               \
    fn(self);                                                                \
  }

CONSTRUCTOR(_ZNSt7__cxx1119basic_ostringstreamIcSt11char_traitsIcESaIcEEC1Ev)
CONSTRUCTOR(_ZNSt7__cxx1119basic_ostringstreamIcSt11char_traitsIcESaIcEEC2Ev)
