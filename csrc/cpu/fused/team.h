// One parallel region per sequence, with a cheap barrier per time step.
//
// Forking threads per step (an at::parallel_for per step) costs ~0.65 us on
// this class of machine, more than a whole small step; a spinning barrier
// round trip costs ~0.08 us. So the time loop runs inside one OpenMP parallel
// region (the same libgomp pool torch's own at::parallel_for uses, so the two
// never compete with extra threads) and the threads meet at a StepBarrier
// once per step.
#pragma once

#include <atomic>
#include <cstdint>

namespace lstm_ext::cpu::fused {

// Spins briefly, then sleeps on a futex: on a shared machine a partner thread
// may be descheduled, and a pure spin would burn whole time slices waiting.
class StepBarrier {
 public:
  explicit StepBarrier(int parties) : parties_(parties) {}
  void wait();

 private:
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
  std::atomic<int> sleepers_{0};
  int parties_;
};

// Runs body(rank, team_size, barrier) on up to `threads` threads of torch's
// OpenMP pool. team_size is the number of threads actually obtained (1 when
// called from inside another parallel region); body must divide its work by
// it. Nothing in body may throw.
template <class Body>
void run_team(int threads, const Body& body);

int team_rank();
int team_size();
bool in_parallel_region();

}  // namespace lstm_ext::cpu::fused

#include "cpu/fused/team_impl.h"
