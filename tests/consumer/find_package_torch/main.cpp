// A downstream libtorch program: NT-Xent through contrastive::tch::apply, its
// gradient by backward().  Built by the consumer-find-package-torch test
// (tests/consumer/run_consumer.cmake) against the installed package.
#include <contrastive/torch.hpp>
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
  const at::Tensor za = at::randn({16, 8}).set_requires_grad(true), zb = at::randn({16, 8});
  const at::Tensor loss = contrastive::tch::apply(contrastive::NTXent<float>(0.5), za, zb);
  loss.backward();
  // The loss normalises its rows, so each gradient row is orthogonal to its input row.
  const float along_rows = (za.grad() * za).sum(1).abs().max().item<float>();
  const bool ok = std::isfinite(loss.item<float>()) && loss.item<float>() > 0 && along_rows < 1e-4f;
#ifdef _OPENMP
  const char* openmp = "yes";
#else
  const char* openmp = "no";
#endif
  std::printf("contrastive version %s (%d), openmp: %s, NT-Xent through libtorch %.6f, max |g_i . a_i| %.2e\n",
              CONTRASTIVE_VERSION_STRING, CONTRASTIVE_VERSION, openmp, static_cast<double>(loss.item<float>()),
              static_cast<double>(along_rows));
  std::printf("%s\n", ok ? "consumer ok" : "consumer FAILED");
  return ok ? 0 : 1;
}
