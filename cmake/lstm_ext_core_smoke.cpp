// Smoke test of lstm_ext_core for C++ users (built by CMakeLists.txt, run by
// ctest): linking the library registers the ops; look lstm_forward up in the
// dispatcher, call it on a tiny input and check the output shapes.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <cstdio>
#include <optional>

int main() {
  const int64_t T = 3, B = 2, I = 4, H = 5;
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow("lstm_ext::lstm_forward", "");
  if (!op.hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
    std::fprintf(stderr, "lstm_ext::lstm_forward has no CPU kernel\n");
    return 1;
  }
  // Boxed call, so this file does not restate the C++ signature of the schema.
  torch::jit::Stack stack{at::randn({T, B, I}), at::randn({4 * H, I}), at::randn({4 * H, H}),
                          at::randn({4 * H}),   at::zeros({B, H}),     at::zeros({B, H}),
                          /*reverse=*/false,    /*save_for_backward=*/false,
                          /*batch_sizes=*/c10::IValue(), /*w_hr=*/c10::IValue()};
  // A boxed call passes every argument, defaulted ones too.
  if (stack.size() != op.schema().arguments().size()) {
    std::fprintf(stderr, "lstm_forward takes %zu arguments; update this test\n",
                 op.schema().arguments().size());
    return 1;
  }
  op.callBoxed(&stack);
  if (stack.size() < 3) {
    std::fprintf(stderr, "lstm_forward returned %zu values\n", stack.size());
    return 1;
  }
  const at::Tensor y = stack[0].toTensor(), h_n = stack[1].toTensor();
  if (y.sizes() != at::IntArrayRef({T, B, H}) || h_n.sizes() != at::IntArrayRef({B, H}) ||
      !at::allclose(y[T - 1], h_n)) {
    std::fprintf(stderr, "unexpected lstm_forward outputs\n");
    return 1;
  }
  std::printf("lstm_ext_core ok: %s\n", c10::toString(op.schema()).c_str());
  return 0;
}
