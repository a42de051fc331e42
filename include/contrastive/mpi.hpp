// contrastive — losses of a global batch spread over MPI processes (optional;
// link the CMake target contrastive::mpi, which brings MPI::MPI_CXX).
// SPDX-License-Identifier: MIT
//
//     #include <contrastive/contrastive.hpp>
//     #include <contrastive/mpi.hpp>
//
//     contrastive::mpi::ProcessGroup group(MPI_COMM_WORLD);
//     auto call = contrastive::CallOptions<float>{}.with_process_group(group);
//     // za, zb: this process's n_p pairs; ga, gb: their gradients
//     float loss = ntxent.value_and_grad(za, zb, ga, gb, &dtau, ws, call);
//
// Every process gets the value and dL/dtau of the global batch (all
// processes' rows in rank order) and the exact gradient of its own rows; no
// world-size factor to remember.  Only standard MPI calls are used.
#pragma once

#include <climits>
#include <cstddef>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <mpi.h>

#include "api.hpp"

namespace contrastive {
namespace mpi {

/// contrastive::ProcessGroup on an MPI communicator (which must outlive the
/// group).  Collectives run on a duplicate of the communicator, so they never
/// match a message of the caller's own.  Errors of MPI throw
/// std::runtime_error naming the MPI call.
class ProcessGroup final : public contrastive::ProcessGroup {
 public:
  /// Duplicates `comm` (collective over it).  If one process cannot size
  /// its scratch (std::bad_alloc), every process throws: that one its
  /// exception, the others std::runtime_error.
  explicit ProcessGroup(MPI_Comm comm) {
    // The per-process counts of the row collectives, sized once, here: the
    // collectives make no allocation of the library's own (MPI's internal
    // ones aside), so none throws std::bad_alloc on one process while the
    // others enter it.  A failure to size them is told to every process by
    // one all-reduce after the (collective) dup.
    int procs = 0;
    check(MPI_Comm_size(comm, &procs), "MPI_Comm_size");
    check(MPI_Comm_rank(comm, &rank_), "MPI_Comm_rank");  // (the duplicate's: nothing throws after the dup but the flag)
    std::exception_ptr failed;
    try {
      counts_.resize(static_cast<std::size_t>(procs));
      displs_.resize(static_cast<std::size_t>(procs));
    } catch (...) {
      failed = std::current_exception();
    }
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    int mine = failed ? 1 : 0, any = 0;
    const int code = MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_SUM, comm_);
    if (code != MPI_SUCCESS || any > 0) {
      MPI_Comm_free(&comm_);
      check(code, "MPI_Allreduce");
      if (failed) std::rethrow_exception(failed);
      throw std::runtime_error("contrastive::mpi::ProcessGroup: " + std::to_string(any) + " of " +
                               std::to_string(procs) + " processes could not allocate the group's scratch");
    }
    size_ = procs;
  }
  /// Frees the duplicate (if MPI is still running).
  ~ProcessGroup() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  /// This process's rank in the communicator.
  int rank() const override { return rank_; }
  /// Number of processes of the communicator.
  int size() const override { return size_; }
  /// The duplicated communicator the library's collectives use.
  MPI_Comm communicator() const { return comm_; }

  /// MPI_Allgather of `bytes` bytes per process.
  void all_gather(const void* mine, std::size_t bytes, void* all) const override {
    check(MPI_Allgather(mine, to_int(bytes, "bytes"), MPI_BYTE, all, to_int(bytes, "bytes"), MPI_BYTE, comm_),
          "MPI_Allgather");
  }

  /// MPI_Allgatherv in units of a row (a contiguous datatype of row_bytes).
  void all_gather_rows(const void* mine, void* all, const long long* rows, std::size_t row_bytes) const override {
    if (row_bytes == 0) return;
    long long at = 0;
    for (int p = 0; p < size_; ++p) {
      counts_[static_cast<std::size_t>(p)] = to_int(rows[p], "rows");
      displs_[static_cast<std::size_t>(p)] = to_int(at, "row offset");
      at += rows[p];
    }
    Row row(row_bytes);
    check(MPI_Allgatherv(mine, counts_[static_cast<std::size_t>(rank_)], row.type, all, counts_.data(), displs_.data(),
                         row.type, comm_),
          "MPI_Allgatherv");
  }

  /// MPI_Allreduce in place (in pieces of at most INT_MAX elements).
  void all_reduce(float* data, std::size_t count, Op op) const override { reduce(data, count, MPI_FLOAT, op); }
  /// MPI_Allreduce in place (in pieces of at most INT_MAX elements).
  void all_reduce(double* data, std::size_t count, Op op) const override { reduce(data, count, MPI_DOUBLE, op); }

  /// MPI_Reduce_scatter (sum) in units of a row of row_len floats.
  void reduce_scatter_rows(const float* all, float* mine, const long long* rows, std::size_t row_len) const override {
    scatter(all, mine, rows, row_len, MPI_FLOAT, sizeof(float));
  }
  /// MPI_Reduce_scatter (sum) in units of a row of row_len doubles.
  void reduce_scatter_rows(const double* all, double* mine, const long long* rows,
                           std::size_t row_len) const override {
    scatter(all, mine, rows, row_len, MPI_DOUBLE, sizeof(double));
  }

 private:
  /// A committed contiguous datatype of `bytes` bytes (freed on scope exit).
  struct Row {
    MPI_Datatype type = MPI_DATATYPE_NULL;
    Row(std::size_t bytes, MPI_Datatype base = MPI_BYTE) {
      check(MPI_Type_contiguous(to_int(bytes, "row size"), base, &type), "MPI_Type_contiguous");
      check(MPI_Type_commit(&type), "MPI_Type_commit");
    }
    ~Row() { MPI_Type_free(&type); }
    Row(const Row&) = delete;
    Row& operator=(const Row&) = delete;
  };

  static void check(int code, const char* call) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    throw std::runtime_error(std::string("contrastive::mpi: ") + call + " failed: " + std::string(text, static_cast<std::size_t>(len)));
  }
  template <typename T>
  static int to_int(T v, const char* what) {
    if (v < 0 || static_cast<unsigned long long>(v) > static_cast<unsigned long long>(INT_MAX))
      throw std::invalid_argument(std::string("contrastive::mpi: ") + what + " " + std::to_string(v) +
                                  " does not fit an MPI count");
    return static_cast<int>(v);
  }

  void reduce(void* data, std::size_t count, MPI_Datatype type, Op op) const {
    int bytes = 0;
    MPI_Type_size(type, &bytes);
    auto* p = static_cast<char*>(data);
    while (count > 0) {
      const std::size_t piece = count < static_cast<std::size_t>(INT_MAX) ? count : static_cast<std::size_t>(INT_MAX);
      check(MPI_Allreduce(MPI_IN_PLACE, p, static_cast<int>(piece), type, op == Op::Sum ? MPI_SUM : MPI_MAX, comm_),
            "MPI_Allreduce");
      p += piece * static_cast<std::size_t>(bytes);
      count -= piece;
    }
  }

  void scatter(const void* all, void* mine, const long long* rows, std::size_t row_len, MPI_Datatype base,
               std::size_t elem) const {
    if (row_len == 0) return;
    (void)elem;
    // A row of row_len scalars is one element of the reduction: MPI_SUM on a
    // derived type is not defined, so reduce in scalars with counts that are
    // multiples of the row (they fit an int: rows * row_len <= INT_MAX is
    // checked).
    for (int p = 0; p < size_; ++p)
      counts_[static_cast<std::size_t>(p)] =
          to_int(static_cast<long long>(rows[p]) * static_cast<long long>(row_len), "scalars of a share");
    check(MPI_Reduce_scatter(all, mine, counts_.data(), base, MPI_SUM, comm_), "MPI_Reduce_scatter");
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  // Scratch of the row collectives: a group's collectives must not run
  // concurrently (MPI requires it of collectives on one communicator).
  mutable std::vector<int> counts_, displs_;
};

}  // namespace mpi
}  // namespace contrastive
