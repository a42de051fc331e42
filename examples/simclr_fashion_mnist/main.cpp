// SimCLR on Fashion-MNIST with the library's losses (README.md here).
//
// An MLP encoder (784-512-128, ReLU) with a projection head (128-128-64) is
// trained on two augmented views of each image; the loss and its exact
// gradient on the head outputs come from the library, everything else
// (augmentation, backpropagation, Adam) is in this directory.  The frozen
// encoder is then evaluated by a linear probe and kNN, beside raw pixels
// and the same encoder untrained.  --study runs the batch-size x VRNS grid.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <contrastive/contrastive.hpp>

#include "augment.hpp"
#include "idx.hpp"
#include "mlp.hpp"
#include "probe.hpp"
#include "train.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

const char* kUsage =
    "usage: simclr_fashion_mnist [options]\n"
    "  --loss NAME        ntxent (default), infonce, clip, dcl, dhel\n"
    "  --tau T            temperature (default 0.2)\n"
    "  --lambda L         add L * VRNS variance penalty, N = training images used (default 0)\n"
    "  --batch B          pairs per step (default 256)\n"
    "  --epochs E         passes over the training images (default 5)\n"
    "  --train-subset N   training images used for contrastive training (default 60000 = all)\n"
    "  --lr LR            learning rate (default 1e-3)\n"
    "  --sgd              SGD with momentum 0.9 instead of Adam\n"
    "  --seed S           seed of initialisation, order and augmentations (default 1)\n"
    "  --threads T        threads for Eigen and the loss engine (default 0 = all cores; 1 on a busy machine)\n"
    "  --probe-train N    training images for the linear probes (default 10000)\n"
    "  --knn-train N      training images for kNN (default 10000)\n"
    "  --knn-test N       test images for kNN (default 2000; the linear probe uses all 10000)\n"
    "  --min-area A       smallest crop area fraction (default 1 = no crop, only the aspect stretch)\n"
    "  --shift P          largest shift of the crop box out of the image, pixels (default 0)\n"
    "  --noise S          pixel noise standard deviation (default 0.1)\n"
    "  --jitter J         brightness (+-J) and contrast (1 +- 1.6 J) jitter (default 0.1)\n"
    "  --erase P          probability of random erasing (default 0.5)\n"
    "  --wd W             weight decay (default 0)\n"
    "  --data DIR         data directory (default $FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)\n"
    "  --study            run the batch {32,64,128,256} x lambda {0,30} grid instead\n"
    "  --study-seeds K    seeds per grid cell (default 3)\n"
    "  --study-samples S  images seen per run in the study, whatever the batch (default 120000)\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "simclr_fashion_mnist: %s\n%s", msg.c_str(), kUsage);
  std::exit(2);
}

/// --key value / --key=value options, validated as they are read.
class Args {
 public:
  Args(int argc, char** argv) {
    static const std::map<std::string, bool> known = {  // name -> takes a value
        {"loss", true},  {"tau", true},         {"lambda", true},    {"batch", true},       {"epochs", true},
        {"lr", true},    {"sgd", false},        {"seed", true},      {"threads", true},     {"train-subset", true},
        {"data", true},  {"probe-train", true}, {"knn-train", true}, {"knn-test", true},    {"study", false},
        {"study-seeds", true}, {"study-samples", true}, {"help", false},
        {"min-area", true}, {"shift", true}, {"noise", true}, {"erase", true}, {"jitter", true}, {"wd", true}};
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) usage_error("unexpected argument '" + a + "'");
      a = a.substr(2);
      std::string value;
      const auto eq = a.find('=');
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
      }
      const auto k = known.find(a);
      if (k == known.end()) usage_error("unknown option '--" + a + "'");
      if (k->second && eq == std::string::npos) {
        if (i + 1 >= argc) usage_error("option '--" + a + "' needs a value");
        value = argv[++i];
      }
      if (!k->second && eq != std::string::npos) usage_error("option '--" + a + "' takes no value");
      values_[a] = value;
    }
    if (has("help")) {
      std::printf("%s", kUsage);
      std::exit(0);
    }
  }
  bool has(const std::string& k) const { return values_.count(k) > 0; }
  std::string str(const std::string& k, const std::string& def) const { return has(k) ? values_.at(k) : def; }
  double num(const std::string& k, double def, double lo, double hi) const {
    if (!has(k)) return def;
    const std::string& s = values_.at(k);
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != s.size() || !std::isfinite(v))
      usage_error("option '--" + k + "': '" + s + "' is not a number");
    if (v < lo || v > hi)
      usage_error("option '--" + k + "': " + s + " is out of range [" + fmt(lo) + ", " + fmt(hi) + "]");
    return v;
  }
  long long integer(const std::string& k, long long def, long long lo, long long hi) const {
    const double v = num(k, static_cast<double>(def), static_cast<double>(lo), static_cast<double>(hi));
    if (v != std::floor(v)) usage_error("option '--" + k + "': '" + values_.at(k) + "' is not an integer");
    return static_cast<long long>(v);
  }

 private:
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }
  std::map<std::string, std::string> values_;
};

/// A fixed set of view pairs of test images, the same for every run: rows
/// [0, m) are first views, [m, 2m) second views.
fmnist::ImageMatrix fixed_pairs(const fmnist::ImageMatrix& test, Eigen::Index m) {
  std::vector<Eigen::Index> idx(static_cast<std::size_t>(m));
  for (Eigen::Index i = 0; i < m; ++i) idx[static_cast<std::size_t>(i)] = i;
  fmnist::ImageMatrix v;
  fmnist::make_views(test, idx, fmnist::AugmentParams{}, 20240601u, 0u, v);
  return v;
}

/// Similarity statistics of the fixed pairs at the head (z) and the encoder (h).
struct PairStats {
  contrastive::SimilarityStats head, encoder;
};
PairStats pair_stats(const fmnist::MLP<float>& net, const fmnist::ImageMatrix& pairs) {
  const Eigen::Index m = pairs.rows() / 2;
  fmnist::MLP<float>::Cache c;
  const auto& z = net.forward(pairs, c);
  const auto& h = c.a[static_cast<std::size_t>(net.encoder_layers())];
  return {contrastive::similarity_stats(z.topRows(m), z.bottomRows(m)),
          contrastive::similarity_stats(h.topRows(m), h.bottomRows(m))};
}

struct Probe {
  double linear = 0, ridge = 0, knn = 0;
};

struct Eval {
  const fmnist::Split& train;
  const fmnist::Split& test;
  Eigen::Index probe_train, knn_train, knn_test;
  std::vector<int> ytr, ytr_knn, yte_knn;
  Eval(const fmnist::Split& tr, const fmnist::Split& te, Eigen::Index pt, Eigen::Index kt, Eigen::Index ke)
      : train(tr), test(te), probe_train(pt), knn_train(kt), knn_test(ke),
        ytr(tr.y.begin(), tr.y.begin() + pt), ytr_knn(tr.y.begin(), tr.y.begin() + kt),
        yte_knn(te.y.begin(), te.y.begin() + ke) {}

  /// Linear probe and kNN on features f(x) of the first images of each split.
  template <typename F>
  Probe run(F&& features) const {
    const auto ftr = features(train.x.topRows(std::max(probe_train, knn_train)));
    const auto fte = features(test.x);
    return {fmnist::logistic_probe_accuracy(ftr.topRows(probe_train), ytr, fte, test.y),
            fmnist::linear_probe_accuracy(ftr.topRows(probe_train), ytr, fte, test.y),
            fmnist::knn_accuracy(ftr.topRows(knn_train), ytr_knn, fte.topRows(knn_test), yte_knn)};
  }
  Probe encoder(const fmnist::MLP<float>& net) const {
    return run([&](const auto& x) { return net.encode(x); });
  }
};

const std::vector<int> kSizes = {784, 512, 128, 128, 64};  // encoder 784-512-128, head 128-128-64
constexpr int kEncoderLayers = 2;

int run_main(const Args& args, const fmnist::Split& train, const fmnist::Split& test, const fmnist::TrainConfig& cfg,
             const Eval& eval, Eigen::Index subset, int epochs, double load_seconds) {
  const auto t_start = clock_type::now();
  const fmnist::ImageMatrix x = train.x.topRows(subset);
  const fmnist::ImageMatrix pairs = fixed_pairs(test.x, 1000);
  fmnist::MLP<float> net(kSizes, kEncoderLayers, cfg.seed);
  const fmnist::MLP<float> untrained = net;
  std::printf("SimCLR on Fashion-MNIST: loss=%s tau=%g lambda=%g batch=%d epochs=%d train-subset=%lld lr=%g %s seed=%u\n",
              cfg.loss.c_str(), cfg.tau, cfg.lambda, cfg.batch, epochs, static_cast<long long>(subset), cfg.lr,
              cfg.sgd ? "sgd" : "adam", cfg.seed);
  std::printf("encoder 784-512-128 (ReLU), head 128-128-64; similarities of 1000 fixed test view pairs at the head\n");
  std::printf("%5s %9s %10s %9s %9s %11s %11s\n", "epoch", "loss", "samples/s", "pos mean", "neg mean", "neg var",
              "enc neg var");
  const auto show = [&](int epoch, double loss, double rate) {
    const PairStats st = pair_stats(net, pairs);
    std::printf("%5d %9.4f %10.0f %9.4f %9.4f %11.3e %11.3e\n", epoch, loss, rate, st.head.positive.mean,
                st.head.cross_negative.mean, st.head.cross_negative.variance, st.encoder.cross_negative.variance);
    std::fflush(stdout);
  };
  show(0, std::nan(""), 0);
  const auto t_train = clock_type::now();
  const fmnist::TrainTimes tt =
      fmnist::train(net, x, cfg, [&](const fmnist::EpochReport& r) { show(r.epoch, r.mean_loss, r.samples_per_second); });
  const double train_seconds = since(t_train);

  const auto t_probe = clock_type::now();
  const Probe raw = eval.run([](const auto& xs) { return fmnist::ImageMatrix(xs); });
  const Probe rnd = eval.encoder(untrained);
  const Probe learned = eval.encoder(net);
  const double probe_seconds = since(t_probe);
  std::printf("\n%-24s %14s %14s %12s\n", "representation", "linear (logreg)", "linear (ridge)", "kNN (k=20)");
  std::printf("%-24s %14.4f %14.4f %12.4f\n", "raw pixels (784)", raw.linear, raw.ridge, raw.knn);
  std::printf("%-24s %14.4f %14.4f %12.4f\n", "random encoder (128)", rnd.linear, rnd.ridge, rnd.knn);
  std::printf("%-24s %14.4f %14.4f %12.4f\n", "trained encoder (128)", learned.linear, learned.ridge, learned.knn);
  std::printf("(linear probes: logistic regression / ridge on %lld train images, all %lld test images; kNN: cosine, %lld train / %lld test)\n",
              static_cast<long long>(eval.probe_train), static_cast<long long>(test.x.rows()),
              static_cast<long long>(eval.knn_train), static_cast<long long>(eval.knn_test));
  std::printf("\ntime: load %.1f s | training %.1f s = loss+gradient (library) %.1f s + forward/backward/Adam %.1f s"
              " + augment %.1f s + rest %.1f s | probes %.1f s | total %.1f s\n",
              load_seconds, train_seconds, tt.loss, tt.network, tt.augment,
              train_seconds - tt.loss - tt.network - tt.augment, probe_seconds, load_seconds + since(t_start));
  (void)args;
  if (!(learned.linear > rnd.linear)) {
    std::printf("warning: the trained encoder does not beat the random one on the linear probe\n");
    return 1;
  }
  return 0;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}
double sd(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double mu = mean(v);
  double s = 0;
  for (double x : v) s += (x - mu) * (x - mu);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

int run_study(const fmnist::Split& train, const fmnist::Split& test, fmnist::TrainConfig cfg, const Eval& eval,
              Eigen::Index subset, int seeds, long long samples) {
  const auto t_start = clock_type::now();
  const fmnist::ImageMatrix x = train.x.topRows(subset);
  const fmnist::ImageMatrix pairs = fixed_pairs(test.x, 1000);
  const std::vector<int> batches = {32, 64, 128, 256};
  const std::vector<double> lambdas = {0.0, 30.0};
  cfg.samples = samples;
  std::printf("study: loss=%s tau=%g lr=%g, %lld training images, %lld images seen per run, %d seeds;\n"
              "negative-similarity variance on 1000 fixed test view pairs; VRNS target -1/(N-1), N=%lld\n",
              cfg.loss.c_str(), cfg.tau, cfg.lr, static_cast<long long>(subset), samples, seeds,
              static_cast<long long>(subset));
  std::printf("%5s %6s %4s %11s %11s %9s %8s %8s %7s\n", "batch", "lambda", "seed", "neg var z", "neg var h",
              "neg mean", "linear", "kNN", "sec");
  struct Cell {
    std::vector<double> var_z, var_h, mean_z, lin, knn;
  };
  std::map<std::pair<int, double>, Cell> cells;
  for (int b : batches)
    for (double lam : lambdas)
      for (int s = 1; s <= seeds; ++s) {
        const auto t0 = clock_type::now();
        fmnist::TrainConfig c = cfg;
        c.batch = b;
        c.lambda = lam;
        c.seed = static_cast<unsigned>(s);
        fmnist::MLP<float> net(kSizes, kEncoderLayers, c.seed);
        fmnist::train(net, x, c);
        const PairStats st = pair_stats(net, pairs);
        const Probe p = eval.encoder(net);
        Cell& cell = cells[{b, lam}];
        cell.var_z.push_back(st.head.cross_negative.variance);
        cell.var_h.push_back(st.encoder.cross_negative.variance);
        cell.mean_z.push_back(st.head.cross_negative.mean);
        cell.lin.push_back(p.linear);
        cell.knn.push_back(p.knn);
        std::printf("%5d %6g %4d %11.4e %11.4e %9.4f %8.4f %8.4f %7.1f\n", b, lam, s, st.head.cross_negative.variance,
                    st.encoder.cross_negative.variance, st.head.cross_negative.mean, p.linear, p.knn, since(t0));
        std::fflush(stdout);
      }
  std::printf("\n| batch | lambda | neg-sim variance, head z (x1e-3) | neg-sim variance, encoder h (x1e-3) | "
              "neg-sim mean, head z | linear probe acc | kNN acc |\n|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& [key, c] : cells)
    std::printf("| %d | %g | %.2f ± %.2f | %.2f ± %.2f | %.4f ± %.4f | %.4f ± %.4f | %.4f ± %.4f |\n", key.first,
                key.second, 1e3 * mean(c.var_z), 1e3 * sd(c.var_z), 1e3 * mean(c.var_h), 1e3 * sd(c.var_h),
                mean(c.mean_z), sd(c.mean_z), mean(c.lin), sd(c.lin), mean(c.knn), sd(c.knn));
  std::printf("\n(mean ± sample sd over %d seeds; study wall time %.0f s)\n", seeds, since(t_start));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args(argc, argv);
  fmnist::TrainConfig cfg;
  cfg.loss = args.str("loss", "ntxent");
  if (!fmnist::Loss::known(cfg.loss)) usage_error("unknown loss '" + cfg.loss + "'");
  cfg.tau = args.num("tau", 0.2, 1e-3, 100);
  cfg.lambda = args.num("lambda", 0, 0, 1e6);
  cfg.batch = static_cast<int>(args.integer("batch", 256, 2, 60000));
  const int epochs = static_cast<int>(args.integer("epochs", 5, 1, 100000));
  cfg.lr = args.num("lr", 1e-3, 1e-9, 100);
  cfg.sgd = args.has("sgd");
  cfg.seed = static_cast<unsigned>(args.integer("seed", 1, 0, 4294967295LL));
  cfg.threads = static_cast<int>(args.integer("threads", 0, 0, 1024));
  cfg.aug.min_area = static_cast<float>(args.num("min-area", cfg.aug.min_area, 0.05, 1));
  cfg.aug.max_shift = static_cast<int>(args.integer("shift", cfg.aug.max_shift, 0, 14));
  cfg.aug.noise = static_cast<float>(args.num("noise", cfg.aug.noise, 0, 1));
  cfg.aug.brightness = static_cast<float>(args.num("jitter", cfg.aug.brightness, 0, 0.6));
  cfg.aug.contrast = 1.6f * cfg.aug.brightness;
  cfg.aug.erase_prob = static_cast<float>(args.num("erase", cfg.aug.erase_prob, 0, 1));
  cfg.weight_decay = args.num("wd", 0, 0, 1);
  const bool study = args.has("study");
  const auto subset = static_cast<Eigen::Index>(args.integer("train-subset", 60000, 2, 60000));
  const auto probe_train = static_cast<Eigen::Index>(args.integer("probe-train", 10000, 11, 60000));
  const auto knn_train = static_cast<Eigen::Index>(args.integer("knn-train", 10000, 20, 60000));
  const auto knn_test = static_cast<Eigen::Index>(args.integer("knn-test", 2000, 1, 10000));
  const int seeds = static_cast<int>(args.integer("study-seeds", 3, 1, 100));
  const long long study_samples = args.integer("study-samples", 120000, 256, 100000000);
  if (cfg.batch > subset) usage_error("--batch must not exceed --train-subset");
  if (cfg.threads > 0) Eigen::setNbThreads(cfg.threads);
  cfg.samples = static_cast<long long>(epochs) * (subset / cfg.batch) * cfg.batch;

  try {
    const auto t0 = clock_type::now();
    const std::string dir = fmnist::data_dir(args.str("data", ""));
    const fmnist::Split train = fmnist::load(dir, true), test = fmnist::load(dir, false);
    const double load_seconds = since(t0);
    const Eval eval(train, test, probe_train, knn_train, knn_test);
    return study ? run_study(train, test, cfg, eval, subset, seeds, study_samples)
                 : run_main(args, train, test, cfg, eval, subset, epochs, load_seconds);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "simclr_fashion_mnist: %s\n", e.what());
    return 1;
  }
}
