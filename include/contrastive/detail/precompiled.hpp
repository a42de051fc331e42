// contrastive — the engine instances compiled once (internal).
// SPDX-License-Identifier: MIT
//
// Engine<S>::run<Kernel> is the bulk of what a call of a loss costs to
// compile (the GEMMs, the two passes, their OpenMP regions).  The CMake
// target contrastive::precompiled (option CONTRASTIVE_PRECOMPILED) compiles
// it for float and double and every kernel of the library in
// src/precompiled.cpp, and defines CONTRASTIVE_PRECOMPILED for its users, for
// whom the declarations below turn those instances into calls.  Without the
// definition nothing changes: the library stays header-only.
#pragma once

#include "../alignment_uniformity.hpp"
#include "../combined.hpp"
#include "../debiased.hpp"
#include "../infonce_family.hpp"
#include "../multi_positive.hpp"
#include "../siglip.hpp"
#include "../spectral.hpp"
#include "../supcon.hpp"
#include "../vrns.hpp"
#include "engine_impl.hpp"

namespace contrastive {
namespace detail {
/// Names without commas for the kernels of the list below.
template <typename S>
using SigLIPKernel = AdditiveKernel<S, SigmoidTerms<S>>;
template <typename S>
using SpectralKernel = AdditiveKernel<S, SpectralTerms<S>>;
template <typename S>
using VRNSKernel = AdditiveKernel<S, PenaltyTerms<S>>;
template <typename S>
using CombinedKernel = SumKernel<S, InfoNCEKernel<S>, MixedKernel<S>>;
}  // namespace detail
}  // namespace contrastive

/// X(S, K) for every kernel K<S> the library's losses run.
#define CONTRASTIVE_DETAIL_KERNELS(S, X)                \
  X(S, ::contrastive::detail::InfoNCEKernel<S>)         \
  X(S, ::contrastive::detail::SupConKernel<S>)          \
  X(S, ::contrastive::detail::SupConOneViewKernel<S>)   \
  X(S, ::contrastive::detail::MultiPositiveKernel<S>)   \
  X(S, ::contrastive::detail::DebiasedKernel<S>)        \
  X(S, ::contrastive::detail::SigLIPKernel<S>)          \
  X(S, ::contrastive::detail::SpectralKernel<S>)        \
  X(S, ::contrastive::detail::VRNSKernel<S>)            \
  X(S, ::contrastive::detail::MixedKernel<S>)           \
  X(S, ::contrastive::detail::CombinedKernel<S>)        \
  X(S, ::contrastive::detail::AlignmentKernel<S>)       \
  X(S, ::contrastive::detail::UniformityKernel<S>)

#define CONTRASTIVE_DETAIL_RUN(S, K)                                                                       \
  double ::contrastive::detail::Engine<S>::run<K>(const K&, ::contrastive::detail::Buffers<S>&,            \
                                                  const ::contrastive::EngineOptions&, bool, const char*, \
                                                  const ::contrastive::detail::Distribution&);
#define CONTRASTIVE_DETAIL_EXTERN(S, K) extern template CONTRASTIVE_DETAIL_RUN(S, K)
#define CONTRASTIVE_DETAIL_INSTANCE(S, K) template CONTRASTIVE_DETAIL_RUN(S, K)

#if defined(CONTRASTIVE_PRECOMPILED) && !defined(CONTRASTIVE_DETAIL_COMPILING_INSTANCES)
CONTRASTIVE_DETAIL_KERNELS(float, CONTRASTIVE_DETAIL_EXTERN)
CONTRASTIVE_DETAIL_KERNELS(double, CONTRASTIVE_DETAIL_EXTERN)
#endif
