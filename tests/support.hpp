// Shared helpers of the test suite.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#include <random>

#include <Eigen/Core>

#include <contrastive/contrastive.hpp>

namespace testing {

using MatD = Eigen::MatrixXd;
using MatF = Eigen::MatrixXf;

/// Mixed absolute / relative closeness of two matrices, in the max norm:
/// ||a - b|| <= rel * max(||b||, floor).
template <typename A, typename B>
bool near(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b, double rel, double floor = 1.0) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  if (a.size() == 0) return true;
  const double diff = (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff();
  const double scale = std::max(b.template cast<double>().cwiseAbs().maxCoeff(), floor);
  return diff <= rel * scale;
}

inline bool near(double a, double b, double rel, double floor = 1.0) {
  return std::abs(a - b) <= rel * std::max(std::abs(b), floor);
}

/// Gaussian rows with norms spread over [e^-spread, e^spread].
inline MatD uneven_rows(Eigen::Index n, Eigen::Index d, std::mt19937_64& rng, double spread = 2.0) {
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(-spread, spread);
  MatD z(n, d);
  for (Eigen::Index i = 0; i < n; ++i) {
    const double s = std::exp(u(rng));
    for (Eigen::Index j = 0; j < d; ++j) z(i, j) = s * g(rng);
  }
  return z;
}

/// Rows c + spread * noise: a batch whose cosine similarities all lie close
/// to 1 (a learned temperature meets such batches at initialisation).
/// (Also used by bench/collapsed_precision.cpp.)
inline MatD collapsed(Eigen::Index n, Eigen::Index d, double spread, std::mt19937_64& rng) {
  std::normal_distribution<double> g(0.0, 1.0);
  Eigen::RowVectorXd c(d);
  for (Eigen::Index j = 0; j < d; ++j) c[j] = g(rng);
  MatD z(n, d);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < d; ++j) z(i, j) = c[j] + spread * g(rng);
  return z;
}

/// Central difference of f with respect to every entry of x (step h * max(1, |x|)).
inline MatD central_difference(const std::function<double(const MatD&)>& f, const MatD& x, double h = 1e-6) {
  MatD g(x.rows(), x.cols());
  MatD xp = x;
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      const double step = h * std::max(1.0, std::abs(x(i, j)));
      xp(i, j) = x(i, j) + step;
      const double fp = f(xp);
      xp(i, j) = x(i, j) - step;
      const double fm = f(xp);
      xp(i, j) = x(i, j);
      g(i, j) = (fp - fm) / (2.0 * step);
    }
  return g;
}

/// CallOptions with instance ids (none for a null pointer or an empty vector).
template <typename S = double>
contrastive::CallOptions<S> ids_call(const std::vector<Eigen::Index>* ids) {
  contrastive::CallOptions<S> c;
  if (ids && !ids->empty()) c.instance_ids = *ids;
  return c;
}
template <typename S = double>
contrastive::CallOptions<S> ids_call(const std::vector<Eigen::Index>& ids) {
  return ids_call<S>(&ids);
}
/// CallOptions with class labels.
template <typename S = double>
contrastive::CallOptions<S> labels_call(const std::vector<Eigen::Index>& labels) {
  contrastive::CallOptions<S> c;
  c.labels = labels;
  return c;
}
/// CallOptions with a reduction, optional weights and an optional per-anchor
/// output (resized here to `anchors` entries).
template <typename S>
contrastive::CallOptions<S> reduce_call(contrastive::Reduction r, const std::vector<S>* weights = nullptr,
                                        std::vector<S>* per = nullptr, Eigen::Index anchors = 0) {
  contrastive::CallOptions<S> c;
  c.reduction = r;
  if (weights) c.anchor_weights = *weights;
  if (per) {
    per->assign(static_cast<std::size_t>(anchors), S(0));
    c.per_anchor = *per;
  }
  return c;
}

enum class Preset { InfoNCE, CLIP, NTXent, DCL, DHEL };
constexpr Preset kPresets[] = {Preset::InfoNCE, Preset::CLIP, Preset::NTXent, Preset::DCL, Preset::DHEL};

inline const char* preset_name(Preset p) {
  switch (p) {
    case Preset::InfoNCE: return "infonce";
    case Preset::CLIP: return "clip";
    case Preset::NTXent: return "ntxent";
    case Preset::DCL: return "dcl";
    case Preset::DHEL: return "dhel";
  }
  return "?";
}

/// The preset's parameters with a given temperature (as the preset classes set them).
template <typename S>
contrastive::InfoNCEFamily<S> make_loss(Preset p, double tau, const contrastive::EngineOptions& o = {}) {
  switch (p) {
    case Preset::InfoNCE: return contrastive::InfoNCE<S>(tau, o);
    case Preset::CLIP: return contrastive::CLIP<S>(tau, o);
    case Preset::NTXent: return contrastive::NTXent<S>(tau, o);
    case Preset::DCL: return contrastive::DCL<S>(tau, o);
    case Preset::DHEL: return contrastive::DHEL<S>(tau, o);
  }
  return contrastive::NTXent<S>(tau, o);
}

inline bool is_symmetric(Preset p) { return p != Preset::InfoNCE; }

/// One case of a reference file written by tests/data/make_reference*.py.
struct ReferenceCase {
  std::string name, loss;
  Eigen::Index n = 0, d = 0;
  std::map<std::string, double> param;  ///< e.g. temperature, logit_scale
  std::vector<Eigen::Index> ids;         ///< instance ids, when the case has them
  std::vector<Eigen::Index> labels;      ///< class labels, when the case has them
  std::vector<double> per_anchor;        ///< per-anchor losses, when the case has them
  MatD za, zb, grad_a, grad_b;
  double value = 0;
  std::map<std::string, double> grad;  ///< derivatives with respect to params
};

inline std::vector<ReferenceCase> read_reference(const std::string& path) {
  std::ifstream f(path);
  std::vector<ReferenceCase> cases;
  std::string line;
  auto matrix = [](std::istringstream& is, const ReferenceCase& c) {
    MatD m(c.n, c.d);
    for (Eigen::Index i = 0; i < c.n; ++i)
      for (Eigen::Index j = 0; j < c.d; ++j) is >> m(i, j);
    return m;
  };
  while (std::getline(f, line)) {
    std::istringstream is(line);
    std::string key;
    is >> key;
    if (key == "case") {
      cases.emplace_back();
      auto& c = cases.back();
      std::vector<double> nums;
      is >> c.name >> c.loss;
      double x;
      while (is >> x) nums.push_back(x);
      if (nums.size() == 3) c.param["temperature"] = nums[0];  // infonce-family files: tau n d
      c.n = static_cast<Eigen::Index>(nums[nums.size() - 2]);
      c.d = static_cast<Eigen::Index>(nums.back());
      continue;
    }
    if (cases.empty()) continue;
    auto& c = cases.back();
    if (key == "param") {
      std::string k;
      is >> k;
      is >> c.param[k];
    } else if (key == "ids") {
      Eigen::Index id;
      while (is >> id) c.ids.push_back(id);
    } else if (key == "labels") {
      Eigen::Index l;
      while (is >> l) c.labels.push_back(l);
    } else if (key == "per_anchor") {
      double x;
      while (is >> x) c.per_anchor.push_back(x);
    } else if (key == "za") {
      c.za = matrix(is, c);
    } else if (key == "zb") {
      c.zb = matrix(is, c);
    } else if (key == "grad_a") {
      c.grad_a = matrix(is, c);
    } else if (key == "grad_b") {
      c.grad_b = matrix(is, c);
    } else if (key == "value") {
      is >> c.value;
    } else if (key.rfind("grad_", 0) == 0) {
      std::string k = key.substr(5);
      if (k == "tau") k = "temperature";
      is >> c.grad[k];
    }
  }
  return cases;
}

/// The exception FailingKernel throws.
struct InjectedFault : std::runtime_error {
  InjectedFault() : std::runtime_error("injected fault") {}
};

/// NT-Xent's kernel (tau = 0.2) that throws InjectedFault in pass `pass` (1
/// or 2) at the `at`-th tile it is given, counted over all threads; `at` < 0:
/// never.  Stands in for any exception inside the engine's parallel region
/// (e.g. std::bad_alloc from a thread's buffer growth).  The failing tile
/// first sleeps 5 ms, so the other threads run ahead to tiles that wait for
/// its row blocks' turn (which never comes).  It does not
/// declare lower_diagonal (the contract: not inherited), so the engine
/// mirrors its diagonal tiles.
template <typename S>
struct FailingKernel : contrastive::detail::InfoNCEKernel<S> {
  using Base = contrastive::detail::InfoNCEKernel<S>;
  FailingKernel(Eigen::Index n, int pass, long at) : Base(params(), n), pass_(pass), at_(at) {}

  void pass1(contrastive::detail::TileRef<S> x, const contrastive::detail::Tile& t,
             const contrastive::detail::CallStats<S>& cs, contrastive::detail::TileOut<S>& out, bool keep,
             contrastive::detail::ThreadSlot<S>& slot) const {
    if (pass_ == 1 && seen_->fetch_add(1) == at_) fail();
    Base::pass1(x, t, cs, out, keep, slot);
  }
  bool pass2(contrastive::detail::TileRef<S> x, const contrastive::detail::Tile& t, bool kept,
             const contrastive::detail::CallStats<S>& cs, contrastive::detail::PairSums& sums,
             contrastive::detail::ThreadSlot<S>& slot) const {
    if (pass_ == 2 && seen_->fetch_add(1) == at_) fail();
    return Base::pass2(x, t, kept, cs, sums, slot);
  }

 private:
  [[noreturn]] static void fail() {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    throw InjectedFault();
  }
  static contrastive::InfoNCEFamilyParams params() {
    contrastive::InfoNCEFamilyParams p;
    p.temperature = 0.2;
    return p;  // (the family's defaults are NT-Xent's)
  }
  int pass_;
  long at_;
  std::shared_ptr<std::atomic<long>> seen_ = std::make_shared<std::atomic<long>>(0);
};

/// value_and_grad into caller outputs and a Workspace for a two-view loss
/// with 0, 1 or 2 scalar gradients (Loss::kScalarGradients): they go to
/// g[0] and g[1] (g needs room for the loss's count).
template <typename Loss, typename DA, typename DB, typename GA, typename GB, typename S>
S value_and_grad_scalars(const Loss& loss, const DA& za, const DB& zb, GA& ga, GB& gb, S* g,
                         contrastive::Workspace<S>& ws, const contrastive::CallOptions<S>& call = {}) {
  if constexpr (Loss::kScalarGradients == 0) return loss.value_and_grad(za, zb, ga, gb, ws, call);
  else if constexpr (Loss::kScalarGradients == 1) return loss.value_and_grad(za, zb, ga, gb, &g[0], ws, call);
  else return loss.value_and_grad(za, zb, ga, gb, &g[0], &g[1], ws, call);
}

/// Entries of the similarity tiles a Workspace keeps between the passes.
template <typename S>
Eigen::Index cached_tile_entries(const contrastive::Workspace<S>& ws) {
  Eigen::Index entries = 0;
  for (const auto& t : contrastive::detail::buffers(ws).cache) entries += t.size();
  return entries;
}

}  // namespace testing
