// A downstream program: one NT-Xent call.  It includes one loss header (not
// the umbrella) so that each consumer test compiles in a few seconds.
//
// Built by every consumer test (tests/consumer/run_consumer.cmake) and by
// tests/package.sh against the installed .deb.  CONSUMER_EXPECT_OPENMP, when
// the harness defines it, is whether the library was configured with OpenMP:
// the flags that reach this file through contrastive::contrastive must agree.
#include <contrastive/infonce_family.hpp>
#include <contrastive/version.hpp>

#include <cmath>
#include <cstdio>

#if defined(CONSUMER_EXPECT_OPENMP)
#if CONSUMER_EXPECT_OPENMP && !defined(_OPENMP)
#error "contrastive was configured with OpenMP, but its target did not bring OpenMP to this consumer"
#elif !CONSUMER_EXPECT_OPENMP && defined(_OPENMP)
#error "contrastive was configured without OpenMP, yet this consumer is compiled with OpenMP"
#endif
#endif

int main() {
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(16, 8), b = Eigen::MatrixXf::Random(16, 8);
  const auto r = contrastive::NTXent<float>(0.5f).value_and_grad(a, b);
  // The loss normalises its rows, so each gradient row is orthogonal to its input row.
  const float along_rows = r.grad_a.cwiseProduct(a).rowwise().sum().cwiseAbs().maxCoeff();
  const bool ok = std::isfinite(r.value) && r.value > 0 && r.grad_a.allFinite() && along_rows < 1e-4f;
#ifdef _OPENMP
  const char* openmp = "yes";
#else
  const char* openmp = "no";
#endif
  std::printf("contrastive version %s (%d), openmp: %s, NT-Xent %.6f, max |g_i . a_i| %.2e\n",
              CONTRASTIVE_VERSION_STRING, CONTRASTIVE_VERSION, openmp, static_cast<double>(r.value),
              static_cast<double>(along_rows));
  std::printf("%s\n", ok ? "consumer ok" : "consumer FAILED");
  return ok ? 0 : 1;
}
