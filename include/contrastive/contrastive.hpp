// contrastive — header-only contrastive losses with exact analytic gradients.
// SPDX-License-Identifier: MIT
//
// Umbrella header: include this one (or only the loss headers you use).
#pragma once

#include "version.hpp"

#include "api.hpp"
#include "engine.hpp"
#include "two_view_loss.hpp"
#include "one_view_loss.hpp"
#include "infonce_family.hpp"
#include "supcon.hpp"
#include "multi_positive.hpp"
#include "debiased.hpp"
#include "siglip.hpp"
#include "spectral.hpp"
#include "vrns.hpp"
#include "combined.hpp"
#include "negative_keys.hpp"
#include "sampled_negatives.hpp"
#include "memory_bank.hpp"
#include "diagnostics.hpp"
