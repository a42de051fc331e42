// contrastive — argument validation shared by every loss.
// SPDX-License-Identifier: MIT
#pragma once

#include <cmath>
#include <map>
#include <vector>
#include <sstream>
#include <stdexcept>
#include <string>

#include <Eigen/Core>

namespace contrastive {
namespace detail {

/// Throws std::invalid_argument with "<where>: argument '<arg>' <problem>".
[[noreturn]] inline void fail(const char* where, const char* arg, const std::string& problem) {
  std::ostringstream os;
  os << where << ": argument '" << arg << "' " << problem;
  throw std::invalid_argument(os.str());
}

/// Same message shape for fields of a parameter struct ("field 'x' ...").
[[noreturn]] inline void fail_field(const char* where, const char* field, const std::string& problem) {
  std::ostringstream os;
  os << where << ": field '" << field << "' " << problem;
  throw std::invalid_argument(os.str());
}

template <typename T>
std::string got(const T& value) {
  std::ostringstream os;
  os << "(got " << value << ")";
  return os.str();
}

/// A temperature-like quantity: finite and strictly positive.
inline void check_positive_finite(const char* where, const char* field, double value) {
  if (!(std::isfinite(value) && value > 0.0))
    fail_field(where, field, "must be finite and > 0 " + got(value));
}

/// A weight: finite and >= 0.
inline void check_weight(const char* where, const char* field, double value) {
  if (!(std::isfinite(value) && value >= 0.0))
    fail_field(where, field, "must be finite and >= 0 " + got(value));
}

/// Shape of one caller-owned output.
template <typename Derived>
void check_output_shape(const char* where, const char* arg, const Eigen::MatrixBase<Derived>& out,
                        Eigen::Index rows, Eigen::Index cols) {
  if (out.rows() != rows || out.cols() != cols) {
    std::ostringstream os;
    os << "has shape " << out.rows() << "x" << out.cols() << " but must be " << rows << "x" << cols
       << " (the shape of the embeddings)";
    fail(where, arg, os.str());
  }
}

/// The two views of a batch: same shape, d >= 1, at least `min_rows` rows.
template <typename DA, typename DB>
void check_views(const char* where, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                 Eigen::Index min_rows = 2) {
  if (za.rows() != zb.rows() || za.cols() != zb.cols()) {
    std::ostringstream os;
    os << "has shape " << zb.rows() << "x" << zb.cols() << " but 'za' has " << za.rows() << "x" << za.cols()
       << " (row i of both views is instance i)";
    fail(where, "zb", os.str());
  }
  if (za.cols() < 1) fail(where, "za", "has 0 columns: the embedding dimension d must be >= 1");
  if (za.rows() < min_rows) {
    std::ostringstream os;
    os << "has " << za.rows() << " rows: at least " << min_rows << " samples are needed for a negative";
    fail(where, "za", os.str());
  }
}

/// Validates optional instance ids and returns the number of ordered
/// cross-view negative pairs: n^2 - sum over ids of (count)^2 (n(n-1) without ids).
inline double count_negatives(const char* where, Eigen::Index n, const std::vector<Eigen::Index>* ids) {
  if (!ids) return static_cast<double>(n) * static_cast<double>(n - 1);
  if (static_cast<Eigen::Index>(ids->size()) != n)
    fail(where, "instance_ids",
         "has " + std::to_string(ids->size()) + " entries but the batch has " + std::to_string(n) + " rows");
  std::map<Eigen::Index, double> counts;
  for (Eigen::Index id : *ids) counts[id] += 1.0;
  double same = 0;
  for (const auto& c : counts) same += c.second * c.second;
  const double negatives = static_cast<double>(n) * static_cast<double>(n) - same;
  if (negatives <= 0) fail(where, "instance_ids", "gives every pair the same id: there is no negative pair");
  return negatives;
}

/// Optional instance ids of a batch, validated after the views (so shape
/// errors come first); returns their data, or null without ids.
template <typename DA, typename DB>
const Eigen::Index* checked_ids(const char* where, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb,
                                const std::vector<Eigen::Index>* ids) {
  if (!ids) return nullptr;
  check_views(where, za, zb);
  count_negatives(where, za.rows(), ids);
  return ids->data();
}

/// Checks the views and sizes the gradients of an allocating result.
template <typename Result, typename DA, typename DB>
void size_result(Result& out, const char* where, const Eigen::MatrixBase<DA>& za, const Eigen::MatrixBase<DB>& zb) {
  check_views(where, za, zb);
  out.grad_a.resize(za.rows(), za.cols());
  out.grad_b.resize(zb.rows(), zb.cols());
}

}  // namespace detail
}  // namespace contrastive
