// contrastive — a learned temperature kept as CLIP keeps it: the log of the
// logit scale, projected after every optimizer step.
// SPDX-License-Identifier: MIT
//
// open_clip's parameter `logit_scale` is phi = log t, t = 1/tau the logit
// scale (init ln(1/0.07) ~ 2.6593); the forward uses t = e^phi, and after each
// optimizer step the trainer projects phi onto [0, ln 100], i.e. t in
// [1, 100], tau in [0.01, 1]:
//
//     with torch.no_grad(): model.logit_scale.clamp_(0, math.log(100))
//
// The chain rule from the losses' scalar gradients:
//
//     dL/dphi = t dL/dt = -tau dL/dtau.
//
// The projection is not part of the loss: the gradient is the loss's exact
// dL/dphi wherever phi is, and the clamp moves phi back into its interval
// after the step.  Clamping inside the loss instead (tau = max(e^-phi,
// 0.01)) would make dL/dphi = 0 beyond the bound, so a phi that stepped past
// it would never get a gradient to come back (tests/data/REFERENCE_LOSSES.md
// §8).
#pragma once

#include <algorithm>
#include <cmath>

#include "detail/checks.hpp"

namespace contrastive {

/// A learned temperature in log space, as open_clip keeps it: phi = log t
/// with t = 1/tau the logit scale.  Typical step (any optimizer on phi):
///
///     contrastive::LogitScale ls;                  // phi = ln(1/0.07)
///     loss.set_temperature(ls.temperature());
///     loss.value_and_grad(za, zb, ga, gb, &dtau, ws);
///     ls.set_log_scale(ls.log_scale() - lr * ls.grad_log_scale(dtau));
///     ls.clamp();                                  // CLIP's projection onto [0, ln 100]
///
/// For a loss with a logit scale t instead (SigLIP: dL/dt),
/// grad_log_scale_from_scale(dL_dt) gives the same dL/dphi.  Every input is
/// validated (finite), std::invalid_argument naming it otherwise.
class LogitScale {
 public:
  /// CLIP's initial phi, ln(1/0.07) (t = 14.29, tau = 0.07).
  static constexpr double kInitialLogScale = 2.659260036932778;
  /// The lower end of CLIP's projection: phi = 0 (t = 1, tau = 1).
  static constexpr double kMinLogScale = 0.0;
  /// The upper end of CLIP's projection: phi = ln 100 (t = 100, tau = 0.01).
  static constexpr double kMaxLogScale = 4.605170185988092;

  /// phi = `log_scale` (finite; not projected: call clamp() for that).
  explicit LogitScale(double log_scale = kInitialLogScale) { set_log_scale(log_scale); }

  /// The LogitScale of temperature tau (finite, > 0): phi = -ln tau.
  static LogitScale from_temperature(double tau) {
    if (!(std::isfinite(tau) && tau > 0.0)) detail::fail(kName, "tau", "must be finite and > 0 " + detail::got(tau));
    return LogitScale(-std::log(tau));
  }

  /// phi, the parameter an optimizer updates.
  double log_scale() const { return phi_; }
  /// t = e^phi, the logit scale.
  double scale() const { return std::exp(phi_); }
  /// tau = e^-phi, the temperature to give the loss (set_temperature).
  double temperature() const { return std::exp(-phi_); }

  /// Sets phi (e.g. after an optimizer step); throws naming 'log_scale'
  /// unless it is finite.
  void set_log_scale(double log_scale) {
    if (!std::isfinite(log_scale)) detail::fail(kName, "log_scale", "must be finite " + detail::got(log_scale));
    phi_ = log_scale;
  }

  /// dL/dphi from the loss's dL/dtau at tau = temperature(): -tau dL/dtau.
  double grad_log_scale(double dL_dtau) const {
    if (!std::isfinite(dL_dtau)) detail::fail(kName, "dL_dtau", "must be finite " + detail::got(dL_dtau));
    return -temperature() * dL_dtau;
  }
  /// dL/dphi from a loss's dL/dt at t = scale() (SigLIP): t dL/dt.
  double grad_log_scale_from_scale(double dL_dt) const {
    if (!std::isfinite(dL_dt)) detail::fail(kName, "dL_dt", "must be finite " + detail::got(dL_dt));
    return scale() * dL_dt;
  }

  /// CLIP's projection after an optimizer step: phi onto [0, ln 100].
  /// Returns true when phi was outside (and has been moved to the bound).
  bool clamp() {
    const double p = std::min(std::max(phi_, kMinLogScale), kMaxLogScale);
    const bool moved = p != phi_;
    phi_ = p;
    return moved;
  }

 private:
  static constexpr const char* kName = "contrastive::LogitScale";
  double phi_ = kInitialLogScale;
};

}  // namespace contrastive
