// contrastive — libtorch adapter: every loss as a node of libtorch's autograd
// graph, on CPU tensors.
// SPDX-License-Identifier: MIT
//
// Optional: this header needs libtorch (CMake target contrastive::torch, or
// find_package(contrastive COMPONENTS torch)); contrastive.hpp does not
// include it and the rest of the library does not depend on torch.
//
//   const contrastive::NTXent<float> ntxent;                 // Scalar = the tensors' dtype
//   torch::Tensor tau = ...;                                 // learned, requires_grad
//   torch::Tensor loss = contrastive::tch::apply(ntxent, za, zb,
//                            contrastive::tch::Options{}.with_temperature(tau));
//   loss.backward();                                         // za.grad(), zb.grad(), tau.grad()
//
// What happens in a call:
//
// * Inputs are viewed, not copied: any 2-D CPU tensor of the loss's Scalar
//   (float32 for Loss<float>, float64 for Loss<double>), contiguous or
//   strided (a transposed view, a slice, an expanded tensor), is read through
//   an Eigen::Map with the tensor's strides.
// * Gradients are computed eagerly.  The library computes the value and
//   every gradient in one pass, so when grad mode is on and an input requires
//   grad, the forward call runs value_and_grad, keeps dL/dinput (one
//   contiguous tensor per matrix input) and the scalar derivatives, and the
//   backward only multiplies them by the upstream gradient.  When nothing
//   requires grad (or under torch::NoGradGuard / InferenceMode) it runs the
//   cheaper value-only pass.  Reduction::None is the exception: its backward
//   needs the upstream gradient as anchor weights, so the forward computes
//   the per-anchor losses only and the backward runs one gradient pass (two
//   when the upstream gradient has entries of both signs; see Options).
// * The temperature (SigLIP: logit scale t and bias b) may be a tensor: its
//   value replaces the loss's parameter for this call (on a copy of the loss)
//   and it receives dL/dtau (dL/dt, dL/db).  Without one the loss's own
//   parameter is used and no derivative is formed.
// * The returned gradients are not differentiable again: under
//   create_graph=true they carry a node that throws if a second backward
//   reaches it (as PyTorch's once_differentiable).
//
// Errors: std::invalid_argument, whose message names the argument
// ("contrastive::tch: argument 'za' is on cuda:0; only CPU tensors are
// supported"), thrown before anything is computed or recorded; the loss's
// own std::invalid_argument (bad values, shapes, ids) propagates unchanged.
//
// Threads: each thread computes in its own thread_local Workspace per
// Scalar (thread_workspace<S>()), so a training loop reuses the buffers of
// the previous step and several threads may call the adapter at the same
// time; release_thread_workspaces() frees the calling thread's buffers.
// The library's tile loop runs on OpenMP's threads (EngineOptions::num_threads;
// torch::set_num_threads also sets OpenMP's default in a libtorch built with
// OpenMP, as Debian's is).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <Eigen/Core>

#include "contrastive.hpp"

namespace contrastive {

/// libtorch adapter (`contrastive/torch.hpp`): apply() runs any loss of the
/// library on CPU tensors as a node of libtorch's autograd graph.
namespace tch {

/// The tensors and the reduction of one apply() call.  Every field is
/// optional (an undefined at::Tensor is "not given"); chainable setters as
/// in contrastive::CallOptions:
///
///     contrastive::tch::Options{}.with_temperature(tau).with_ids(ids)
struct Options {
  /// tau as a one-element floating tensor (float32 or float64, any shape
  /// with one element, CPU): replaces the loss's temperature for this call
  /// and receives dL/dtau.  Losses with a temperature: the InfoNCE family,
  /// SupCon, SampledNegatives, Combined / WithVRNS with a base loss,
  /// InfoNCEWithNegatives.
  at::Tensor temperature;
  /// SigLIP's logit scale t (one element, as #temperature); receives dL/dt.
  at::Tensor logit_scale;
  /// SigLIP's logit bias b (one element, as #temperature); receives dL/db.
  at::Tensor logit_bias;
  /// Instance ids: 1-D int64 CPU tensor, one per row of the first input
  /// (CallOptions::instance_ids).
  at::Tensor instance_ids;
  /// Class labels: 1-D int64 CPU tensor, one per row (SupCon; CallOptions::labels).
  at::Tensor labels;
  /// Per-anchor weights w_r: 1-D CPU tensor of the inputs' dtype, one per
  /// anchor (CallOptions::anchor_weights), finite and >= 0.  May require
  /// grad (it receives l_r, divided by the number of anchors with
  /// Reduction::Mean).  Not with Reduction::None.
  at::Tensor anchor_weights;
  /// Mean (default) and Sum return a 0-dimensional tensor.  None returns the
  /// per-anchor losses l_r (a 1-D tensor, one per anchor); their backward
  /// passes the upstream gradient as anchor weights, which is the exact
  /// chain rule (split into its positive and negative parts when it has
  /// both, one gradient pass each).
  Reduction reduction = Reduction::Mean;

  /// Sets #temperature; returns *this.
  Options& with_temperature(at::Tensor tau) {
    temperature = std::move(tau);
    return *this;
  }
  /// Sets #temperature to a constant (no derivative is formed); returns *this.
  Options& with_temperature(double tau) { return with_temperature(at::scalar_tensor(tau, at::kDouble)); }
  /// Sets #logit_scale; returns *this.
  Options& with_logit_scale(at::Tensor t) {
    logit_scale = std::move(t);
    return *this;
  }
  /// Sets #logit_scale to a constant; returns *this.
  Options& with_logit_scale(double t) { return with_logit_scale(at::scalar_tensor(t, at::kDouble)); }
  /// Sets #logit_bias; returns *this.
  Options& with_logit_bias(at::Tensor b) {
    logit_bias = std::move(b);
    return *this;
  }
  /// Sets #logit_bias to a constant; returns *this.
  Options& with_logit_bias(double b) { return with_logit_bias(at::scalar_tensor(b, at::kDouble)); }
  /// Sets #instance_ids; returns *this.
  Options& with_ids(at::Tensor ids) {
    instance_ids = std::move(ids);
    return *this;
  }
  /// Sets #labels; returns *this.
  Options& with_labels(at::Tensor l) {
    labels = std::move(l);
    return *this;
  }
  /// Sets #anchor_weights; returns *this.
  Options& with_weights(at::Tensor w) {
    anchor_weights = std::move(w);
    return *this;
  }
  /// Sets #reduction; returns *this.
  Options& with_reduction(Reduction r) {
    reduction = r;
    return *this;
  }
};

/// The calling thread's workspace for Scalar S, reused by every apply() and
/// backward on this thread (thread_local: threads never share one).
template <typename S>
Workspace<S>& thread_workspace() {
  thread_local Workspace<S> ws;
  return ws;
}

/// Frees the buffers of the calling thread's workspaces (float and double);
/// the next call allocates them again.
inline void release_thread_workspaces() {
  thread_workspace<float>() = Workspace<float>();
  thread_workspace<double>() = Workspace<double>();
}

namespace internal {

/// Throws std::invalid_argument "contrastive::tch: argument '<arg>' <problem>".
[[noreturn]] inline void fail(const std::string& arg, const std::string& problem) {
  throw std::invalid_argument("contrastive::tch: argument '" + arg + "' " + problem);
}

template <typename C>
struct CallScalar;
template <typename S>
struct CallScalar<CallOptions<S>> {
  using type = S;
};
/// The Scalar a loss computes in (every loss has Call = CallOptions<Scalar>).
template <typename Loss>
using ScalarOf = typename CallScalar<typename Loss::Call>::type;

template <typename L>
struct IsNegatives : std::false_type {};
template <typename S>
struct IsNegatives<InfoNCEWithNegatives<S>> : std::true_type {};
template <typename L>
struct IsSigLIP : std::false_type {};
template <typename S>
struct IsSigLIP<SigLIP<S>> : std::true_type {};

template <typename L, typename = void>
struct CountScalars {
  static constexpr int value = 1;  // InfoNCEWithNegatives: dL/dtau
};
template <typename L>
struct CountScalars<L, std::void_t<decltype(L::kScalarGradients)>> {
  static constexpr int value = L::kScalarGradients;
};

/// Whether the loss's scalar parameter is a temperature (set_temperature).
template <typename L, typename = void>
struct HasTemperature : std::false_type {};
template <typename L>
struct HasTemperature<L, std::void_t<decltype(std::declval<L&>().set_temperature(0.5))>> : std::true_type {};

template <typename S>
constexpr at::ScalarType kDtype = std::is_same<S, float>::value ? at::kFloat : at::kDouble;

inline std::string dtype_name(at::ScalarType t) {
  if (t == at::kFloat) return "float32";
  if (t == at::kDouble) return "float64";
  return c10::toString(t);
}

inline std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t k = 0; k < t.dim(); ++k) s += (k ? ", " : "") + std::to_string(t.size(k));
  return s + "]";
}

/// Device, layout and dtype common to every tensor argument.
inline void check_cpu(const at::Tensor& t, const std::string& arg) {
  if (!t.device().is_cpu())
    fail(arg, "is on " + t.device().str() + "; only CPU tensors are supported (move it with .cpu())");
  if (t.layout() != at::kStrided) fail(arg, "is not a dense (strided) tensor; only dense tensors are supported");
}

/// A matrix input: CPU, dense, 2-D, the loss's Scalar.
template <typename S>
void check_matrix(const at::Tensor& t, const std::string& arg, const char* loss) {
  if (!t.defined()) fail(arg, "is an undefined tensor");
  check_cpu(t, arg);
  const at::ScalarType dt = t.scalar_type();
  if (dt != at::kFloat && dt != at::kDouble)
    fail(arg, "has dtype " + dtype_name(dt) + "; only float32 and float64 are supported");
  if (dt != kDtype<S>)
    fail(arg, "has dtype " + dtype_name(dt) + " but " + loss + "<" + (sizeof(S) == 4 ? "float" : "double") +
                  "> computes in " + dtype_name(kDtype<S>) + ": use the loss's " +
                  (sizeof(S) == 4 ? "double" : "float") + " instantiation, or convert the tensor with .to()");
  if (t.dim() != 2) fail(arg, "has shape " + shape_of(t) + "; expected 2 dimensions (rows are samples)");
}

/// A scalar parameter: one floating element on the CPU; returns its value.
inline double scalar_value(const at::Tensor& t, const std::string& arg) {
  check_cpu(t, arg);
  const at::ScalarType dt = t.scalar_type();
  if (dt != at::kFloat && dt != at::kDouble)
    fail(arg, "has dtype " + dtype_name(dt) + "; only float32 and float64 are supported");
  if (t.numel() != 1) fail(arg, "has shape " + shape_of(t) + "; expected a single element");
  return t.item<double>();
}

/// Ids or labels: a 1-D int64 CPU tensor, made contiguous (a copy only when
/// it is strided).
inline at::Tensor index_vector(const at::Tensor& t, const std::string& arg) {
  static_assert(sizeof(Eigen::Index) == sizeof(int64_t), "contrastive::tch: Eigen::Index must be 64-bit");
  check_cpu(t, arg);
  if (t.scalar_type() != at::kLong)
    fail(arg, "has dtype " + dtype_name(t.scalar_type()) + "; expected int64 (torch::kLong)");
  if (t.dim() != 1) fail(arg, "has shape " + shape_of(t) + "; expected 1 dimension (one entry per row)");
  return t.contiguous();
}

template <typename S>
using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// A read-only view of a strided 2-D tensor (no copy).
template <typename S>
using InView = Eigen::Map<const RowMat<S>, Eigen::Unaligned, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
/// A writable view of a contiguous 2-D tensor.
template <typename S>
using OutView = Eigen::Map<RowMat<S>>;

template <typename S>
InView<S> in_view(const at::Tensor& t) {
  return InView<S>(t.data_ptr<S>(), t.size(0), t.size(1), Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(t.stride(0), t.stride(1)));
}
template <typename S>
OutView<S> out_view(at::Tensor& t) {
  return OutView<S>(t.data_ptr<S>(), t.size(0), t.size(1));
}

/// A span over a contiguous 1-D tensor.
template <typename T>
Span<const T> span_of(const at::Tensor& t) {
  return Span<const T>(reinterpret_cast<const T*>(t.data_ptr()), static_cast<std::size_t>(t.numel()));
}

/// The inputs of a call, checked: the matrices (the third only for explicit
/// negative keys), the scalar tensors, weights, ids and labels.
struct Inputs {
  at::Tensor m[3];       // za, zb[, negative_keys]
  at::Tensor scalar[2];  // temperature or (logit_scale, logit_bias)
  at::Tensor weights, ids, labels;
  int matrices = 2;
};

/// Index of the matrix inputs, scalars and weights among a node's edges.
constexpr std::size_t kScalarEdge = 3, kWeightEdge = 5, kEdges = 6;

/// What one library call computes: the value and, when asked, the
/// gradients (each matrix gradient a fresh contiguous tensor).
template <typename S>
struct Pass {
  S value = 0;
  at::Tensor grad[3];
  S scalar[2] = {0, 0};
};

/// Runs the loss on the inputs: value only (grad = false) or value and
/// gradients (want_keys: also into the negative keys; want_scalar[k]: the
/// k-th scalar derivative).
template <typename Loss, typename S = ScalarOf<Loss>>
Pass<S> run_loss(const Loss& loss, const Inputs& in, bool grad, bool want_keys, const bool want_scalar[2],
                 const CallOptions<S>& call) {
  Workspace<S>& ws = thread_workspace<S>();
  Pass<S> p;
  const InView<S> a = in_view<S>(in.m[0]), b = in_view<S>(in.m[1]);
  if (!grad) {
    if constexpr (IsNegatives<Loss>::value)
      p.value = loss.value(a, b, in_view<S>(in.m[2]), ws, call);
    else
      p.value = loss.value(a, b, ws, call);
    return p;
  }
  p.grad[0] = at::empty(in.m[0].sizes(), in.m[0].options());
  p.grad[1] = at::empty(in.m[1].sizes(), in.m[1].options());
  OutView<S> ga = out_view<S>(p.grad[0]), gb = out_view<S>(p.grad[1]);
  S* s0 = want_scalar[0] ? &p.scalar[0] : nullptr;
  S* s1 = want_scalar[1] ? &p.scalar[1] : nullptr;
  if constexpr (IsNegatives<Loss>::value) {
    const InView<S> k = in_view<S>(in.m[2]);
    if (want_keys) {
      p.grad[2] = at::empty(in.m[2].sizes(), in.m[2].options());
      OutView<S> gk = out_view<S>(p.grad[2]);
      p.value = loss.value_and_grad(a, b, k, ga, gb, gk, s0, ws, call);
    } else {
      p.value = loss.value_and_grad(a, b, k, ga, gb, nullptr, s0, ws, call);
    }
  } else if constexpr (CountScalars<Loss>::value == 0) {
    p.value = loss.value_and_grad(a, b, ga, gb, ws, call);
  } else if constexpr (CountScalars<Loss>::value == 1) {
    p.value = loss.value_and_grad(a, b, ga, gb, s0, ws, call);
  } else {
    p.value = loss.value_and_grad(a, b, ga, gb, s0, s1, ws, call);
  }
  return p;
}

/// The autograd node of one apply() call: holds the loss (with this call's
/// parameters) and either the gradients computed in the forward call
/// (Reduction::Mean, Sum) or the inputs, to run the gradient pass with the
/// upstream gradient as anchor weights (Reduction::None).  Its edges are
/// [input 0, input 1, negative keys, scalar 0, scalar 1, anchor weights];
/// absent inputs have empty edges.
template <typename Loss>
class LossNode final : public ::torch::autograd::Node {
  using S = ScalarOf<Loss>;

 public:
  LossNode(const Loss& loss, Reduction reduction) : loss_(loss), reduction_(reduction) {}

  std::string name() const override { return std::string("contrastive::tch::LossBackward<") + loss_.name() + ">"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& g : grad_) g.reset();
    for (auto& v : saved_) v.reset_data();
    per_anchor_.reset();
    released_ = true;
  }

  ::torch::autograd::variable_list apply(::torch::autograd::variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (released_)
      throw std::runtime_error("contrastive::tch: trying to backward through " + name() +
                               " a second time, after its saved tensors were freed; pass retain_graph=true to "
                               "the first backward");
    const bool create_graph = at::GradMode::is_enabled();
    ::torch::autograd::variable_list out(kEdges);
    if (grads.empty() || !grads[0].defined()) return out;
    {
      at::NoGradGuard no_grad;
      if (reduction_ == Reduction::None)
        backward_none(grads[0], out);
      else
        backward_reduced(grads[0], out);
    }
    if (create_graph) once_differentiable(out);
    return out;
  }

  // Set by apply() before the node enters the graph.
  Loss loss_;                        ///< the loss with this call's parameters
  Reduction reduction_;              ///< the call's reduction
  at::Tensor ids_, labels_;          ///< contiguous int64, or undefined
  at::Tensor grad_[3];               ///< Mean / Sum: dL/dinput of the inputs that need it
  S scalar_grad_[2] = {0, 0};        ///< Mean / Sum: dL/dscalar
  at::Tensor per_anchor_;            ///< Mean / Sum with weights that need a gradient: l_r
  Eigen::Index anchors_ = 0;         ///< number of anchors
  ::torch::autograd::SavedVariable saved_[3];  ///< None: the matrix inputs
  int matrices_ = 2;                 ///< number of matrix inputs
  std::vector<int64_t> scalar_shape_[2];  ///< shapes of the scalar inputs
  at::ScalarType scalar_dtype_[2] = {at::kDouble, at::kDouble};  ///< and their dtypes

 private:
  bool needs(std::size_t edge) const { return task_should_compute_output(edge); }

  at::Tensor scalar_grad(std::size_t k, double value) const {
    return at::full(scalar_shape_[k], value, at::TensorOptions().dtype(scalar_dtype_[k]));
  }

  void backward_reduced(const at::Tensor& g, ::torch::autograd::variable_list& out) const {
    const double gv = g.item<double>();
    for (std::size_t i = 0; i < 3; ++i)
      if (grad_[i].defined() && needs(i)) out[i] = grad_[i] * g;
    for (std::size_t k = 0; k < 2; ++k)
      if (needs(kScalarEdge + k)) out[kScalarEdge + k] = scalar_grad(k, gv * static_cast<double>(scalar_grad_[k]));
    if (per_anchor_.defined() && needs(kWeightEdge)) {
      const double scale = reduction_ == Reduction::Mean ? 1.0 / static_cast<double>(anchors_) : 1.0;
      out[kWeightEdge] = per_anchor_ * (gv * scale);
    }
  }

  // The gradient of sum_r g_r l_r: one pass with weights g+ = max(g, 0) and
  // one with g- = max(-g, 0) when there are negative entries, both scaled
  // by 1 / max|g| into [0, 1] (the loss takes weights in [0, 1e12]).
  void backward_none(const at::Tensor& g_in, ::torch::autograd::variable_list& out) {
    Inputs in;
    in.matrices = matrices_;
    for (int i = 0; i < matrices_; ++i) in.m[i] = saved_[i].unpack();
    const at::Tensor g = g_in.to(kDtype<S>).contiguous();
    const double top = g.numel() > 0 ? g.abs().max().item<double>() : 0.0;
    if (!std::isfinite(top))
      fail("grad_output", "of " + std::string(loss_.name()) +
                              "'s per-anchor losses has a non-finite entry; their gradient is not defined");
    const bool want_keys = matrices_ == 3 && needs(2);
    const bool want_scalar[2] = {needs(kScalarEdge), needs(kScalarEdge + 1)};
    double scalar[2] = {0, 0};
    for (const int sign : {1, -1}) {
      if (!(top > 0)) break;
      const at::Tensor w = (g * (sign / top)).clamp_min(0).contiguous();
      if (!(w > 0).any().item<bool>()) continue;
      CallOptions<S> call;
      call.reduction = Reduction::Sum;
      call.anchor_weights = span_of<S>(w);
      if (ids_.defined()) call.instance_ids = span_of<Eigen::Index>(ids_);
      if (labels_.defined()) call.labels = span_of<Eigen::Index>(labels_);
      Pass<S> p = run_loss(loss_, in, true, want_keys, want_scalar, call);
      const double f = sign * top;
      for (std::size_t i = 0; i < 3; ++i) {
        if (!p.grad[i].defined() || !needs(i)) continue;
        out[i] = out[i].defined() ? out[i].add_(p.grad[i], f) : p.grad[i].mul_(f);
      }
      for (std::size_t k = 0; k < 2; ++k) scalar[k] += f * static_cast<double>(p.scalar[k]);
    }
    for (std::size_t i = 0; i < 3; ++i)
      if (static_cast<int>(i) < matrices_ && needs(i) && !out[i].defined()) out[i] = at::zeros_like(in.m[i]);
    for (std::size_t k = 0; k < 2; ++k)
      if (needs(kScalarEdge + k)) out[kScalarEdge + k] = scalar_grad(k, scalar[k]);
  }

  // As PyTorch's once_differentiable: under create_graph the gradients get a
  // node whose edges lead to this node's inputs and which throws when a
  // second backward reaches it.
  void once_differentiable(::torch::autograd::variable_list& out) const {
    std::shared_ptr<::torch::autograd::Error> err(
        new ::torch::autograd::Error(
            "contrastive::tch: the gradients of a contrastive loss are computed analytically and cannot be "
            "differentiated again (double backward is not supported)",
            ::torch::autograd::edge_list(next_edges())),
        ::torch::autograd::deleteNode);
    for (auto& t : out)
      if (t.defined()) ::torch::autograd::create_gradient_edge(t, err);
  }

  bool released_ = false;
};

/// The loss with this call's scalar parameters (a copy, only when a scalar
/// tensor is given), after checking which scalars the loss has.
template <typename Loss>
std::optional<Loss> with_scalars(const Loss& loss, const Options& o, Inputs& in) {
  constexpr int count = CountScalars<Loss>::value;
  const std::string name = loss.name();
  if constexpr (IsSigLIP<Loss>::value) {
    if (o.temperature.defined())
      fail("options.temperature", "is given but " + name + " has no temperature (it takes options.logit_scale and "
                                                           "options.logit_bias)");
    if (!o.logit_scale.defined() && !o.logit_bias.defined()) return std::nullopt;
    SigLIPParams p = loss.params();
    if (o.logit_scale.defined()) p.logit_scale = scalar_value(o.logit_scale, "options.logit_scale");
    if (o.logit_bias.defined()) p.logit_bias = scalar_value(o.logit_bias, "options.logit_bias");
    in.scalar[0] = o.logit_scale;
    in.scalar[1] = o.logit_bias;
    std::optional<Loss> copy(loss);
    copy->set_params(p);
    return copy;
  } else {
    if (o.logit_scale.defined() || o.logit_bias.defined())
      fail(o.logit_scale.defined() ? "options.logit_scale" : "options.logit_bias",
           "is given but " + name + " has no logit scale or bias (SigLIP's)");
    if (!o.temperature.defined()) return std::nullopt;
    if constexpr (count == 0 || !HasTemperature<Loss>::value) {
      fail("options.temperature", "is given but " + name + " has no temperature");
    } else {
      const double tau = scalar_value(o.temperature, "options.temperature");
      in.scalar[0] = o.temperature;
      std::optional<Loss> copy(loss);
      copy->set_temperature(tau);
      return copy;
    }
  }
}

/// apply() for every loss: checks, runs the loss and, when grad mode is on
/// and an input requires grad, records a LossNode.
template <typename Loss>
at::Tensor apply_loss(const Loss& loss_in, Inputs in, const char* const names[3], const Options& o) {
  using S = ScalarOf<Loss>;
  const char* loss_name = loss_in.name();
  for (int i = 0; i < in.matrices; ++i) {
    check_matrix<S>(in.m[i], names[i], loss_name);
    if (in.m[i].is_neg()) in.m[i] = in.m[i].resolve_neg();  // a lazily negated view: materialise it
  }
  const std::optional<Loss> adjusted = with_scalars(loss_in, o, in);
  const Loss& loss = adjusted ? *adjusted : loss_in;
  if (o.instance_ids.defined()) in.ids = index_vector(o.instance_ids, "options.instance_ids");
  if (o.labels.defined()) in.labels = index_vector(o.labels, "options.labels");
  if (o.anchor_weights.defined()) {
    const at::Tensor& w = o.anchor_weights;
    check_cpu(w, "options.anchor_weights");
    if (w.scalar_type() != kDtype<S>)
      fail("options.anchor_weights", "has dtype " + dtype_name(w.scalar_type()) + "; expected the inputs' " +
                                         dtype_name(kDtype<S>));
    if (w.dim() != 1) fail("options.anchor_weights", "has shape " + shape_of(w) + "; expected 1 dimension");
    if (o.reduction == Reduction::None)
      fail("options.anchor_weights",
           "is given with Reduction::None, which returns the unweighted per-anchor losses: weight the result "
           "instead (its gradient is exact)");
    in.weights = w;
  }

  const bool grad_mode = at::GradMode::is_enabled();
  bool needs_grad[kEdges] = {};
  for (int i = 0; i < in.matrices; ++i) needs_grad[i] = in.m[i].requires_grad();
  for (std::size_t k = 0; k < 2; ++k) needs_grad[kScalarEdge + k] = in.scalar[k].defined() && in.scalar[k].requires_grad();
  needs_grad[kWeightEdge] = in.weights.defined() && in.weights.requires_grad();
  bool any = false;
  for (bool r : needs_grad) any = any || r;
  any = any && grad_mode;

  const Eigen::Index n = in.m[0].size(0);
  const Eigen::Index anchors = loss.anchors(n);
  CallOptions<S> call;
  call.reduction = o.reduction;
  at::Tensor weights = in.weights.defined() ? in.weights.contiguous() : at::Tensor();
  if (weights.defined()) call.anchor_weights = span_of<S>(weights);
  if (in.ids.defined()) call.instance_ids = span_of<Eigen::Index>(in.ids);
  if (in.labels.defined()) call.labels = span_of<Eigen::Index>(in.labels);
  at::Tensor per_anchor;
  const bool none = o.reduction == Reduction::None;
  if (none || (any && needs_grad[kWeightEdge])) {
    per_anchor = at::empty({static_cast<int64_t>(anchors)}, in.m[0].options());
    call.per_anchor = Span<S>(per_anchor.data_ptr<S>(), static_cast<std::size_t>(anchors));
  }

  const bool eager = any && !none;
  const bool want_scalar[2] = {eager && needs_grad[kScalarEdge], eager && needs_grad[kScalarEdge + 1]};
  Pass<S> p;
  {
    at::NoGradGuard no_grad;
    p = run_loss(loss, in, eager, eager && needs_grad[2], want_scalar, call);
  }
  at::Tensor out = none ? per_anchor : at::scalar_tensor(static_cast<double>(p.value), in.m[0].options());
  if (!any) return out;

  std::shared_ptr<LossNode<Loss>> node(new LossNode<Loss>(loss, o.reduction), ::torch::autograd::deleteNode);
  node->set_next_edges(::torch::autograd::collect_next_edges(in.m[0], in.m[1], in.m[2], in.scalar[0], in.scalar[1],
                                                              in.weights));
  node->matrices_ = in.matrices;
  node->anchors_ = anchors;
  node->ids_ = in.ids;
  node->labels_ = in.labels;
  for (std::size_t k = 0; k < 2; ++k)
    if (in.scalar[k].defined()) {
      node->scalar_shape_[k] = in.scalar[k].sizes().vec();
      node->scalar_dtype_[k] = in.scalar[k].scalar_type();
    }
  if (none) {
    for (int i = 0; i < in.matrices; ++i) node->saved_[i] = ::torch::autograd::SavedVariable(in.m[i], false);
  } else {
    for (std::size_t i = 0; i < 3; ++i)
      if (needs_grad[i]) node->grad_[i] = p.grad[i];
    node->scalar_grad_[0] = p.scalar[0];
    node->scalar_grad_[1] = p.scalar[1];
    if (needs_grad[kWeightEdge]) node->per_anchor_ = per_anchor;
  }
  ::torch::autograd::create_gradient_edge(out, node);
  return out;
}

}  // namespace internal

/// The loss of two views za, zb (n x d, rows are samples) as a libtorch
/// autograd operation: any two-view loss of the library (the InfoNCE family
/// and its presets, SupCon, SigLIP, Spectral, VRNS, Combined, WithVRNS,
/// SampledNegatives).  The tensors' dtype must be the loss's Scalar
/// (float32 for Loss<float>, float64 for Loss<double>); they must be CPU
/// tensors, any strides.  Returns a 0-dimensional tensor (Reduction::Mean,
/// Sum) or the per-anchor losses (None); za, zb and the tensors of
/// `options` that require grad receive their gradients in backward.
/// Throws std::invalid_argument naming the argument (see the top of this
/// header); the loss's own errors propagate.
template <typename Loss>
at::Tensor apply(const Loss& loss, const at::Tensor& za, const at::Tensor& zb, const Options& options = {}) {
  static_assert(!internal::IsNegatives<Loss>::value,
                "contrastive::tch::apply: InfoNCEWithNegatives takes three tensors (query, positive_key, "
                "negative_keys)");
  internal::Inputs in;
  in.m[0] = za;
  in.m[1] = zb;
  in.matrices = 2;
  static const char* const names[3] = {"za", "zb", ""};
  return internal::apply_loss(loss, std::move(in), names, options);
}

/// InfoNCE against explicit negative keys as a libtorch autograd operation:
/// query and positive_key n x d, negative_keys M x d (Shared) or (n k) x d
/// (PerQuery), all CPU tensors of the loss's Scalar.  negative_keys
/// receives a gradient only when it requires grad (keys from a memory bank
/// usually do not: one GEMM less).
template <typename S>
at::Tensor apply(const InfoNCEWithNegatives<S>& loss, const at::Tensor& query, const at::Tensor& positive_key,
                 const at::Tensor& negative_keys, const Options& options = {}) {
  internal::Inputs in;
  in.m[0] = query;
  in.m[1] = positive_key;
  in.m[2] = negative_keys;
  in.matrices = 3;
  static const char* const names[3] = {"query", "positive_key", "negative_keys"};
  return internal::apply_loss(loss, std::move(in), names, options);
}

}  // namespace tch
}  // namespace contrastive
