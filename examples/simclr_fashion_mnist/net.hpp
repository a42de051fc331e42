// Small neural networks with hand-written backpropagation: convolution,
// max-pooling, dense layers and ReLU, every parameter in one flat vector.
//
// Activations are row-major matrices with one row per sample.  An image
// activation of height h, width w and c channels is stored channels-last
// (element (y, x, ch) of a sample at column (y * w + x) * c + ch), so the n
// rows of a batch are also an (n h w) x c matrix, which is what a
// convolution by im2col multiplies.  The layers hold no parameters: a
// Network owns one flat parameter vector and one flat gradient vector of
// the same length, and each layer reads and accumulates its own slice.  A
// flat gradient is what a data-parallel trainer all-reduces in one call.
// Templated on the scalar so the gradient checks can run in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace fmnist {

/// One sample's activation: height x width x channels (a flat vector is 1 x 1 x size).
struct Shape {
  int h = 1, w = 1, c = 1;
  Eigen::Index size() const { return static_cast<Eigen::Index>(h) * w * c; }
  std::string str() const {
    return h == 1 && w == 1 ? std::to_string(c) : std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c);
  }
};

template <typename S>
using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;

/// A layer: a pure function of its input and its slice of the parameters.
template <typename S>
class Layer {
 public:
  using Mat = RowMat<S>;
  virtual ~Layer() = default;
  virtual Shape in_shape() const = 0;
  virtual Shape out_shape() const = 0;
  /// Parameters: the first num_weights() are weights (decayed), the rest biases.
  virtual Eigen::Index num_params() const { return 0; }
  virtual Eigen::Index num_weights() const { return 0; }
  /// He-normal weights, zero biases.
  virtual void init(S* /*w*/, std::mt19937& /*rng*/) const {}
  /// out = f(in); `work` is scratch kept for backward (im2col patches).
  virtual void forward(const Mat& in, Mat& out, const S* w, Mat& work) const = 0;
  /// Given dL/dout: adds dL/dparams to g, and writes dL/din to *din unless din is null.
  /// `work` is what forward left there; `work2` is scratch.
  virtual void backward(const Mat& in, const Mat& out, const Mat& dout, const S* w, S* g, Mat* din, Mat& work,
                        Mat& work2) const = 0;
  virtual std::string name() const = 0;
  /// Multiply-adds of the forward pass per sample.
  virtual double macs() const { return 0; }
};

namespace detail {
/// Below this many elementary operations a loop runs on one thread: waking
/// OpenMP threads costs more than it saves on small batches, and far more
/// when the cores are shared with other processes (the gradient tests on
/// tiny networks ran 10x slower threaded on a busy machine).
inline constexpr double kParallelWork = 1 << 18;

/// g += a^T b for tall a and b (many rows, few columns), e.g. the weight
/// gradient of a convolution, whose depth is every pixel of the batch.
/// Eigen's threaded GEMM is very slow on such shapes (a tiny result and a
/// huge depth), so the rows are cut into a fixed number of blocks, each
/// block's product is computed by one thread, and the partial results are
/// added in block order: the result does not depend on the thread count.
template <typename S, typename A, typename B, typename G>
void add_at_b(const A& a, const B& b, G&& g) {
  constexpr Eigen::Index kBlocks = 16;
  const Eigen::Index n = a.rows(), per = (n + kBlocks - 1) / kBlocks;
  std::vector<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>> part(static_cast<std::size_t>(kBlocks));
  const bool threaded = static_cast<double>(n) * static_cast<double>(a.cols() * b.cols()) >= kParallelWork;
  (void)threaded;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (threaded)
#endif
  for (Eigen::Index k = 0; k < kBlocks; ++k) {
    const Eigen::Index r0 = std::min(n, k * per), r1 = std::min(n, r0 + per);
    part[static_cast<std::size_t>(k)].noalias() = a.middleRows(r0, r1 - r0).transpose() * b.middleRows(r0, r1 - r0);
  }
  for (const auto& p : part) g += p;
}

template <typename S>
void he_normal(S* w, Eigen::Index count, Eigen::Index fan_in, std::mt19937& rng) {
  std::normal_distribution<double> g(0.0, std::sqrt(2.0 / static_cast<double>(fan_in)));
  for (Eigen::Index i = 0; i < count; ++i) w[i] = static_cast<S>(g(rng));
}
}  // namespace detail

/// out = in W + b, W (in x out) row-major, then b.
template <typename S>
class Dense final : public Layer<S> {
 public:
  using Mat = typename Layer<S>::Mat;
  Dense(Eigen::Index in, Eigen::Index out) : in_(in), out_(out) {}
  Shape in_shape() const override { return {1, 1, static_cast<int>(in_)}; }
  Shape out_shape() const override { return {1, 1, static_cast<int>(out_)}; }
  Eigen::Index num_params() const override { return in_ * out_ + out_; }
  Eigen::Index num_weights() const override { return in_ * out_; }
  void init(S* w, std::mt19937& rng) const override {
    detail::he_normal(w, in_ * out_, in_, rng);
    std::fill(w + in_ * out_, w + num_params(), S(0));
  }
  void forward(const Mat& in, Mat& out, const S* w, Mat&) const override {
    out.noalias() = in * weights(w);
    out.rowwise() += bias(w);
  }
  void backward(const Mat& in, const Mat&, const Mat& dout, const S* w, S* g, Mat* din, Mat&, Mat&) const override {
    Eigen::Map<Mat>(g, in_, out_).noalias() += in.transpose() * dout;
    Eigen::Map<Eigen::Matrix<S, 1, Eigen::Dynamic>>(g + in_ * out_, out_) += dout.colwise().sum();
    if (din) din->noalias() = dout * weights(w).transpose();
  }
  std::string name() const override { return "dense " + std::to_string(in_) + "-" + std::to_string(out_); }
  double macs() const override { return static_cast<double>(in_ * out_); }

 private:
  Eigen::Map<const Mat> weights(const S* w) const { return Eigen::Map<const Mat>(w, in_, out_); }
  Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>> bias(const S* w) const {
    return Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(w + in_ * out_, out_);
  }
  Eigen::Index in_, out_;
};

/// max(0, x), elementwise.
template <typename S>
class ReLU final : public Layer<S> {
 public:
  using Mat = typename Layer<S>::Mat;
  explicit ReLU(Shape s) : s_(s) {}
  Shape in_shape() const override { return s_; }
  Shape out_shape() const override { return s_; }
  void forward(const Mat& in, Mat& out, const S*, Mat&) const override { out = in.cwiseMax(S(0)); }
  void backward(const Mat&, const Mat& out, const Mat& dout, const S*, S*, Mat* din, Mat&, Mat&) const override {
    if (!din) return;
    din->resize(out.rows(), out.cols());
    const S* o = out.data();
    const S* d = dout.data();
    S* r = din->data();
    const Eigen::Index size = out.size();
    for (Eigen::Index i = 0; i < size; ++i) r[i] = o[i] > S(0) ? d[i] : S(0);
  }
  std::string name() const override { return "relu"; }

 private:
  Shape s_;
};

/// k x k convolution, stride 1, zero padding (k - 1) / 2 (the output has the
/// input's height and width), by im2col: the patches of a batch form an
/// (n h w) x (k k c_in) matrix P and the output is P W + b with W
/// (k k c_in) x c_out.  Patch column (ky k + kx) c_in + ci holds input
/// (y + ky - pad, x + kx - pad, ci).
template <typename S>
class Conv2D final : public Layer<S> {
 public:
  using Mat = typename Layer<S>::Mat;
  Conv2D(Shape in, int k, int c_out) : in_(in), k_(k), c_out_(c_out), pad_((k - 1) / 2) {
    if (k < 1 || k % 2 == 0) throw std::invalid_argument("Conv2D: the kernel size must be odd");
  }
  Shape in_shape() const override { return in_; }
  Shape out_shape() const override { return {in_.h, in_.w, c_out_}; }
  Eigen::Index patch() const { return static_cast<Eigen::Index>(k_) * k_ * in_.c; }
  Eigen::Index num_params() const override { return patch() * c_out_ + c_out_; }
  Eigen::Index num_weights() const override { return patch() * c_out_; }
  void init(S* w, std::mt19937& rng) const override {
    detail::he_normal(w, num_weights(), patch(), rng);
    std::fill(w + num_weights(), w + num_params(), S(0));
  }
  void forward(const Mat& in, Mat& out, const S* w, Mat& patches) const override {
    const Eigen::Index n = in.rows(), pixels = static_cast<Eigen::Index>(in_.h) * in_.w;
    patches.resize(n * pixels, patch());
    im2col(in, patches);
    out.resize(n, out_shape().size());
    Eigen::Map<Mat> o(out.data(), n * pixels, c_out_);
    o.noalias() = patches * weights(w);
    o.rowwise() += bias(w);
  }
  void backward(const Mat&, const Mat&, const Mat& dout, const S* w, S* g, Mat* din, Mat& patches,
                Mat& dpatches) const override {
    const Eigen::Index n = dout.rows(), pixels = static_cast<Eigen::Index>(in_.h) * in_.w;
    const Eigen::Map<const Mat> d(dout.data(), n * pixels, c_out_);
    detail::add_at_b<S>(patches, d, Eigen::Map<Mat>(g, patch(), c_out_));
    Eigen::Map<Eigen::Matrix<S, 1, Eigen::Dynamic>>(g + num_weights(), c_out_) += d.colwise().sum();
    if (!din) return;
    dpatches.noalias() = d * weights(w).transpose();
    din->setZero(n, in_.size());
    col2im(dpatches, *din);
  }
  std::string name() const override {
    return "conv " + std::to_string(k_) + "x" + std::to_string(k_) + " " + std::to_string(in_.c) + "->" +
           std::to_string(c_out_);
  }
  double macs() const override { return static_cast<double>(in_.h * in_.w) * static_cast<double>(patch() * c_out_); }

 private:
  Eigen::Map<const Mat> weights(const S* w) const { return Eigen::Map<const Mat>(w, patch(), c_out_); }
  Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>> bias(const S* w) const {
    return Eigen::Map<const Eigen::Matrix<S, 1, Eigen::Dynamic>>(w + num_weights(), c_out_);
  }
  // Visits (patch row, patch column, input offset within the sample, length)
  // of every run of in-bounds taps of sample s: for one output pixel and one
  // kernel row, the taps kx0..kx1-1 are adjacent input pixels, so their
  // (kx1 - kx0) c_in values are contiguous in both the input and the patch
  // row.  Out-of-bounds taps are zero padding.
  template <typename F>
  void runs(Eigen::Index s, F&& f) const {
    const int H = in_.h, W = in_.w, C = in_.c;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const Eigen::Index row = (s * H + y) * W + x;
        const int kx0 = std::max(0, pad_ - x), kx1 = std::min(k_, W + pad_ - x);
        for (int ky = 0; ky < k_; ++ky) {
          const int iy = y + ky - pad_;
          if (iy < 0 || iy >= H) continue;
          f(row, static_cast<Eigen::Index>(ky * k_ + kx0) * C, static_cast<Eigen::Index>(iy * W + x + kx0 - pad_) * C,
            static_cast<Eigen::Index>(kx1 - kx0) * C);
        }
      }
  }
  void im2col(const Mat& in, Mat& patches) const {
    const Eigen::Index n = in.rows(), P = patch(), pixels = static_cast<Eigen::Index>(in_.h) * in_.w;
    const bool threaded = static_cast<double>(n * pixels * P) >= detail::kParallelWork;
    (void)threaded;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (threaded)
#endif
    for (Eigen::Index s = 0; s < n; ++s) {
      std::fill(patches.data() + s * pixels * P, patches.data() + (s + 1) * pixels * P, S(0));
      const S* src = in.data() + s * in.cols();
      runs(s, [&](Eigen::Index row, Eigen::Index col, Eigen::Index off, Eigen::Index len) {
        std::copy_n(src + off, len, patches.data() + row * P + col);
      });
    }
  }
  void col2im(const Mat& dpatches, Mat& din) const {
    const Eigen::Index n = din.rows(), P = patch();
    const bool threaded = static_cast<double>(dpatches.size()) >= detail::kParallelWork;
    (void)threaded;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (threaded)
#endif
    for (Eigen::Index s = 0; s < n; ++s) {
      S* dst = din.data() + s * din.cols();
      runs(s, [&](Eigen::Index row, Eigen::Index col, Eigen::Index off, Eigen::Index len) {
        const S* from = dpatches.data() + row * P + col;
        for (Eigen::Index i = 0; i < len; ++i) dst[off + i] += from[i];
      });
    }
  }
  Shape in_;
  int k_, c_out_, pad_;
};

/// 2 x 2 max-pooling with stride 2 (odd trailing rows/columns are dropped).
/// The gradient goes to the first largest input of each window.
template <typename S>
class MaxPool2 final : public Layer<S> {
 public:
  using Mat = typename Layer<S>::Mat;
  explicit MaxPool2(Shape in) : in_(in) {}
  Shape in_shape() const override { return in_; }
  Shape out_shape() const override { return {in_.h / 2, in_.w / 2, in_.c}; }
  void forward(const Mat& in, Mat& out, const S*, Mat&) const override {
    out.resize(in.rows(), out_shape().size());
    each(in.rows(), [&](Eigen::Index s, Eigen::Index o, const Eigen::Index (&i)[4]) {
      const S* a = in.data() + s * in.cols();
      out(s, o) = std::max(std::max(a[i[0]], a[i[1]]), std::max(a[i[2]], a[i[3]]));
    });
  }
  void backward(const Mat& in, const Mat& out, const Mat& dout, const S*, S*, Mat* din, Mat&, Mat&) const override {
    if (!din) return;
    din->resize(in.rows(), in.cols());
    if (in_.h % 2 || in_.w % 2) din->setZero();  // inputs in no window get no gradient
    each(in.rows(), [&](Eigen::Index s, Eigen::Index o, const Eigen::Index (&i)[4]) {
      const S* a = in.data() + s * in.cols();
      S* d = din->data() + s * in.cols();
      int j = 0;
      while (j < 3 && a[i[j]] != out(s, o)) ++j;
      for (int q = 0; q < 4; ++q) d[i[q]] = q == j ? dout(s, o) : S(0);
    });
  }
  std::string name() const override { return "maxpool 2x2"; }

 private:
  // f(sample, output column, the 4 input columns of its window).
  template <typename F>
  void each(Eigen::Index n, F&& f) const {
    const Shape o = out_shape();
    const Eigen::Index C = in_.c, W = in_.w;
    const bool threaded = 4.0 * static_cast<double>(n * o.size()) >= detail::kParallelWork;
    (void)threaded;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (threaded)
#endif
    for (Eigen::Index s = 0; s < n; ++s)
      for (Eigen::Index y = 0; y < o.h; ++y)
        for (Eigen::Index x = 0; x < o.w; ++x)
          for (Eigen::Index c = 0; c < C; ++c) {
            const Eigen::Index tl = ((2 * y) * W + 2 * x) * C + c;
            const Eigen::Index i[4] = {tl, tl + C, tl + W * C, tl + W * C + C};
            f(s, (y * o.w + x) * C + c, i);
          }
  }
  Shape in_;
};

/// A chain of layers; layers [0, encoder_layers) are the encoder, whose
/// output h is the representation, the rest the projection head.
template <typename S>
class Network {
 public:
  using Mat = RowMat<S>;

  /// Activations of a forward pass (a[0] the input, a[l + 1] the output of
  /// layer l) and the layers' scratch, kept for the backward pass.
  struct Cache {
    std::vector<Mat> a, work, work2;  ///< activations; each layer's scratch
    std::vector<Mat> d;               ///< d[l] = dL/da[l] (kept, so no step reallocates them)
  };

  /// Adds a layer; its input shape must be the previous layer's output shape.
  Network& add(std::shared_ptr<const Layer<S>> layer) {
    if (!layers_.empty() && layers_.back()->out_shape().size() != layer->in_shape().size())
      throw std::invalid_argument("Network: " + layer->name() + " expects " + std::to_string(layer->in_shape().size()) +
                                  " inputs, the previous layer gives " +
                                  std::to_string(layers_.back()->out_shape().size()));
    offset_.push_back(layers_.empty() ? 0 : offset_.back() + layers_.back()->num_params());
    layers_.push_back(std::move(layer));
    return *this;
  }
  /// Marks the layers added so far as the encoder.
  void end_encoder() { encoder_layers_ = static_cast<int>(layers_.size()); }

  /// Allocates the parameters and draws them from `seed`; zeroes the gradient.
  void init(unsigned seed) {
    if (layers_.empty()) throw std::invalid_argument("Network: no layers");
    if (encoder_layers_ < 1 || encoder_layers_ >= layers()) throw std::invalid_argument("Network: no encoder or no head");
    params = Vec<S>::Zero(offset_.back() + layers_.back()->num_params());
    grad = Vec<S>::Zero(params.size());
    std::mt19937 rng(seed);
    for (std::size_t l = 0; l < layers_.size(); ++l) layers_[l]->init(params.data() + offset_[l], rng);
  }

  int layers() const { return static_cast<int>(layers_.size()); }
  int encoder_layers() const { return encoder_layers_; }
  const Layer<S>& layer(int l) const { return *layers_[static_cast<std::size_t>(l)]; }
  Eigen::Index offset(int l) const { return offset_[static_cast<std::size_t>(l)]; }
  Eigen::Index input_size() const { return layers_.front()->in_shape().size(); }
  Eigen::Index output_size() const { return layers_.back()->out_shape().size(); }
  Eigen::Index encoder_size() const { return layer(encoder_layers_ - 1).out_shape().size(); }

  /// 1 for weights, 0 for biases (weight decay applies to weights only).
  Vec<S> decay_mask() const {
    Vec<S> m = Vec<S>::Zero(params.size());
    for (std::size_t l = 0; l < layers_.size(); ++l) m.segment(offset_[l], layers_[l]->num_weights()).setOnes();
    return m;
  }

  /// Forward through layers [0, upto) (all by default); returns the last activation.
  template <typename D>
  const Mat& forward(const Eigen::MatrixBase<D>& x, Cache& c, int upto = -1) const {
    const std::size_t L = upto < 0 ? layers_.size() : static_cast<std::size_t>(upto);
    c.a.resize(L + 1);
    c.work.resize(L);
    c.a[0] = x.template cast<S>();
    for (std::size_t l = 0; l < L; ++l) layers_[l]->forward(c.a[l], c.a[l + 1], params.data() + offset_[l], c.work[l]);
    return c.a[L];
  }

  /// Adds dL/dparams to `grad` given dL/d(output) of a full forward pass.
  template <typename D>
  void backward(Cache& c, const Eigen::MatrixBase<D>& dout) {
    const std::size_t L = layers_.size();
    c.d.resize(L + 1);
    c.work2.resize(L);
    c.d[L] = dout.template cast<S>();
    for (std::size_t l = L; l-- > 0;)
      layers_[l]->backward(c.a[l], c.a[l + 1], c.d[l + 1], params.data() + offset_[l], grad.data() + offset_[l],
                           l > 0 ? &c.d[l] : nullptr, c.work[l], c.work2[l]);
  }

  /// Encoder output h for the rows of x (in chunks, to bound memory).
  template <typename D>
  Mat encode(const Eigen::MatrixBase<D>& x, Eigen::Index chunk = 1024) const {
    Mat h(x.rows(), encoder_size());
    Cache c;
    for (Eigen::Index r = 0; r < x.rows(); r += chunk) {
      const Eigen::Index n = std::min(chunk, x.rows() - r);
      h.middleRows(r, n) = forward(x.middleRows(r, n), c, encoder_layers_);
    }
    return h;
  }

  /// "conv 5x5 1->16, relu, ..." with | between encoder and head.
  std::string describe() const {
    std::string s;
    for (int l = 0; l < layers(); ++l) s += (l == 0 ? "" : l == encoder_layers_ ? " | " : ", ") + layer(l).name();
    return s;
  }
  /// Forward multiply-adds per sample.
  double macs() const {
    double m = 0;
    for (const auto& l : layers_) m += l->macs();
    return m;
  }

  Vec<S> params, grad;  ///< all parameters, and dL/dparams (accumulated by backward)

 private:
  std::vector<std::shared_ptr<const Layer<S>>> layers_;
  std::vector<Eigen::Index> offset_;
  int encoder_layers_ = 0;
};

/// MLP: dense layers with ReLU between them (none after the last);
/// sizes = {in, hidden..., out}, the first `encoder_layers` dense layers the encoder.
template <typename S>
Network<S> make_mlp(const std::vector<int>& sizes, int encoder_layers, unsigned seed) {
  if (sizes.size() < 3 || encoder_layers < 1 || encoder_layers + 1 >= static_cast<int>(sizes.size()))
    throw std::invalid_argument("make_mlp: need an encoder and a head");
  Network<S> net;
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
    net.add(std::make_shared<Dense<S>>(sizes[l], sizes[l + 1]));
    if (l + 2 < sizes.size()) net.add(std::make_shared<ReLU<S>>(Shape{1, 1, sizes[l + 1]}));
    if (static_cast<int>(l) + 1 == encoder_layers) net.end_encoder();
  }
  net.init(seed);
  return net;
}

/// The convolutional network of the example on side x side grey images:
/// the encoder conv k1 x k1 (c1) - ReLU - pool - conv k2 x k2 (c2) - ReLU -
/// pool, whose output (the pooled feature map, flattened: 7 x 7 x 32 = 1568
/// values for 28 x 28 images) is the representation, and the projection
/// head dense - ReLU - dense (hidden, out).  rep > 0 puts a dense layer of
/// that width with a ReLU at the end of the encoder (a smaller representation).
struct CNNSpec {
  int side = 28, k1 = 5, c1 = 16, k2 = 3, c2 = 32, rep = 0, hidden = 128, out = 64;
};

template <typename S>
Network<S> make_cnn(const CNNSpec& p, unsigned seed) {
  Network<S> net;
  Shape s{p.side, p.side, 1};
  for (const auto& [k, c] : {std::pair<int, int>{p.k1, p.c1}, std::pair<int, int>{p.k2, p.c2}}) {
    net.add(std::make_shared<Conv2D<S>>(s, k, c));
    s.c = c;
    net.add(std::make_shared<ReLU<S>>(s));
    net.add(std::make_shared<MaxPool2<S>>(s));
    s = {s.h / 2, s.w / 2, c};
  }
  if (p.rep > 0) {
    net.add(std::make_shared<Dense<S>>(s.size(), p.rep));
    net.add(std::make_shared<ReLU<S>>(Shape{1, 1, p.rep}));
  }
  net.end_encoder();
  net.add(std::make_shared<Dense<S>>(p.rep > 0 ? p.rep : s.size(), p.hidden));
  net.add(std::make_shared<ReLU<S>>(Shape{1, 1, p.hidden}));
  net.add(std::make_shared<Dense<S>>(p.hidden, p.out));
  net.init(seed);
  return net;
}

/// Adam (Kingma & Ba) or SGD with momentum over a flat parameter vector;
/// weight decay (added to the gradient) on the entries where mask is 1.
template <typename S>
class Optimizer {
 public:
  enum class Kind { Adam, SGD };
  Optimizer(Vec<S> decay_mask, Kind kind, double weight_decay = 0.0, double momentum = 0.9)
      : kind_(kind), wd_(weight_decay), momentum_(momentum), mask_(std::move(decay_mask)) {
    m_ = Vec<S>::Zero(mask_.size());
    v_ = m_;
  }

  /// One update of p from the gradient g with learning rate lr.
  void step(Vec<S>& p, const Vec<S>& g, double lr) {
    ++t_;
    const S a = static_cast<S>(lr);
    const auto grad = (g.array() + static_cast<S>(wd_) * mask_.array() * p.array()).matrix();
    if (kind_ == Kind::SGD) {
      m_ = static_cast<S>(momentum_) * m_ + grad;
      p -= a * m_;
      return;
    }
    const S b1 = S(0.9), b2 = S(0.999), eps = S(1e-8);
    m_ = b1 * m_ + (S(1) - b1) * grad;
    v_.array() = b2 * v_.array() + (S(1) - b2) * grad.array().square();
    const S c1 = S(1) - static_cast<S>(std::pow(0.9, t_)), c2 = S(1) - static_cast<S>(std::pow(0.999, t_));
    p.array() -= a * (m_.array() / c1) / ((v_.array() / c2).sqrt() + eps);
  }

 private:
  Kind kind_;
  double wd_, momentum_;
  Vec<S> mask_, m_, v_;
  int t_ = 0;
};

}  // namespace fmnist
