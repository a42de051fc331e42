// Downstream of the exporting library: contrastive's include directory and
// OpenMP must arrive through trainer::trainer.
#include <trainer.hpp>

#include <contrastive/version.hpp>

#include <cmath>
#include <cstdio>

#if defined(CONSUMER_EXPECT_OPENMP)
#if CONSUMER_EXPECT_OPENMP && !defined(_OPENMP)
#error "contrastive was configured with OpenMP, but trainer::trainer did not bring OpenMP here"
#elif !CONSUMER_EXPECT_OPENMP && defined(_OPENMP)
#error "contrastive was configured without OpenMP, yet this consumer is compiled with OpenMP"
#endif
#endif

int main() {
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(16, 8), b = Eigen::MatrixXf::Random(16, 8);
  Eigen::MatrixXf g;
  const float value = trainer::ntxent_step(a, b, g);
  const float along_rows = g.cwiseProduct(a).rowwise().sum().cwiseAbs().maxCoeff();
  const bool ok = std::isfinite(value) && value > 0 && g.rows() == 16 && along_rows < 1e-4f;
#ifdef _OPENMP
  const char* openmp = "yes";
#else
  const char* openmp = "no";
#endif
  std::printf("contrastive version %s (%d), openmp: %s, NT-Xent %.6f through trainer::trainer\n",
              CONTRASTIVE_VERSION_STRING, CONTRASTIVE_VERSION, openmp, static_cast<double>(value));
  std::printf("%s\n", ok ? "consumer ok" : "consumer FAILED");
  return ok ? 0 : 1;
}
