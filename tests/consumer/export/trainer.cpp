#include "trainer.hpp"

#include <contrastive/infonce_family.hpp>

namespace trainer {
float ntxent_step(const Eigen::MatrixXf& za, const Eigen::MatrixXf& zb, Eigen::MatrixXf& grad_a) {
  const auto r = contrastive::NTXent<float>(0.5f).value_and_grad(za, zb);
  grad_a = r.grad_a;
  return r.value;
}
}  // namespace trainer
