#include "cpu/fused/team.h"

#include <linux/futex.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LSTM_EXT_PAUSE() _mm_pause()
#else
#define LSTM_EXT_PAUSE() ((void)0)
#endif

namespace lstm_ext::cpu::fused {
namespace {

// ~4000 pauses is ~10-20 us: longer than any step we wait on when both
// threads run, far shorter than a scheduler time slice when one does not.
constexpr int kSpinsBeforeSleep = 4000;

void futex_wait(std::atomic<int>* word, int expected) {
  syscall(SYS_futex, reinterpret_cast<int*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr,
          0);
}

void futex_wake_all(std::atomic<int>* word) {
  syscall(SYS_futex, reinterpret_cast<int*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr,
          0);
}

}  // namespace

void StepBarrier::wait() {
  if (parties_ <= 1) return;
  const int gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == parties_ - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.store(gen + 1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(&generation_);
    return;
  }
  for (int spins = 0; generation_.load(std::memory_order_acquire) == gen;) {
    if (++spins < kSpinsBeforeSleep) {
      LSTM_EXT_PAUSE();
      continue;
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    while (generation_.load(std::memory_order_seq_cst) == gen) futex_wait(&generation_, gen);
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

int team_rank() { return omp_get_thread_num(); }
int team_size() { return omp_get_num_threads(); }
bool in_parallel_region() { return omp_in_parallel() != 0; }

}  // namespace lstm_ext::cpu::fused
