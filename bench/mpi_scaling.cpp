// Scaling of the engine losses across MPI processes: NT-Xent and CLIP value +
// gradient, float, one thread per process, weak scaling (fixed pairs per
// process) and strong scaling (fixed global batch).
//
//     mpiexec --allow-run-as-root --oversubscribe --bind-to none -n P ./mpi_scaling [reps] [warmup]
//
// The library's MPI group is wrapped in a timing decorator (TimedGroup): every
// collective is forwarded and its time and payload counted, so each call's
// wall time splits into time inside collectives and time outside them
// (compute).  Each repetition starts after an MPI_Barrier; rank 0 prints the
// median over repetitions of:
//   wall      the slowest process's time for the call,
//   compute   the largest time any process spent outside collectives,
//   compute CPU  the largest CPU time (of the calling thread) any process
//             spent outside collectives: the work itself, whether or not the
//             process had a core to itself (P > 2 on two cores does not),
//   coll      the least / largest time a process spent inside collectives
//             (the least is close to the transfer itself: the last process
//             to arrive waits for nobody; the largest adds waiting),
//   payload   bytes per process counted as README "Across processes" counts
//             them (a gather: the whole gathered buffer; a reduce-scatter:
//             its input), beside the README's formula, and the bytes a ring
//             algorithm receives per process,
//   ws        Workspace::bytes() of rank 0 after the call.
// GFLOP/s counts the minimal GEMM work of the loss (NT-Xent 6 n^2 d, CLIP
// 3 n^2 d multiply-adds with the gradient) over the wall time.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <time.h>

#include <mpi.h>

#include <Eigen/Core>

#include <contrastive/contrastive.hpp>
#include <contrastive/mpi.hpp>

namespace {

/// CPU seconds of the calling thread (time it ran, not time it waited for a
/// core: the machine may be shared).
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;

/// Forwards every collective to another group, counting calls, seconds and
/// payload bytes per kind of collective.
class TimedGroup final : public contrastive::ProcessGroup {
 public:
  enum Kind { kRecords, kRows, kReduce, kScatter, kKinds };
  struct Tally {
    long calls = 0;
    double seconds = 0;
    double payload = 0;  ///< bytes as the README's table counts them
    double ring = 0;     ///< bytes a ring algorithm receives on this process
  };
  /// CPU seconds spent inside collectives since reset() (MPI polls).
  double cpu_in_collectives() const { return cpu_; }

  explicit TimedGroup(const contrastive::ProcessGroup& inner) : inner_(inner) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }

  void all_gather(const void* mine, std::size_t bytes, void* all) const override {
    const double t0 = MPI_Wtime(), c0 = cpu_seconds();
    inner_.all_gather(mine, bytes, all);
    cpu_ += cpu_seconds() - c0;
    const double total = static_cast<double>(bytes) * procs();
    add(kRecords, MPI_Wtime() - t0, total, total - static_cast<double>(bytes));
  }
  void all_gather_rows(const void* mine, void* all, const long long* rows, std::size_t row_bytes) const override {
    const double t0 = MPI_Wtime(), c0 = cpu_seconds();
    inner_.all_gather_rows(mine, all, rows, row_bytes);
    cpu_ += cpu_seconds() - c0;
    long long count = 0;
    for (int p = 0; p < size(); ++p) count += rows[p];
    const double total = static_cast<double>(count) * static_cast<double>(row_bytes);
    const double own = static_cast<double>(rows[rank()]) * static_cast<double>(row_bytes);
    add(kRows, MPI_Wtime() - t0, total, total - own);
  }
  void all_reduce(float* data, std::size_t count, Op op) const override { reduce(data, count, op); }
  void all_reduce(double* data, std::size_t count, Op op) const override { reduce(data, count, op); }
  void reduce_scatter_rows(const float* all, float* mine, const long long* rows, std::size_t row_len) const override {
    scatter(all, mine, rows, row_len);
  }
  void reduce_scatter_rows(const double* all, double* mine, const long long* rows,
                           std::size_t row_len) const override {
    scatter(all, mine, rows, row_len);
  }

  void reset() const {
    tally_ = {};
    cpu_ = 0;
  }
  const Tally& tally(Kind k) const { return tally_[static_cast<std::size_t>(k)]; }
  double seconds() const { return sum(&Tally::seconds); }
  double payload() const { return sum(&Tally::payload); }
  double ring() const { return sum(&Tally::ring); }

 private:
  double procs() const { return static_cast<double>(size()); }
  double sum(double Tally::*field) const {
    double s = 0;
    for (const auto& t : tally_) s += t.*field;
    return s;
  }
  void add(Kind k, double seconds, double payload, double ring) const {
    auto& t = tally_[static_cast<std::size_t>(k)];
    ++t.calls;
    t.seconds += seconds;
    t.payload += payload;
    t.ring += ring;
  }
  template <typename T>
  void reduce(T* data, std::size_t count, Op op) const {
    const double t0 = MPI_Wtime(), c0 = cpu_seconds();
    inner_.all_reduce(data, count, op);
    cpu_ += cpu_seconds() - c0;
    const double bytes = static_cast<double>(count * sizeof(T));
    // A ring all-reduce is a reduce-scatter and an all-gather.
    add(kReduce, MPI_Wtime() - t0, bytes, 2.0 * bytes * (procs() - 1) / procs());
  }
  template <typename T>
  void scatter(const T* all, T* mine, const long long* rows, std::size_t row_len) const {
    const double t0 = MPI_Wtime(), c0 = cpu_seconds();
    inner_.reduce_scatter_rows(all, mine, rows, row_len);
    cpu_ += cpu_seconds() - c0;
    long long count = 0;
    for (int p = 0; p < size(); ++p) count += rows[p];
    const double total = static_cast<double>(count) * static_cast<double>(row_len * sizeof(T));
    const double own = static_cast<double>(rows[rank()]) * static_cast<double>(row_len * sizeof(T));
    add(kScatter, MPI_Wtime() - t0, total, total - own);
  }

  const contrastive::ProcessGroup& inner_;
  mutable std::array<Tally, kKinds> tally_{};
  mutable double cpu_ = 0;
};

/// Rows [first, first + rows) of a deterministic global view (every process
/// builds its own shard of the same global batch).
Matrix shard(Eigen::Index first, Eigen::Index rows, Eigen::Index d, int view) {
  Matrix z(rows, d);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < d; ++j) {
      const double g = static_cast<double>((first + i) * d + j);
      z(i, j) = static_cast<float>(std::sin(0.37 * g + 1.1 * view) * (1.0 + static_cast<double>((first + i) % 7)));
    }
  return z;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

/// The README's bytes per call and process (float, K = 2 statistics, fixed
/// shifts, no ids / labels / weights): the all-reduce before the exchange
/// (the batch's rows, the failed processes, the bytes of a row, a failure
/// flag: 4 doubles), the
/// call records, the rows, the statistics with the two passes' pair sums
/// and failure flags (2 x 4 doubles), dW.
double formula_bytes(double n, double d, double procs) {
  const double S = 4, K = 2, record = static_cast<double>(sizeof(contrastive::detail::CallRecord));
  return 32 + record * procs + (2 * n * (d + 1) * S + 2 * n) + (2 * n * K * S + 64) + 2 * n * d * S;
}

struct Case {
  const char* loss;     // "ntxent" or "clip"
  const char* scaling;  // "weak" or "strong"
  Eigen::Index size;    // pairs per process (weak) or global pairs (strong)
  Eigen::Index d;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    contrastive::mpi::ProcessGroup world(MPI_COMM_WORLD);
    const TimedGroup group(world);
    const int P = group.size(), rank = group.rank();
    const int reps = argc > 1 ? std::atoi(argv[1]) : 7;
    const int warmup = argc > 2 ? std::atoi(argv[2]) : 2;
    Eigen::setNbThreads(1);
    contrastive::EngineOptions opt;
    opt.num_threads = 1;  // one thread per process
    const contrastive::NTXent<float> ntxent(0.2, opt);
    const contrastive::CLIP<float> clip(0.07, opt);

    const std::vector<Case> cases = {
        {"ntxent", "weak", 1024, 128},   {"clip", "weak", 1024, 128},   {"ntxent", "strong", 4096, 128},
        {"clip", "strong", 4096, 128},   {"ntxent", "strong", 2048, 512}, {"clip", "strong", 2048, 512},
    };
    if (rank == 0)
      std::printf("# mpi_scaling: %d process(es), 1 thread each, float, %d reps after %d warm-up, median\n"
                  "# sizeof(Tile) %zu, sizeof(PairSums) %zu\n"
                  "| loss | scaling | P | n_p | n | d | wall ms | compute ms | compute CPU ms | coll ms (min-max) | GFLOP/s | "
                  "payload MB | payload - formula (B) | ring MB | ws MB | value |\n"
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
                  P, reps, warmup, sizeof(contrastive::detail::Tile), sizeof(contrastive::detail::PairSums));
    std::vector<std::string> details;  // per-collective lines, printed after the table
    for (const Case& c : cases) {
      const Eigen::Index n = c.scaling[0] == 'w' ? c.size * P : c.size;
      // Even shards (the remainder, if any, goes to the first processes).
      const Eigen::Index np = n / P + (rank < n % P ? 1 : 0);
      const Eigen::Index first = rank * (n / P) + std::min<Eigen::Index>(rank, n % P);
      const Matrix za = shard(first, np, c.d, 0), zb = shard(first, np, c.d, 1);
      Matrix ga(np, c.d), gb(np, c.d);
      contrastive::Workspace<float> ws;
      const auto call = contrastive::CallOptions<float>{}.with_process_group(group);
      const bool is_ntxent = c.loss[0] == 'n';
      std::vector<double> wall, compute, compute_cpu, coll_min, coll_max;
      double payload = 0, ring = 0;
      float value = 0;
      for (int r = 0; r < warmup + reps; ++r) {
        MPI_Barrier(MPI_COMM_WORLD);
        group.reset();
        const double t0 = MPI_Wtime(), c0 = cpu_seconds();
        float dtau = 0;
        value = is_ntxent ? ntxent.value_and_grad(za, zb, ga, gb, &dtau, ws, call)
                          : clip.value_and_grad(za, zb, ga, gb, &dtau, ws, call);
        const double t = MPI_Wtime() - t0, cpu = cpu_seconds() - c0 - group.cpu_in_collectives();
        double mine[2] = {t, group.seconds()}, maxs[2] = {0, 0}, mins[2] = {0, 0};
        const double out[2] = {t - group.seconds(), cpu};
        double compute_max[2] = {0, 0};
        MPI_Reduce(mine, maxs, 2, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        MPI_Reduce(mine, mins, 2, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
        MPI_Reduce(out, compute_max, 2, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        if (r < warmup) continue;
        wall.push_back(maxs[0]);
        compute.push_back(compute_max[0]);
        compute_cpu.push_back(compute_max[1]);
        coll_min.push_back(mins[1]);
        coll_max.push_back(maxs[1]);
        payload = group.payload();
        ring = group.ring();
      }
      if (rank == 0) {
        const double dn = static_cast<double>(n), dd = static_cast<double>(c.d);
        const double macs = (is_ntxent ? 6.0 : 3.0) * dn * dn * dd;
        const double w = median(wall);
        std::printf("| %s | %s | %d | %ld | %ld | %ld | %.1f | %.1f | %.1f | %.2f-%.2f | %.1f | %.3f | %.0f | %.3f | %.2f | %.6f |\n",
                    is_ntxent ? "NT-Xent" : "CLIP", c.scaling, P, static_cast<long>(np), static_cast<long>(n),
                    static_cast<long>(c.d), 1e3 * w, 1e3 * median(compute), 1e3 * median(compute_cpu), 1e3 * median(coll_min),
                    1e3 * median(coll_max), 2.0 * macs / w * 1e-9, payload / 1e6,
                    P > 1 ? payload - formula_bytes(dn, dd, P) : 0.0, ring / 1e6, static_cast<double>(ws.bytes()) / 1e6,
                    static_cast<double>(value));
        if (P > 1) {
          char line[512];
          int at = std::snprintf(line, sizeof line, "# %s %s n=%ld d=%ld, rank 0, last rep:", c.loss, c.scaling,
                                 static_cast<long>(n), static_cast<long>(c.d));
          const char* names[] = {"records", "rows", "all-reduce", "reduce-scatter"};
          for (int k = 0; k < TimedGroup::kKinds && at > 0 && at < static_cast<int>(sizeof line); ++k) {
            const auto& t = group.tally(static_cast<TimedGroup::Kind>(k));
            at += std::snprintf(line + at, sizeof line - static_cast<std::size_t>(at), " %s %ldx %.4f MB %.2f ms;",
                                names[k], t.calls, t.payload / 1e6, 1e3 * t.seconds);
          }
          details.emplace_back(line);
        }
        std::fflush(stdout);
      }
    }
    if (rank == 0)
      for (const auto& l : details) std::printf("%s\n", l.c_str());
  }
  MPI_Finalize();
  return 0;
}
