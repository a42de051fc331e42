// detail::exp_normal, the engine's exponential for bounded arguments:
// accuracy against long double std::exp over its whole domain, the clamp
// outside it, and that the packet path (not Eigen's exp) is what ran.
// Compiled twice: for the build's default instruction set and, where the
// compiler takes it, for -march=native (test_exp_native).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include <Eigen/Core>

#include <contrastive/detail/exp.hpp>

namespace {

using contrastive::detail::exp_normal;
using contrastive::detail::ExpNormalConstants;

/// The largest error of y against e^x in units of the last place of the
/// exact value rounded to S.
template <typename S>
double max_ulp_error(const Eigen::Array<S, Eigen::Dynamic, 1>& x, const Eigen::Array<S, Eigen::Dynamic, 1>& y) {
  double worst = 0;
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const long double exact = std::exp(static_cast<long double>(x[i]));
    const S rounded = static_cast<S>(exact);
    const long double ulp = static_cast<long double>(std::nextafter(rounded, std::numeric_limits<S>::infinity())) -
                            static_cast<long double>(rounded);
    const double err = static_cast<double>(std::fabs(static_cast<long double>(y[i]) - exact) / ulp);
    if (!(err <= worst)) worst = err;  // a NaN makes it NaN and fails below
  }
  return worst;
}

template <typename S>
void check_accuracy() {
  using C = ExpNormalConstants<S>;
  using A = Eigen::Array<S, Eigen::Dynamic, 1>;
  // A dense even grid over the domain, plus the ends and 0.
  const Eigen::Index m = 1 << 20;
  A x(m + 3);
  for (Eigen::Index i = 0; i < m; ++i)
    x[i] = static_cast<S>(double(C::lo) + (double(C::hi) - double(C::lo)) * double(i) / double(m - 1));
  x[m] = S(0);
  x[m + 1] = -S(0);
  x[m + 2] = std::numeric_limits<S>::denorm_min();
  const A y = exp_normal(x);
  const double ours = max_ulp_error<S>(x, y);
  INFO("largest error " << ours << " ulp; Eigen's exp: " << max_ulp_error<S>(x, x.exp().eval()) << " ulp");
  if (!contrastive::detail::exp_normal_has_packet_path<S>()) return;  // Eigen's exp
  CHECK(ours <= 1.25);
  CHECK(y[m] == S(1));
  CHECK(y[m + 1] == S(1));

  // Around odd multiples of ln 2 / 2, where n steps and the reduced
  // argument changes sides: 201 consecutive values of S about each of 64
  // such points spread over the domain.
  A z(64 * 201);
  Eigen::Index k = 0;
  const int first = static_cast<int>(double(C::lo) / 0.6931471805599453) + 1;
  const int last = static_cast<int>(double(C::hi) / 0.6931471805599453) - 2;
  for (int j = 0; j < 64; ++j) {
    const int m2 = first + (last - first) * j / 63;
    S v = static_cast<S>((double(m2) + 0.5) * 0.6931471805599453);
    for (int s = 0; s < 100; ++s) v = std::nextafter(v, -std::numeric_limits<S>::infinity());
    for (int s = 0; s < 201; ++s, v = std::nextafter(v, std::numeric_limits<S>::infinity())) z[k++] = v;
  }
  CHECK(max_ulp_error<S>(z, exp_normal(z).eval()) <= 1.25);
}

template <typename S>
void check_clamp() {
  using C = ExpNormalConstants<S>;
  using A = Eigen::Array<S, Eigen::Dynamic, 1>;
  A x = A::Constant(64, S(-1000));
  x.segment(16, 16).setConstant(S(1000));
  x.segment(32, 16).setConstant(C::lo);
  x.segment(48, 16).setConstant(C::hi);
  const A y = exp_normal(x);
  // A packet of clamped arguments: e^lo below and e^hi above; the last
  // element may be on the scalar path (std::exp), so the packet ones only.
  for (Eigen::Index i = 0; i < 15; ++i) {
    CHECK(y[i] == y[32]);
    CHECK(y[16 + i] == y[48]);
  }
  CHECK(std::isnormal(y[32]));
  CHECK(std::isfinite(y[48]));
}

}  // namespace

TEST_CASE("exp_normal is within 1.25 ulp of e^x over its domain in float and double") {
  check_accuracy<float>();
  check_accuracy<double>();
}

TEST_CASE("exp_normal clamps arguments beyond its domain to its ends") {
  if (!contrastive::detail::exp_normal_has_packet_path<float>()) return;  // Eigen's exp: no clamp
  check_clamp<float>();
  check_clamp<double>();
}

TEST_CASE("exp_normal takes its own packet path where the instruction set has the integer shift") {
  using contrastive::detail::exp_normal_has_packet_path;
  // Eigen's exp clamps e^-1000 to a subnormal (e^-88.7 in float, e^-709.8
  // in double); the packet path clamps it to e^lo, a normal number.
  const Eigen::ArrayXf xf = Eigen::ArrayXf::Constant(64, -1000.0f);
  const Eigen::ArrayXd xd = Eigen::ArrayXd::Constant(64, -1000.0);
  const Eigen::ArrayXf yf = exp_normal(xf);
  const Eigen::ArrayXd yd = exp_normal(xd);
  // The architectures the path is checked on: x86 (SSE2, AVX, AVX2,
  // AVX-512; in CI) and AArch64 NEON (cross-built and run under qemu by
  // tests/run.sh).  Elsewhere only the accuracy cases above apply.
#if defined(EIGEN_VECTORIZE_SSE2) || (defined(EIGEN_VECTORIZE_NEON) && defined(__aarch64__))
  REQUIRE(exp_normal_has_packet_path<float>());
  REQUIRE(exp_normal_has_packet_path<double>());
  CHECK(std::isnormal(yf[0]));
  CHECK(std::isnormal(yd[0]));
#elif !defined(EIGEN_VECTORIZE)
  REQUIRE_FALSE(exp_normal_has_packet_path<float>());
  REQUIRE_FALSE(exp_normal_has_packet_path<double>());
#else
  (void)yf;
  (void)yd;
#endif
}
