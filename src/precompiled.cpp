// contrastive::precompiled: the engine's float and double instances for
// every kernel of the library, compiled once (see detail/precompiled.hpp).
// SPDX-License-Identifier: MIT
#define CONTRASTIVE_DETAIL_COMPILING_INSTANCES
#include <contrastive/contrastive.hpp>

CONTRASTIVE_DETAIL_KERNELS(float, CONTRASTIVE_DETAIL_INSTANCE)
CONTRASTIVE_DETAIL_KERNELS(double, CONTRASTIVE_DETAIL_INSTANCE)
