// A downstream program: one NT-Xent call in float and double.
#include <contrastive/contrastive.hpp>

#include <cmath>
#include <cstdio>

int main() {
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(16, 8), b = Eigen::MatrixXf::Random(16, 8);
  const auto rf = contrastive::NTXent<float>(0.5f).value_and_grad(a, b);
  const auto rd = contrastive::NTXent<double>(0.5).value_and_grad(a.cast<double>(), b.cast<double>());
  const bool ok = std::isfinite(rf.value) && std::abs(rf.value - static_cast<float>(rd.value)) < 1e-4f;
  std::printf("%s (NT-Xent %.6f)\n", ok ? "consumer ok" : "consumer FAILED", rd.value);
  return ok ? 0 : 1;
}
