// Small SVG charts written as text (no plotting library): line charts with 1-2-5 ticks on
// linear or log axes, and a heatmap of shares relative to uniform. Used by whale plot.
#pragma once
#include <sstream>
#include <string>
#include <vector>

namespace whale::svg {

// Okabe & Ito's palette, told apart under the common colour-vision deficiencies. Yellow is
// last: it is hard to see on white.
inline constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                           "#E69F00", "#56B4E9", "#000000", "#F0E442"};
inline constexpr int kPaletteSize = 8;

// Viridis at t in [0, 1]: ordered colours for more series than the palette holds.
std::string viridis(double t);

// About three significant digits, in the form that fits the size: 0.25, 4.38, 1.2k, 3.4M,
// 3.4e-4.
std::string format_number(double value);

// An axis: its domain starts and ends on a tick, so the ticks bracket the data.
struct Scale {
  double lo = 0, hi = 1;
  bool log = false;
  double step = 0;  // distance between linear ticks; 0 on a log axis
  std::vector<double> ticks;
  double fraction(double value) const;  // 0 at lo, 1 at hi
};

// Linear: ticks at multiples of 1, 2 or 5 times a power of ten. Log (lo > 0): ticks at
// powers of ten, or at 1-2-5 or 1..9 times them when a range spans few decades. At most
// max_ticks ticks (at least 2).
Scale nice_scale(double lo, double hi, bool log, int max_ticks);

// Labels for a scale's ticks, with the precision its step needs ("4.0 4.5 5.0", "500 1k
// 1.5k", "2e-4 4e-4").
std::vector<std::string> tick_labels(const Scale& scale);

// One curve. Points with a non-finite y (or y <= 0 on a log axis) break the curve.
struct Line {
  std::string name;  // legend label; empty: not in the legend
  std::vector<double> x, y;
  std::string colour = kPalette[0];
  double width = 1.5, opacity = 1.0;
  bool markers = false, dashed = false;
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<Line> lines;
  bool log_y = false;
  bool legend = true;
};

// Rows of shares (each row sums to about 1); a cell's colour is its share times the row
// length, i.e. relative to a uniform split, on a diverging scale from 1/4x to 4x.
struct Heatmap {
  std::string title, x_label, row_name;  // row_name: "layer" gives row labels "layer 0"...
  std::vector<std::vector<double>> shares;
};

struct Box {
  double x = 0, y = 0, width = 0, height = 0;
};

// An SVG document of fixed size to which charts are added in boxes.
class Document {
 public:
  Document(double width, double height);
  void title(const std::string& text, const std::string& subtitle);
  void chart(const Chart& chart, const Box& box);
  void heatmap(const Heatmap& map, const Box& box);
  std::string str() const;

 private:
  void draw_chart(const Chart& chart, const Box& box);
  void draw_heatmap(const Heatmap& map, const Box& box);
  double width_, height_;
  int gradients_ = 0;
  std::ostringstream defs_, body_;
};

// Escapes &, <, >, " and ' for XML text and attribute values.
std::string escape(const std::string& text);

}  // namespace whale::svg
