#include "train/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace whale::svg {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Rgb {
  double r, g, b;
};

Rgb parse_hex(const char* hex) {
  unsigned r = 0, g = 0, b = 0;
  std::sscanf(hex + 1, "%2x%2x%2x", &r, &g, &b);
  return {double(r), double(g), double(b)};
}

// Piecewise-linear interpolation through evenly spaced colour stops, t in [0, 1].
std::string interpolate(const std::vector<const char*>& stops, double t) {
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * double(stops.size() - 1);
  const size_t i = std::min(size_t(t), stops.size() - 2);
  const double f = t - double(i);
  const Rgb a = parse_hex(stops[i]), b = parse_hex(stops[i + 1]);
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", int(std::lround(a.r + (b.r - a.r) * f)),
                int(std::lround(a.g + (b.g - a.g) * f)), int(std::lround(a.b + (b.b - a.b) * f)));
  return buf;
}

// ColorBrewer RdBu (colour-blind safe): blue below uniform, near-white at 1x, red above.
const std::vector<const char*> kDiverging = {"#2166ac", "#67a9cf", "#f7f7f7", "#ef8a62", "#b2182b"};

// A load ratio r to a position on the diverging scale: log2(r) from -2 (1/4x) to 2 (4x).
double ratio_position(double ratio) {
  const double l = ratio > 0 ? std::log2(ratio) : -kInf;
  return std::clamp(l / 4.0 + 0.5, 0.0, 1.0);
}

// Coordinates with one decimal and no trailing ".0": a pixel tenth is below what anyone sees.
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  std::string s = buf;
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  if (s == "-0") s = "0";
  return s;
}

// Width of text in a sans-serif face: digits and lower case average about 0.6 em. Only used
// to keep labels apart, so an estimate that errs wide is enough.
double text_width(const std::string& text, double size = 12) {
  size_t chars = 0;
  for (unsigned char c : text) chars += (c & 0xC0) != 0x80;  // count UTF-8 code points
  return 0.62 * size * double(chars);
}

std::string strip_zeros(std::string s) {
  const size_t dot = s.find('.');
  if (dot == std::string::npos) return s;
  size_t end = s.find_first_of("eE", dot);
  if (end == std::string::npos) end = s.size();
  size_t cut = end;
  while (cut > dot + 1 && s[cut - 1] == '0') --cut;
  if (cut == dot + 1) cut = dot;
  return s.substr(0, cut) + s.substr(end);
}

std::string fixed(double v, int decimals) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// 3.4e-4 rather than printf's 3.4e-04.
std::string scientific(double v, int decimals) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*e", decimals, v);
  std::string s = strip_zeros(buf);
  const size_t e = s.find('e');
  std::string mantissa = s.substr(0, e), exponent = s.substr(e + 1);
  const bool negative = exponent[0] == '-';
  exponent = exponent.substr(1);
  while (exponent.size() > 1 && exponent[0] == '0') exponent.erase(0, 1);
  return mantissa + "e" + (negative ? "-" : "") + exponent;
}

// 1.5k, 12M: value / unit with the given decimals, trailing zeros dropped.
std::string si(double v, int decimals) {
  const double a = std::fabs(v);
  const double unit = a >= 999.5e6 ? 1e9 : a >= 999.5e3 ? 1e6 : a >= 999.5 ? 1e3 : 1;
  const char* suffix = unit == 1e9 ? "G" : unit == 1e6 ? "M" : unit == 1e3 ? "k" : "";
  return strip_zeros(fixed(v / unit, decimals)) + suffix;
}

int digits_below(double step) {  // decimals that show a multiple of step exactly
  return int(std::ceil(-std::log10(step) - 1e-9));
}

struct Pt {
  double x, y;
};

// M4 decimation (Jugel et al., 2014): per pixel column keep the first, lowest, highest and
// last point. The drawn curve is unchanged; a 100k-step run stays a small file.
std::vector<Pt> decimate(const std::vector<Pt>& pts) {
  std::vector<Pt> out;
  size_t begin = 0;
  while (begin < pts.size()) {
    const double column = std::floor(pts[begin].x);
    size_t end = begin, lo = begin, hi = begin;
    while (end < pts.size() && std::floor(pts[end].x) == column) {
      if (pts[end].y < pts[lo].y) lo = end;
      if (pts[end].y > pts[hi].y) hi = end;
      ++end;
    }
    size_t keep[4] = {begin, std::min(lo, hi), std::max(lo, hi), end - 1};
    for (int k = 0; k < 4; ++k)
      if (k == 0 || keep[k] != keep[k - 1]) out.push_back(pts[keep[k]]);
    begin = end;
  }
  return out;
}

}  // namespace

std::string viridis(double t) {
  return interpolate({"#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"}, t);
}

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string format_number(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";
  const double a = std::fabs(value);
  if (a == 0) return "0";
  if (a >= 999.5) {
    const double unit = a >= 999.5e6 ? 1e9 : a >= 999.5e3 ? 1e6 : 1e3, m = a / unit;
    return si(value, m >= 99.95 ? 0 : m >= 9.995 ? 1 : 2);
  }
  if (a < 9.995e-3) return scientific(value, 1);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", value);
  return buf;
}

double Scale::fraction(double value) const {
  if (log) return (std::log10(value) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
  return (value - lo) / (hi - lo);
}

namespace {

Scale linear_scale(double lo, double hi, int max_ticks) {
  // A flat series (or one that varies in its last digits, like a float sum) gets a span of
  // 10% around its value; ticks a millionth apart would need unreadable labels.
  const double size = std::max(std::fabs(lo), std::fabs(hi));
  if (!(hi - lo > size * 1e-4)) {
    const double mid = (lo + hi) / 2, d = size == 0 ? 1 : size * 0.1;
    lo = mid - d;
    hi = mid + d;
  }
  double magnitude = std::pow(10.0, std::floor(std::log10((hi - lo) / max_ticks)));
  for (;;) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double step = m * magnitude;
      const double a = std::floor(lo / step + 1e-9) * step, b = std::ceil(hi / step - 1e-9) * step;
      const long long n = std::llround((b - a) / step) + 1;
      if (n > max_ticks) continue;
      Scale s;
      s.lo = a;
      s.hi = b;
      s.step = step;
      for (long long i = 0; i < n; ++i) {
        const double v = std::round((a + double(i) * step) / step) * step;
        s.ticks.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
      }
      return s;
    }
    magnitude *= 10;
  }
}

Scale log_scale(double lo, double hi, int max_ticks) {
  if (!(hi > lo)) {
    lo /= 2;
    hi *= 2;
  }
  const int e0 = int(std::floor(std::log10(lo))), e1 = int(std::ceil(std::log10(hi)));
  auto candidates = [&](const std::vector<int>& mantissas, int stride) {
    std::vector<double> ticks;
    const int first = int(std::floor(double(e0) / stride)) * stride;
    for (int e = first; e <= e1 + stride; e += stride)
      for (int m : mantissas) ticks.push_back(m * std::pow(10.0, e));
    // the domain: the last candidate at or below lo to the first at or above hi
    size_t a = 0, b = ticks.size() - 1;
    while (a + 1 < ticks.size() && ticks[a + 1] <= lo * (1 + 1e-9)) ++a;
    while (b > 0 && ticks[b - 1] >= hi * (1 - 1e-9)) --b;
    return std::vector<double>(ticks.begin() + long(a), ticks.begin() + long(b) + 1);
  };
  const std::vector<std::vector<int>> sets = {{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  std::vector<double> best;
  for (const auto& set : sets) {
    std::vector<double> t = candidates(set, 1);
    if (int(t.size()) > max_ticks) break;
    best = t;
    if (t.size() >= 4) break;
  }
  if (best.empty())  // many decades: every k-th power of ten
    for (int stride = 2; best.empty() || int(best.size()) > max_ticks; ++stride)
      best = candidates({1}, stride);
  Scale s;
  s.log = true;
  s.lo = best.front();
  s.hi = best.back();
  s.ticks = best;
  return s;
}

}  // namespace

Scale nice_scale(double lo, double hi, bool log, int max_ticks) {
  max_ticks = std::max(max_ticks, 2);
  return log ? log_scale(lo, hi, max_ticks) : linear_scale(lo, hi, max_ticks);
}

std::vector<std::string> tick_labels(const Scale& scale) {
  std::vector<std::string> out;
  double largest = 0;
  for (double t : scale.ticks) largest = std::max(largest, std::fabs(t));
  for (double t : scale.ticks) {
    const double a = std::fabs(t);
    if (scale.log || scale.step <= 0) {
      out.push_back(format_number(t));
    } else if (a == 0) {
      out.push_back("0");
    } else if (largest >= 999.5) {
      const double unit = a >= 999.5e6 ? 1e9 : a >= 999.5e3 ? 1e6 : a >= 999.5 ? 1e3 : 1;
      out.push_back(si(t, std::clamp(digits_below(scale.step / unit), 0, 6)));
    } else if (largest < 9.995e-3) {
      const int e = int(std::floor(std::log10(a) + 1e-9));
      const int s = int(std::floor(std::log10(scale.step) + 1e-9));
      out.push_back(scientific(t, std::clamp(e - s, 0, 6)));
    } else {
      out.push_back(fixed(t, std::clamp(digits_below(scale.step), 0, 9)));
    }
  }
  return out;
}

Document::Document(double width, double height) : width_(width), height_(height) {}

void Document::title(const std::string& text, const std::string& subtitle) {
  body_ << "<text class=\"title\" x=\"16\" y=\"26\">" << escape(text) << "</text>\n";
  if (!subtitle.empty())
    body_ << "<text class=\"subtitle\" x=\"16\" y=\"46\">" << escape(subtitle) << "</text>\n";
}

void Document::chart(const Chart& c, const Box& box) {
  body_ << "<g class=\"chart\" data-title=\"" << escape(c.title) << "\">\n";
  draw_chart(c, box);
  body_ << "</g>\n";
}

void Document::heatmap(const Heatmap& h, const Box& box) {
  body_ << "<g class=\"heatmap\" data-title=\"" << escape(h.title) << "\">\n";
  draw_heatmap(h, box);
  body_ << "</g>\n";
}

void Document::draw_chart(const Chart& c, const Box& box) {
  auto usable = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!c.log_y || y > 0);
  };
  double x0 = kInf, x1 = -kInf, y0 = kInf, y1 = -kInf;
  for (const Line& l : c.lines)
    for (size_t i = 0; i < l.x.size() && i < l.y.size(); ++i)
      if (usable(l.x[i], l.y[i])) {
        x0 = std::min(x0, l.x[i]);
        x1 = std::max(x1, l.x[i]);
        y0 = std::min(y0, l.y[i]);
        y1 = std::max(y1, l.y[i]);
      }
  const double top = box.y + (c.title.empty() ? 8 : 30);
  const double bottom = box.y + box.height - (c.x_label.empty() ? 22 : 40);
  if (x0 > x1) {
    body_ << "<text class=\"panel-title\" x=\"" << num(box.x + box.width / 2) << "\" y=\""
          << num(box.y + 16) << "\" text-anchor=\"middle\">" << escape(c.title)
          << "</text>\n<text class=\"tick\" x=\"" << num(box.x + box.width / 2) << "\" y=\""
          << num((top + bottom) / 2) << "\" text-anchor=\"middle\">no data</text>\n";
    return;
  }
  const Scale ys = nice_scale(y0, y1, c.log_y, int((bottom - top) / 28));
  const std::vector<std::string> y_labels = tick_labels(ys);
  double widest = 0;
  for (const auto& s : y_labels) widest = std::max(widest, text_width(s));
  const double left = box.x + (c.y_label.empty() ? 6 : 26) + widest + 8;
  const double right = box.x + box.width - 16;
  // The x scale whose domain wastes least space, with its labels 24 px apart and about one
  // tick per 80 px (a few 1-2-5 steps fit; 0..700 in 340 px wants step 100, not 200 to 800).
  Scale xs = nice_scale(x0, x1, false, 2);
  std::vector<std::string> x_labels = tick_labels(xs);
  const double target = std::clamp((right - left) / 80, 4.5, 10.0);
  long best_coverage = -1;
  double best_distance = 0;
  for (int n = 2; n <= int((right - left) / 30); ++n) {
    const Scale s = nice_scale(x0, x1, false, n);
    const std::vector<std::string> labels = tick_labels(s);
    double w = 0;
    for (const auto& l : labels) w = std::max(w, text_width(l));
    if ((right - left) / double(std::max<size_t>(1, s.ticks.size() - 1)) < w + 24) continue;
    const long coverage = std::lround(20 * (x1 - x0) / (s.hi - s.lo));
    const double distance = std::fabs(double(s.ticks.size()) - target);
    if (coverage > best_coverage || (coverage == best_coverage && distance < best_distance)) {
      best_coverage = coverage;
      best_distance = distance;
      xs = s;
      x_labels = labels;
    }
  }
  auto px = [&](double x) { return left + xs.fraction(x) * (right - left); };
  auto py = [&](double y) { return bottom - ys.fraction(y) * (bottom - top); };

  if (!c.title.empty())
    body_ << "<text class=\"panel-title\" x=\"" << num((left + right) / 2) << "\" y=\""
          << num(box.y + 18) << "\" text-anchor=\"middle\">" << escape(c.title) << "</text>\n";
  body_ << "<g class=\"grid\">";
  for (double t : ys.ticks)
    body_ << "<path d=\"M" << num(left) << "," << num(py(t)) << "H" << num(right) << "\"/>";
  for (double t : xs.ticks)
    body_ << "<path d=\"M" << num(px(t)) << "," << num(top) << "V" << num(bottom) << "\"/>";
  body_ << "</g>\n<path class=\"axis\" d=\"M" << num(left) << "," << num(top) << "V" << num(bottom)
        << "H" << num(right) << "\"/>\n";
  // y labels from the bottom up, skipping any that would touch the one below (log 1..9).
  double last = kInf;
  for (size_t i = 0; i < ys.ticks.size(); ++i) {
    const double y = py(ys.ticks[i]);
    if (last - y < 14) continue;
    last = y;
    body_ << "<text class=\"tick ytick\" data-value=\"" << ys.ticks[i] << "\" x=\"" << num(left - 6)
          << "\" y=\"" << num(y + 4) << "\" text-anchor=\"end\">" << y_labels[i] << "</text>\n";
  }
  for (size_t i = 0; i < xs.ticks.size(); ++i)
    body_ << "<text class=\"tick xtick\" data-value=\"" << xs.ticks[i] << "\" x=\""
          << num(px(xs.ticks[i])) << "\" y=\"" << num(bottom + 16) << "\" text-anchor=\"middle\">"
          << x_labels[i] << "</text>\n";
  if (!c.x_label.empty())
    body_ << "<text x=\"" << num((left + right) / 2) << "\" y=\"" << num(bottom + 34)
          << "\" text-anchor=\"middle\">" << escape(c.x_label) << "</text>\n";
  if (!c.y_label.empty())
    body_ << "<text transform=\"translate(" << num(box.x + 12) << "," << num((top + bottom) / 2)
          << ") rotate(-90)\" text-anchor=\"middle\">" << escape(c.y_label) << "</text>\n";

  // Curves, split where a value is missing.
  std::vector<Pt> all;  // every drawn point, to keep the legend off the data
  for (const Line& l : c.lines) {
    std::vector<std::vector<Pt>> runs(1);
    for (size_t i = 0; i < l.x.size() && i < l.y.size(); ++i) {
      if (usable(l.x[i], l.y[i]))
        runs.back().push_back({px(l.x[i]), py(l.y[i])});
      else if (!runs.back().empty())
        runs.emplace_back();
    }
    std::string d;
    for (auto& run : runs) {
      if (run.size() > size_t(2 * (right - left))) run = decimate(run);
      for (size_t i = 0; i < run.size(); ++i) {
        d += i ? 'L' : 'M';
        d += num(run[i].x);
        d += ',';
        d += num(run[i].y);
      }
      all.insert(all.end(), run.begin(), run.end());
    }
    body_ << "<path class=\"series\" data-name=\"" << escape(l.name) << "\" stroke=\"" << l.colour
          << "\" stroke-width=\"" << l.width << "\"";
    if (l.opacity < 1) body_ << " stroke-opacity=\"" << l.opacity << "\"";
    if (l.dashed) body_ << " stroke-dasharray=\"6 4\"";
    body_ << " d=\"" << d << "\"/>\n";
    if (l.markers) {
      body_ << "<g fill=\"" << l.colour << "\" stroke=\"#fff\">";
      for (const auto& run : runs)
        for (const Pt& p : run)
          body_ << "<circle cx=\"" << num(p.x) << "\" cy=\"" << num(p.y) << "\" r=\"3.5\"/>";
      body_ << "</g>\n";
    }
  }

  std::vector<const Line*> entries;
  for (const Line& l : c.lines)
    if (!l.name.empty()) entries.push_back(&l);
  if (!c.legend || entries.empty()) return;
  double lw = 0;
  for (const Line* l : entries) lw = std::max(lw, text_width(l->name));
  lw += 44;
  const double lh = 18.0 * double(entries.size()) + 10;
  if (lh > bottom - top || lw > right - left) return;
  // The corner that covers the fewest points.
  const Pt corners[] = {{right - 8 - lw, top + 8},
                        {left + 8, top + 8},
                        {right - 8 - lw, bottom - 8 - lh},
                        {left + 8, bottom - 8 - lh}};
  Pt at = corners[0];
  size_t fewest = SIZE_MAX;
  for (const Pt& corner : corners) {
    size_t n = 0;
    for (const Pt& p : all)
      n += p.x >= corner.x && p.x <= corner.x + lw && p.y >= corner.y && p.y <= corner.y + lh;
    if (n < fewest) {
      fewest = n;
      at = corner;
    }
  }
  body_ << "<g class=\"legend\"><rect x=\"" << num(at.x) << "\" y=\"" << num(at.y) << "\" width=\""
        << num(lw) << "\" height=\"" << num(lh)
        << "\" rx=\"3\" fill=\"#fff\" fill-opacity=\"0.88\" stroke=\"#ddd\"/>";
  for (size_t i = 0; i < entries.size(); ++i) {
    const Line& l = *entries[i];
    const double y = at.y + 14 + 18.0 * double(i);
    body_ << "<path stroke=\"" << l.colour << "\" stroke-width=\"" << std::max(l.width, 2.0)
          << "\"";
    if (l.opacity < 1) body_ << " stroke-opacity=\"" << std::max(l.opacity, 0.5) << "\"";
    if (l.dashed) body_ << " stroke-dasharray=\"6 3\"";
    body_ << " d=\"M" << num(at.x + 8) << "," << num(y) << "h26\"/>";
    if (l.markers)
      body_ << "<circle cx=\"" << num(at.x + 21) << "\" cy=\"" << num(y) << "\" r=\"3.5\" fill=\""
            << l.colour << "\" stroke=\"#fff\"/>";
    body_ << "<text x=\"" << num(at.x + 40) << "\" y=\"" << num(y + 4) << "\">" << escape(l.name)
          << "</text>";
  }
  body_ << "</g>\n";
}

void Document::draw_heatmap(const Heatmap& h, const Box& box) {
  const size_t rows = h.shares.size();
  size_t cols = 0;
  for (const auto& r : h.shares) cols = std::max(cols, r.size());
  if (rows == 0 || cols == 0) return;
  const double top = box.y + 30, bottom = box.y + box.height - (h.x_label.empty() ? 22 : 40);
  const double left = box.x + 16 + text_width(h.row_name + " " + std::to_string(rows - 1));
  const double bar_width = 90;
  const double cw = std::min(56.0, (box.x + box.width - bar_width - left) / double(cols));
  const double ch = std::min(26.0, (bottom - top) / double(rows));
  const double grid_right = left + cw * double(cols), grid_bottom = top + ch * double(rows);
  const double gap = cw >= 6 && ch >= 6 ? 1 : 0;
  body_ << "<text class=\"panel-title\" x=\"" << num((left + grid_right) / 2) << "\" y=\""
        << num(box.y + 18) << "\" text-anchor=\"middle\">" << escape(h.title) << "</text>\n";
  const std::string column = h.x_label.empty() ? "column" : h.x_label;
  const bool values_fit = cw >= 34 && ch >= 16;
  for (size_t r = 0; r < rows; ++r) {
    const double y = top + ch * double(r);
    const size_t n = h.shares[r].size();
    for (size_t c = 0; c < n; ++c) {
      const double share = h.shares[r][c], ratio = share * double(n), t = ratio_position(ratio);
      const double x = left + cw * double(c);
      body_ << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << num(cw - gap)
            << "\" height=\"" << num(ch - gap) << "\" fill=\"" << interpolate(kDiverging, t)
            << "\"><title>" << escape(h.row_name) << " " << r << ", " << escape(column) << " " << c
            << ": " << format_number(share * 100) << "% (" << format_number(ratio)
            << "x uniform)</title></rect>";
      if (values_fit)
        body_ << "<text class=\"cell\" x=\"" << num(x + (cw - gap) / 2) << "\" y=\""
              << num(y + ch / 2 + 3.5) << "\" text-anchor=\"middle\" fill=\""
              << (std::fabs(t - 0.5) > 0.3 ? "#fff" : "#222") << "\">" << fixed(ratio, 2)
              << "</text>";
    }
    body_ << "\n";
  }
  // Row labels, thinned so they stay 14 px apart.
  const size_t row_every = size_t(std::ceil(14.0 / ch));
  for (size_t r = 0; r < rows; r += row_every)
    body_ << "<text class=\"tick\" x=\"" << num(left - 6) << "\" y=\""
          << num(top + ch * (double(r) + 0.5) + 4) << "\" text-anchor=\"end\">"
          << escape(h.row_name) << " " << r << "</text>\n";
  // Column labels every 1, 2, 5, 10, ... columns, as many as fit.
  const double label_w = text_width(std::to_string(cols - 1)) + 6;
  size_t col_every = 1;
  for (size_t k = 1; cw * double(col_every) < label_w; ++k)
    col_every = size_t(std::lround((k % 3 == 0   ? 1
                                    : k % 3 == 1 ? 2
                                                 : 5) *
                                   std::pow(10.0, double(k / 3))));
  for (size_t c = 0; c < cols; c += col_every)
    body_ << "<text class=\"tick\" x=\"" << num(left + cw * (double(c) + 0.5)) << "\" y=\""
          << num(grid_bottom + 15) << "\" text-anchor=\"middle\">" << c << "</text>\n";
  if (!h.x_label.empty())
    body_ << "<text x=\"" << num((left + grid_right) / 2) << "\" y=\"" << num(grid_bottom + 33)
          << "\" text-anchor=\"middle\">" << escape(h.x_label) << "</text>\n";

  // Colour bar, 4x at the top.
  const int id = ++gradients_;
  defs_ << "<linearGradient id=\"diverging" << id << "\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (size_t i = 0; i < kDiverging.size(); ++i)
    defs_ << "<stop offset=\"" << double(i) / double(kDiverging.size() - 1) << "\" stop-color=\""
          << kDiverging[i] << "\"/>";
  defs_ << "</linearGradient>\n";
  const double bx = grid_right + 24, bar_top = top + 20;
  const double bar_h = std::max(grid_bottom, std::min(top + 120, bottom)) - bar_top;
  body_ << "<text class=\"tick\" x=\"" << num(bx - 4) << "\" y=\"" << num(top + 2)
        << "\">vs uniform</text>\n";
  body_ << "<rect x=\"" << num(bx) << "\" y=\"" << num(bar_top) << "\" width=\"12\" height=\""
        << num(bar_h) << "\" fill=\"url(#diverging" << id << ")\" stroke=\"#ccc\"/>\n";
  for (double ratio : {4.0, 2.0, 1.0, 0.5, 0.25}) {
    const double y = bar_top + (1 - ratio_position(ratio)) * bar_h;
    body_ << "<path class=\"axis\" d=\"M" << num(bx + 12) << "," << num(y)
          << "h4\"/><text class=\"tick\" x=\"" << num(bx + 19) << "\" y=\"" << num(y + 4) << "\">"
          << format_number(ratio) << "\u00d7</text>\n";
  }
}

std::string Document::str() const {
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width_) << "\" height=\""
    << num(height_) << "\" viewBox=\"0 0 " << num(width_) << " " << num(height_)
    << "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
       "<style>\n"
       "text { fill: #333; }\n"
       ".title { font-size: 17px; font-weight: bold; fill: #222; }\n"
       ".subtitle { fill: #666; }\n"
       ".panel-title { font-size: 13px; font-weight: bold; }\n"
       ".tick { fill: #666; }\n"
       ".cell { font-size: 10px; }\n"
       ".grid path { stroke: #e8e8e8; stroke-width: 1; fill: none; }\n"
       ".axis { stroke: #999; stroke-width: 1; fill: none; }\n"
       ".series { fill: none; stroke-linejoin: round; stroke-linecap: round; }\n"
       "</style>\n";
  const std::string defs = defs_.str();
  if (!defs.empty()) o << "<defs>\n" << defs << "</defs>\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n" << body_.str() << "</svg>\n";
  return o.str();
}

}  // namespace whale::svg
