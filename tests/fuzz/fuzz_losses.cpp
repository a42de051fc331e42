// A fuzz target over every loss of the library.  The input bytes choose the
// loss, the scalar type, the shapes, the parameters (mostly sensible, now and
// then any double at all), the entries (now and then 0, huge, tiny, NaN,
// infinite), the engine options and the call options (ids, weights,
// labels, reductions, wrong lengths included).  For every input exactly one
// of these must hold, or the target aborts:
//
//   * std::invalid_argument is thrown and no output was written (every
//     output still holds its sentinel bit pattern);
//   * the value and every output are finite, and, for small well-conditioned
//     cases in double, the input gradients match central differences.
//
// Built with clang's -fsanitize=fuzzer,address,undefined it is a libFuzzer
// target (CI runs it for a bounded time on tests/fuzz/corpus); built without
// it (CONTRASTIVE_FUZZ_REPLAY) its main() replays the files named on the
// command line, which the test suite does with the committed corpus.
#include <contrastive/contrastive.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

/// Reads the fuzzer's bytes; past the end it reads zeros.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  std::uint8_t byte() { return i_ < n_ ? p_[i_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() | (byte() << 8)); }
  /// Uniform in [0, 1].
  double unit() { return u16() / 65535.0; }
  /// Any double at all (NaN, infinities, subnormals, huge).
  double raw() {
    std::uint64_t bits = 0;
    for (int k = 0; k < 8; ++k) bits |= static_cast<std::uint64_t>(byte()) << (8 * k);
    double x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
  }
  /// Mostly exp(uniform(log lo, log hi)); one time in eight a raw double.
  double positive(double lo, double hi) {
    if ((byte() & 7) == 0) return raw();
    return std::exp(std::log(lo) + unit() * (std::log(hi) - std::log(lo)));
  }
  /// Mostly uniform in [lo, hi]; one time in eight a raw double.
  double between(double lo, double hi) {
    if ((byte() & 7) == 0) return raw();
    return lo + unit() * (hi - lo);
  }
  /// An entry of an embedding: mostly moderate, sometimes extreme.
  double entry() {
    const std::uint8_t k = byte();
    switch (k & 15) {
      case 0: return 0.0;
      case 1: return raw();
      case 2: return (k & 16 ? -1 : 1) * 1e30;
      case 3: return (k & 16 ? -1 : 1) * 1e-30;
      default: return 4.0 * (unit() - 0.5);
    }
  }
  bool flag() { return (byte() & 1) != 0; }
  /// Any 64-bit integer (as the bits of a size).
  std::int64_t any_integer() {
    std::uint64_t bits = 0;
    for (int k = 0; k < 8; ++k) bits |= static_cast<std::uint64_t>(byte()) << (8 * k);
    std::int64_t x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_, i_ = 0;
};

[[noreturn]] void violated(const std::string& what) {
  std::fprintf(stderr, "fuzz_losses: promise violated: %s\n", what.c_str());
  std::abort();
}

template <typename S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

/// The outputs of one call, with sentinel bit patterns written before it.
template <typename S>
struct Outputs {
  Mat<S> ga, gb, gn;
  S g[2];
  std::vector<S> per;
  static S sentinel() {
    S x;
    std::memset(static_cast<void*>(&x), 0x5A, sizeof x);
    return x;
  }
  void reset(Eigen::Index rows, Eigen::Index cols, Eigen::Index nk, std::size_t anchors) {
    ga.setConstant(rows, cols, sentinel());
    gb.setConstant(rows, cols, sentinel());
    gn.setConstant(nk, cols, sentinel());
    g[0] = g[1] = sentinel();
    per.assign(anchors, sentinel());
  }
  static bool untouched(const S* p, std::size_t n) {
    const S s = sentinel();
    for (std::size_t i = 0; i < n; ++i)
      if (std::memcmp(&p[i], &s, sizeof s) != 0) return false;
    return true;
  }
  bool all_untouched() const {
    return untouched(ga.data(), static_cast<std::size_t>(ga.size())) &&
           untouched(gb.data(), static_cast<std::size_t>(gb.size())) &&
           untouched(gn.data(), static_cast<std::size_t>(gn.size())) && untouched(g, 2) &&
           untouched(per.data(), per.size());
  }
};

template <typename S>
bool finite(const Mat<S>& m) {
  return m.allFinite();
}

/// Everything a case needs, decoded from the bytes.
struct Case {
  int kind = 0;
  Eigen::Index n = 2, d = 1, nk = 0, k = 1;
  double p[4] = {0.5, 1.0, 1.0, 2.0};
  contrastive::EngineOptions options;
  std::vector<Eigen::Index> ids, labels;
  std::vector<double> weights;
  bool use_ids = false, use_labels = false, use_weights = false, per_anchor = false;
  contrastive::Reduction reduction = contrastive::Reduction::Mean;
  Mat<double> za, zb, keys;
  bool moderate = true;  // well-conditioned enough for central differences
};

constexpr int kKinds = 15;

Case decode(Reader& r) {
  Case c;
  c.kind = r.byte() % kKinds;
  c.n = r.byte() % 11;  // 0 and 1 are invalid
  c.d = r.byte() % 7;   // 0 is invalid
  c.nk = r.byte() % 9;
  c.k = (r.byte() & 15) == 0 ? static_cast<Eigen::Index>(r.any_integer()) : 1 + r.byte() % 9;
  for (double& x : c.p) x = r.between(-0.5, 2.5);
  c.p[0] = r.positive(0.005, 5.0);  // a temperature / logit scale
  const std::uint8_t eng = r.byte();
  c.options.tile_size = (eng & 128) ? static_cast<Eigen::Index>(r.any_integer()) : 1 + (eng & 7);
  c.options.num_threads = 1 + ((eng >> 3) & 1);
  c.options.parallel_threshold = 0;
  c.options.memory_budget_bytes = (eng & 16) ? 0 : std::size_t(1) << 30;
  const std::uint8_t call = r.byte();
  c.use_ids = call & 1;
  c.use_labels = call & 2;
  c.use_weights = call & 4;
  c.per_anchor = call & 8;
  c.reduction = static_cast<contrastive::Reduction>((call >> 4) % 3);
  const auto len = [&](Eigen::Index want) {
    return static_cast<std::size_t>((r.byte() & 7) == 0 ? r.byte() % 12 : static_cast<int>(want));
  };
  c.ids.resize(len(c.n));
  for (auto& id : c.ids) id = r.byte() % 5;
  c.labels.resize(len(c.n));
  for (auto& l : c.labels) l = r.byte() % 4;
  c.weights.resize(len(2 * c.n));
  for (auto& w : c.weights) w = r.between(0.0, 3.0);
  c.za.resize(c.n, c.d);
  c.zb.resize(c.n, c.d);
  c.keys.resize(c.nk * (c.kind == 14 ? std::max<Eigen::Index>(c.n, 1) : 1), c.d);
  for (Mat<double>* m : {&c.za, &c.zb, &c.keys})
    for (Eigen::Index i = 0; i < m->size(); ++i) m->data()[i] = r.entry();
  // Central differences only where the loss is smooth and well scaled.
  const auto fine = [](const Mat<double>& m) {
    for (Eigen::Index i = 0; i < m.rows(); ++i) {
      const double nr = m.row(i).norm();
      if (!(nr > 1e-2 && nr < 1e2)) return false;
    }
    return true;
  };
  c.moderate = c.n >= 2 && c.n <= 4 && c.d >= 1 && c.d <= 3 && fine(c.za) && fine(c.zb) && fine(c.keys);
  for (double x : c.p) c.moderate = c.moderate && std::isfinite(x) && std::abs(x) < 1e3;
  // Weights scale the value: a central difference of step h rounds to about
  // eps |L| / h, so one weight of 1.5e5 (L = 1.07e5, raw() drew it) gave
  // 1.3e-4 of rounding error on a gradient of 0.58 that steps of 1e-5 and
  // 1e-7 confirmed (regress-fd-large-weight).  Bounded like the parameters.
  if (c.use_weights)
    for (double w : c.weights) c.moderate = c.moderate && std::isfinite(w) && std::abs(w) < 1e3;
  c.moderate = c.moderate && c.p[0] >= 0.05 && c.p[0] <= 5.0;
  return c;
}

template <typename S>
contrastive::CallOptions<S> call_options(const Case& c, std::vector<S>& w, std::vector<S>& per) {
  contrastive::CallOptions<S> call;
  call.reduction = c.reduction;
  if (c.use_ids) call.instance_ids = c.ids;
  if (c.use_labels || c.kind == 6) call.labels = c.labels;
  if (c.use_weights) {
    w.assign(c.weights.begin(), c.weights.end());
    call.anchor_weights = w;
  }
  if (c.per_anchor || c.reduction == contrastive::Reduction::None) call.per_anchor = per;
  return call;
}

/// Runs one loss; returns its value (and the gradients in `out`).  `f`
/// gets the loss and calls it; the lambdas below say how each is called.
template <typename S>
struct Runner {
  const Case& c;
  Outputs<S>& out;
  contrastive::Workspace<S>& ws;

  double run() {
    const Mat<S> za = c.za.cast<S>(), zb = c.zb.cast<S>(), keys = c.keys.cast<S>();
    std::vector<S> w;
    auto call = call_options<S>(c, w, out.per);
    const auto two = [&](const auto& loss) -> double {
      using L = std::decay_t<decltype(loss)>;
      if constexpr (L::kScalarGradients == 0) return loss.value_and_grad(za, zb, out.ga, out.gb, ws, call);
      else if constexpr (L::kScalarGradients == 1)
        return loss.value_and_grad(za, zb, out.ga, out.gb, &out.g[0], ws, call);
      else return loss.value_and_grad(za, zb, out.ga, out.gb, &out.g[0], &out.g[1], ws, call);
    };
    const double* p = c.p;
    const auto& o = c.options;
    using namespace contrastive;
    switch (c.kind) {
      case 0: return two(InfoNCE<S>(p[0], o));
      case 1: return two(CLIP<S>(p[0], o));
      case 2: return two(NTXent<S>(p[0], o));
      case 3: return two(DCL<S>(p[0], o));
      case 4: return two(DHEL<S>(p[0], o));
      case 5:
        return two(InfoNCEFamily<S>(
            InfoNCEFamilyParams{p[0], p[1], p[2], p[3] > 1.0, p[3] > 0.5 ? Direction::Symmetric : Direction::OneWay}, o));
      case 6: return two(SupCon<S>(p[0], o));
      case 7: return two(SigLIP<S>(SigLIPParams{1.0 / p[0], 10.0 * p[1], p[2]}, o));
      case 8: return two(Spectral<S>(SpectralParams{p[1], p[2]}, o));
      case 9: return two(VRNS<S>(VRNSParams{0, p[1] - 1.0, 2.0 + std::round(p[3] * 2.0)}, o));
      case 10: return two(WithVRNS<S>(NTXent<S>(p[0], o), VRNSParams{static_cast<long long>(2 + c.n * 10)}, p[1] * 10.0));
      case 11:
        return two(Combined<S>(CLIP<S>(p[0], o), {LossTerm::make_siglip({5.0, p[1], 0.0}, p[2]),
                                                  LossTerm::make_spectral({1.0, p[3]}, 0.5)}));
      case 12:
        return two(SampledNegatives<S>(NTXent<S>(p[0], o).params(),
                                       {c.k, p[2] > 1.0, 7}));
      default: {
        const InfoNCEWithNegatives<S> loss(
            NegativeKeysParams{p[0], c.kind == 14 ? NegativeMode::PerQuery : NegativeMode::Shared}, o);
        return loss.value_and_grad(za, zb, keys, out.ga, out.gb, out.gn, &out.g[0], ws, call);
      }
    }
  }
};

/// The per-anchor outputs a case gives its loss (one per query for the
/// one-way and explicit-key kinds, two per instance otherwise; a wrong count
/// is itself a case the loss must reject).
std::size_t per_anchor_size(const Case& c) {
  const bool one_way = c.kind == 0 || c.kind == 13 || c.kind == 14;
  return (one_way ? 1 : 2) * static_cast<std::size_t>(c.n);
}

/// The value of the same case at other inputs (for central differences).
double value_at(const Case& base, const Mat<double>& za, const Mat<double>& zb) {
  Case c = base;
  c.za = za;
  c.zb = zb;
  Outputs<double> out;
  out.reset(c.n, c.d, c.keys.rows(), per_anchor_size(c));
  contrastive::Workspace<double> ws;
  return Runner<double>{c, out, ws}.run();
}

template <typename S>
void check_case(const Case& c) {
  Outputs<S> out;
  out.reset(c.n, c.d, c.keys.rows(), per_anchor_size(c));
  contrastive::Workspace<S> ws;
  double value;
  try {
    value = Runner<S>{c, out, ws}.run();
  } catch (const std::invalid_argument& e) {
    if (!out.all_untouched()) violated(std::string("an output was written before throwing: ") + e.what());
    if (std::string(e.what()).find("'") == std::string::npos) violated(std::string("message names nothing: ") + e.what());
    return;
  }
  if (!std::isfinite(value)) violated("non-finite value");
  if (!finite(out.ga) || !finite(out.gb)) violated("non-finite input gradient");
  if ((c.kind >= 13) && !finite(out.gn)) violated("non-finite negative-key gradient");
  // Central differences: small, smooth, double cases (sampled negatives and
  // VRNS with |s - t|^p are smooth too; SigLIP and the rest are).
  if (!std::is_same<S, double>::value || !c.moderate) return;
  const double h = 1e-6;
  const Mat<double> ga = out.ga.template cast<double>(), gb = out.gb.template cast<double>();
  for (int side = 0; side < 2; ++side) {
    const Mat<double>& z = side == 0 ? c.za : c.zb;
    const Mat<double>& g = side == 0 ? ga : gb;
    for (Eigen::Index i = 0; i < z.rows(); ++i)
      for (Eigen::Index j = 0; j < z.cols(); ++j) {
        Mat<double> zp = z, zm = z;
        zp(i, j) += h;
        zm(i, j) -= h;
        const double fd = side == 0 ? (value_at(c, zp, c.zb) - value_at(c, zm, c.zb)) / (2 * h)
                                    : (value_at(c, c.za, zp) - value_at(c, c.za, zm)) / (2 * h);
        const double scale = std::max({1.0, std::abs(fd), g.cwiseAbs().maxCoeff()});
        if (std::abs(fd - g(i, j)) > 1e-4 * scale)
          violated("gradient " + std::to_string(side) + "(" + std::to_string(i) + "," + std::to_string(j) + ") = " +
                   std::to_string(g(i, j)) + " but central difference " + std::to_string(fd) + ", kind " +
                   std::to_string(c.kind));
      }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader r(data, size);
  const bool as_float = r.flag();
  const Case c = decode(r);
  if (as_float) check_case<float>(c);
  else check_case<double>(c);
  return 0;
}

#ifdef CONTRASTIVE_FUZZ_REPLAY
int main(int argc, char** argv) {
  int cases = 0;
  for (int a = 1; a < argc; ++a) {
    std::ifstream f(argv[a], std::ios::binary);
    if (!f) {
      std::fprintf(stderr, "fuzz_losses: cannot read %s\n", argv[a]);
      return 2;
    }
    const std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    ++cases;
  }
  std::printf("fuzz_losses: %d inputs replayed, every promise held\n", cases);
  return 0;
}
#endif
