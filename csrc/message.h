// Error messages for lstm_ext's checks, built as one std::string without
// iostreams.
//
// Why: on the first H200 run exactly the checks whose TORCH_CHECK message
// wrote a number killed the process (SIGSEGV), while string-only messages
// raised. TORCH_CHECK formats through a std::ostringstream compiled into this
// library, whose pieces bind at load time to different copies of libstdc++'s
// stream code (the constructor to the weak copy libc10.so exports, the integer
// formatter to the system libstdc++); a library that brings its own copy can
// pair them wrongly. That mixed binding is the most likely cause, not yet
// confirmed on a GPU (benchmarks/NOTES.md, "CUDA error paths"). Strings and
// std::to_string need no stream and no locale, so a failing check raises the
// same RuntimeError whatever the process has loaded;
// tests/test_check_messages.py keeps every op's error paths stream-free.
//
// Use: LSTM_EXT_CHECK(cond, "op: x: expected ", n, " rows, got ", m). The
// message is only built when the check fails.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <concepts>
#include <string>
#include <string_view>

namespace lstm_ext {
namespace message_detail {

inline void append(std::string& s, std::string_view v) { s.append(v.data(), v.size()); }
inline void append(std::string& s, const char* v) { s += v; }
inline void append(std::string& s, const std::string& v) { s += v; }
inline void append(std::string& s, char v) { s += v; }
inline void append(std::string& s, bool v) { s += v ? "true" : "false"; }
template <std::integral I>
  requires(!std::same_as<I, bool> && !std::same_as<I, char>)
void append(std::string& s, I v) {
  s += std::to_string(v);
}
inline void append(std::string& s, c10::ScalarType v) { s += c10::toString(v); }
inline void append(std::string& s, const c10::Device& v) { s += v.str(); }
// A shape as "[2, 3]".
inline void append(std::string& s, c10::IntArrayRef v) {
  s += '[';
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(v[i]);
  }
  s += ']';
}

}  // namespace message_detail

// The concatenation of `parts` (strings, integers, dtypes, devices, shapes).
template <typename... Parts>
std::string message(const Parts&... parts) {
  std::string s;
  (message_detail::append(s, parts), ...);
  return s;
}

}  // namespace lstm_ext

// TORCH_CHECK, with the message built by lstm_ext::message and handed to
// c10's own torchCheckFail, which makes the c10::Error (a RuntimeError in
// Python) inside libc10. No stream is created in this library (TORCH_CHECK's
// c10::str would make one even for a single string).
#define LSTM_EXT_CHECK(cond, ...)                                                    \
  do {                                                                              \
    if (C10_UNLIKELY(!(cond))) {                                                    \
      ::c10::detail::torchCheckFail(__func__, __FILE__, static_cast<uint32_t>(__LINE__), \
                                    ::lstm_ext::message(__VA_ARGS__));              \
    }                                                                               \
  } while (false)
