// The public header of the exporting library: Eigen types in its interface,
// which is why it links contrastive::contrastive PUBLIC.
#pragma once

#include <Eigen/Core>

namespace trainer {
/// NT-Xent (tau = 0.5) of two views; writes the gradient with respect to za.
float ntxent_step(const Eigen::MatrixXf& za, const Eigen::MatrixXf& zb, Eigen::MatrixXf& grad_a);
}  // namespace trainer
