// Progress inside an epoch: one line with the batches done, the rate, the
// time left and the running loss.  On a terminal it is redrawn in place
// (with a bar); otherwise a plain line is printed about every tenth of the
// epoch.  The formatting is a pure function, tested on its own.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

namespace fmnist {

/// "m:ss" (or "h:mm:ss") of a non-negative number of seconds, rounded up.
inline std::string clock_time(double seconds) {
  const long long s = static_cast<long long>(std::ceil(std::max(0.0, seconds)));
  char b[32];
  if (s >= 3600)
    std::snprintf(b, sizeof b, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(b, sizeof b, "%lld:%02lld", s / 60, s % 60);
  return b;
}

/// The progress line of epoch `epoch` of `epochs` after `done` of `total`
/// batches, `samples` images and `seconds`, with the running mean loss.
/// bar_width > 0 draws a bar of that many characters.  Requires done >= 1
/// and seconds > 0 (the rate and the time left are measured, never guessed).
inline std::string progress_line(int epoch, int epochs, long long done, long long total, long long samples,
                                 double seconds, double loss, int bar_width) {
  std::string bar;
  if (bar_width > 0) {
    const long long full = total > 0 ? done * bar_width / total : 0;
    bar = " [" + std::string(static_cast<std::size_t>(full), '#') +
          std::string(static_cast<std::size_t>(bar_width - full), '.') + "]";
  }
  const double rate = static_cast<double>(samples) / seconds;
  const double left = seconds * static_cast<double>(total - done) / static_cast<double>(done);
  char b[256];
  std::snprintf(b, sizeof b, "epoch %d/%d%s %lld/%lld batches, %.0f samples/s, ETA %s, loss %.4f", epoch, epochs,
                bar.c_str(), done, total, rate, clock_time(left).c_str(), loss);
  return b;
}

/// Whether batch `done` of `total` is the first one at or past a new tenth
/// of the epoch (1..10), for the plain progress lines off a terminal.
inline bool crosses_tenth(long long done, long long total) {
  if (done < 1 || total < 1 || done >= total) return false;  // the epoch row reports the end
  return done * 10 / total > (done - 1) * 10 / total;
}

}  // namespace fmnist
