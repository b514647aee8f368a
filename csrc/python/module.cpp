// The Python module lstm_ext._C. It exposes nothing itself: importing it
// loads this shared library, whose static registrations (csrc/ops.cpp and the
// backends' TORCH_LIBRARY_IMPL blocks) make the ops reachable via torch.ops.
// Kept apart from the C++ core, which CMake builds without Python.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
