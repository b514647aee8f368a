// run_team's template body (OpenMP pragma), included by team.h.
#pragma once

#include <optional>

namespace lstm_ext::cpu::fused {

template <class Body>
void run_team(int threads, const Body& body) {
  if (threads <= 1 || in_parallel_region()) {
    StepBarrier alone(1);
    body(0, 1, alone);
    return;
  }
  // The team size is known only inside the region (OpenMP may give fewer
  // threads than asked): one thread builds the barrier, and `single`'s
  // implicit barrier publishes it to the others.
  std::optional<StepBarrier> barrier;
#pragma omp parallel num_threads(threads)
  {
#pragma omp single
    barrier.emplace(team_size());
    body(team_rank(), team_size(), *barrier);
  }
}

}  // namespace lstm_ext::cpu::fused
