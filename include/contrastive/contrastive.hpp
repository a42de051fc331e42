// contrastive — header-only contrastive losses with exact analytic gradients.
// SPDX-License-Identifier: MIT
//
// Umbrella header: include this one.
#pragma once

#define CONTRASTIVE_VERSION_MAJOR 0
#define CONTRASTIVE_VERSION_MINOR 1
#define CONTRASTIVE_VERSION_PATCH 0

#include "engine.hpp"
#include "infonce_family.hpp"
#include "additive_family.hpp"
#include "combined.hpp"
#include "diagnostics.hpp"
#include "supcon.hpp"
#include "negatives.hpp"
