// contrastive — the engine's vectorised exponential for arguments whose
// result is a normal number (internal).
//
// Why: with a fixed shift every similarity costs one exponential, and
// Eigen 3.4's packet exp spends much of its time on what these arguments
// never need: a double divides (its rational approximant), and both types
// scale by 2^n with a general ldexp that guards against overflow and
// subnormals in three multiplications.  The arguments here are bounded
// (x - 1/tau lies in [-2/tau, 0] and the engine only takes the fixed shift
// when 2/tau fits the type's exponent range), so 2^n is formed by shifting
// the integer n + bias into the exponent field, and e^r on the reduced range
// is one polynomial in fused multiply-adds.  Measured on an AVX-512 EPYC
// (g++ 12 -O3 -march=native, bench/exp_speed.cpp): 0.60 of Eigen's time in
// double and 0.86 in float.  Largest error with FMA: 1.08 ulp in float
// (every float of the domain) and 1.09 ulp in double (10^8 random
// arguments and every step of n); Eigen's: 4.5 ulp in float (AVX-512) and
// 1.6 in double.  tests/test_exp.cpp holds it to 1.25 ulp.
//
// Method, for x clamped to [lo, hi] (the results there are normal):
//   t = x log2(e) + (1.5 * 2^p + bias)   (p mantissa bits: t's low bits
//                                        hold n + bias, n = round(x / ln 2))
//   n = t - (1.5 * 2^p + bias)           (exact)
//   r = x - n ln2_hi - n ln2_lo          (|r| <= ln 2 / 2; n ln2_hi exact)
//   e^r = 1 + r + r^2 q(r)               (q: a Chebyshev fit of
//                                        (e^r - 1 - r) / r^2 on [-ln2/2, ln2/2],
//                                        degree 4 in float, 9 in double)
//   e^x = e^r * 2^n, 2^n = bits(t) << p.
//
// The shift of bits(t) is Eigen's integer-packet shift where Eigen 3.4 has
// one of the lanes' width (float: x86, NEON, AltiVec/VSX, SVE; double:
// AArch64 and VSX), and the SIMD 64-bit shifts of SSE2, AVX (two 128-bit
// halves), AVX2 and AVX-512 for double on x86.  Any other packet type keeps
// Eigen's exp, and the scalar tail of an array keeps std::exp.
#ifndef CONTRASTIVE_DETAIL_EXP_HPP
#define CONTRASTIVE_DETAIL_EXP_HPP

#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

namespace contrastive {
namespace detail {

/// The constants of exp_normal for float and double.
template <typename S>
struct ExpNormalConstants;

template <>
struct ExpNormalConstants<float> {
  static constexpr float lo = -87.0f, hi = 88.0f;        // 2^n normal for n in [-126, 127]
  static constexpr float shifter = 12582912.0f + 127.0f;  // 1.5 * 2^23 + bias
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693145751953125f;  // ln 2 to 16 bits: n ln2_hi exact
  static constexpr float ln2_lo = 1.42860682030941723212e-6f;
  // q(r), highest degree first; |error of e^r| < 1.1e-8 on [-ln2/2, ln2/2]
  static constexpr float q[5] = {1.392617611993557888e-3f, 8.363173074513710903e-3f, 4.166655466205053398e-2f,
                                 1.666657702559798819e-1f, 0.5f};
};

template <>
struct ExpNormalConstants<double> {
  static constexpr double lo = -708.0, hi = 709.0;            // 2^n normal for n in [-1022, 1023]
  static constexpr double shifter = 6755399441055744.0 + 1023.0;  // 1.5 * 2^52 + bias
  static constexpr double log2e = 1.4426950408889634073599;
  static constexpr double ln2_hi = 762123384786.0 / 1099511627776.0;  // ln 2 to 40 bits: n ln2_hi exact
  static constexpr double ln2_lo = -1.723944452561483477316e-13;
  // q(r), highest degree first; |error of e^r| < 1.7e-17 on [-ln2/2, ln2/2]
  static constexpr double q[10] = {2.510037583256123366e-8, 2.762007587998336659e-7, 2.755726848031002553e-6,
                                   2.480152132236869327e-5, 1.984126986304054527e-4, 1.388888891719671908e-3,
                                   8.333333333330064449e-3, 4.166666666662416190e-2, 1.666666666666666745e-1,
                                   5.000000000000001021e-1};
};

// 2^n from t = n + bias + 1.5 * 2^p: the bits of t shifted left by p.
//
// Generic form: Eigen's integer packet of P's lanes (unpacket_traits<P>::
// integer_packet, as wide per lane as P's scalar) and its plogical_shift_left,
// the primitives Eigen's own generic exp scales with.  Eigen 3.4 has them for
// float on x86 (SSE2, AVX, AVX2, AVX-512), NEON, AltiVec/VSX and SVE, and
// for double on AArch64 NEON and VSX (not on MSA or ZVector, which keep
// Eigen's exp); AVX without AVX2 shifts the two 128-bit halves.  (The
// -Wignored-attributes pragma: a raw vector type such as __m512i as a
// template argument makes GCC warn that its alignment attribute is dropped;
// only its identity is used.)
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
template <typename P, typename IP>
constexpr bool lanes_match() {
  using Eigen::internal::unpacket_traits;
  return sizeof(typename unpacket_traits<IP>::type) == sizeof(typename unpacket_traits<P>::type) &&
         int(unpacket_traits<IP>::size) == int(unpacket_traits<P>::size);
}

template <typename P, typename IP = typename Eigen::internal::unpacket_traits<P>::integer_packet,
          std::enable_if_t<lanes_match<P, IP>(), int> = 0>
P exp2_from_shifted(const P& t) {
  using S = typename Eigen::internal::unpacket_traits<P>::type;
  constexpr int p = std::numeric_limits<S>::digits - 1;  // 23 or 52
  namespace ei = Eigen::internal;
  return ei::preinterpret<P>(ei::plogical_shift_left<p>(ei::preinterpret<IP>(t)));
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

// Double on x86: Eigen 3.4 has no 64-bit integer packets there (its own exp
// specialises the scaling per instruction set), so one overload each.
#if defined(EIGEN_VECTORIZE_SSE2)
inline Eigen::internal::Packet2d exp2_from_shifted(const Eigen::internal::Packet2d& t) {
  return _mm_castsi128_pd(_mm_slli_epi64(_mm_castpd_si128(t), 52));
}
#endif
#if defined(EIGEN_VECTORIZE_AVX2)
inline Eigen::internal::Packet4d exp2_from_shifted(const Eigen::internal::Packet4d& t) {
  return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(t), 52));
}
#elif defined(EIGEN_VECTORIZE_AVX)
// AVX without AVX2 has no 256-bit integer shift: one per 128-bit half.
inline Eigen::internal::Packet4d exp2_from_shifted(const Eigen::internal::Packet4d& t) {
  const __m256i b = _mm256_castpd_si256(t);
  const __m128i lo = _mm_slli_epi64(_mm256_castsi256_si128(b), 52);
  const __m128i hi = _mm_slli_epi64(_mm256_extractf128_si256(b, 1), 52);
  return _mm256_castsi256_pd(_mm256_insertf128_si256(_mm256_castsi128_si256(lo), hi, 1));
}
#endif
#if defined(EIGEN_VECTORIZE_AVX512)
inline Eigen::internal::Packet8d exp2_from_shifted(const Eigen::internal::Packet8d& t) {
  return _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_castpd_si512(t), 52));
}
#endif

/// Whether packet type P has an exp2_from_shifted overload.
template <typename P, typename = void>
struct HasExp2FromShifted : std::false_type {};
template <typename P>
struct HasExp2FromShifted<P, decltype(void(exp2_from_shifted(std::declval<const P&>())))> : std::true_type {};

/// Whether exp_normal on S takes its own packet path (the alternative being
/// Eigen's exp) with the instruction set of this translation unit.
/// (A packet type named as a template argument makes GCC warn that its
/// alignment attribute is ignored, which is harmless here: only the type's
/// identity is used.)
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
template <typename S>
constexpr bool exp_normal_has_packet_path() {
  return HasExp2FromShifted<typename Eigen::internal::packet_traits<S>::type>::value;
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/// e^x for x whose result is a normal number: x in [-87, 88] in float,
/// [-708, 709] in double; an x outside is clamped to that range (so e^-100
/// in float is e^-87, not 0).  Within 1.1 ulp of the exact value, measured.
/// For Eigen expressions: `x.unaryExpr(ExpNormal<S>())`, or exp_normal(x).
template <typename S>
struct ExpNormal {
  static_assert(std::is_same<S, float>::value || std::is_same<S, double>::value, "float or double");

  S operator()(S x) const { return std::exp(x); }

  template <typename P>
  P packetOp(const P& x0) const {
    using namespace Eigen::internal;
    if constexpr (!HasExp2FromShifted<P>::value) {
      return pexp(x0);
    } else {
      using C = ExpNormalConstants<S>;
      const P x = pmin(pmax(x0, pset1<P>(C::lo)), pset1<P>(C::hi));
      const P t = pmadd(x, pset1<P>(C::log2e), pset1<P>(C::shifter));
      const P n = psub(t, pset1<P>(C::shifter));
      P r = pmadd(n, pset1<P>(-C::ln2_hi), x);
      r = pmadd(n, pset1<P>(-C::ln2_lo), r);
      const P r2 = pmul(r, r);
      P q;
      if constexpr (std::is_same<S, float>::value) {
        // Estrin: ((q0 r + q1) r^2 + (q2 r + q3)) r + q4
        const P a = pmadd(pset1<P>(C::q[0]), r, pset1<P>(C::q[1]));
        const P b = pmadd(pset1<P>(C::q[2]), r, pset1<P>(C::q[3]));
        q = pmadd(pmadd(a, r2, b), r, pset1<P>(C::q[4]));
      } else {
        // Estrin over pairs: (((a r^2 + b) r^4 + (c r^2 + d)) r^2 + e)
        const P r4 = pmul(r2, r2);
        const P a = pmadd(pset1<P>(C::q[0]), r, pset1<P>(C::q[1]));
        const P b = pmadd(pset1<P>(C::q[2]), r, pset1<P>(C::q[3]));
        const P c = pmadd(pset1<P>(C::q[4]), r, pset1<P>(C::q[5]));
        const P d = pmadd(pset1<P>(C::q[6]), r, pset1<P>(C::q[7]));
        const P e = pmadd(pset1<P>(C::q[8]), r, pset1<P>(C::q[9]));
        q = pmadd(pmadd(pmadd(a, r2, b), r4, pmadd(c, r2, d)), r2, e);
      }
      const P er = padd(pmadd(q, r2, r), pset1<P>(S(1)));
      return pmul(er, exp2_from_shifted(t));
    }
  }
};

/// e^x element-wise on an Eigen array expression whose results are normal
/// numbers (see ExpNormal).
template <typename A>
auto exp_normal(const A& x) {
  return x.unaryExpr(ExpNormal<typename A::Scalar>());
}

}  // namespace detail
}  // namespace contrastive

namespace Eigen {
namespace internal {
template <typename S>
struct functor_traits<contrastive::detail::ExpNormal<S>> {
  enum { Cost = functor_traits<scalar_exp_op<S>>::Cost, PacketAccess = packet_traits<S>::HasExp };
};
}  // namespace internal
}  // namespace Eigen

#endif  // CONTRASTIVE_DETAIL_EXP_HPP
