// The context every README snippet may use (tests/CMakeLists.txt pastes each
// snippet into its own scope after this prelude, so the README cannot drift).
#include <contrastive/contrastive.hpp>

#include <cstdio>
#include <vector>

#define CONTRASTIVE_README_PRELUDE                                                     \
  const Eigen::Index n = 16, d = 8;                                                    \
  const Eigen::MatrixXd za = Eigen::MatrixXd::Random(n, d);                            \
  const Eigen::MatrixXd zb = za + 0.3 * Eigen::MatrixXd::Random(n, d);                 \
  Eigen::MatrixXd ga(n, d), gb(n, d);                                                  \
  double dtau = 0;                                                                     \
  contrastive::Workspace<double> ws;                                                   \
  const Eigen::MatrixXf q = Eigen::MatrixXf::Random(n, d);                             \
  const Eigen::MatrixXf k_pos = q + 0.3f * Eigen::MatrixXf::Random(n, d);              \
  const Eigen::MatrixXf k_neg = Eigen::MatrixXf::Random(64, d);                        \
  (void)dtau
