// Checks an SVG file with /usr/bin/python3's xml.etree (an XML parser that is not ours): the
// document must parse, its root must be <svg> with width and height, and the answer lists its
// series (<polyline data-series=...> with their point counts) and its text.
#pragma once

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace warren::perf::test {

struct svg_facts {
  bool parsed = false;
  std::string error;  // the parser's message when !parsed
  std::string root, width, height;
  std::map<std::string, int> series_points;  // data-series -> number of points
  std::vector<std::string> texts;
};

inline svg_facts check_svg(const std::string& path) {
  static const char* script = R"PY(
import sys, xml.etree.ElementTree as ET
ns = '{http://www.w3.org/2000/svg}'
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as e:
    print('ERROR\t' + str(e).replace('\n', ' '))
    sys.exit(0)
print('ROOT\t' + root.tag.replace(ns, '') + '\t' + root.get('width', '') + '\t' + root.get('height', ''))
for p in root.iter(ns + 'polyline'):
    pts = (p.get('points') or '').split()
    print('SERIES\t' + p.get('data-series', '') + '\t' + str(len(pts)))
for t in root.iter(ns + 'text'):
    print('TEXT\t' + (t.text or ''))
)PY";
  svg_facts f;
  const std::string cmd = "/usr/bin/python3 -c \"$PERF_SVG_SCRIPT\" '" + path + "'";
  ::setenv("PERF_SVG_SCRIPT", script, 1);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    f.error = "cannot run python3";
    return f;
  }
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  std::size_t start = 0;
  while (start < out.size()) {
    std::size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    std::vector<std::string> cols;
    for (std::size_t a = start;;) {
      const std::size_t tab = out.find('\t', a);
      if (tab == std::string::npos || tab > end) {
        cols.push_back(out.substr(a, end - a));
        break;
      }
      cols.push_back(out.substr(a, tab - a));
      a = tab + 1;
    }
    if (cols[0] == "ERROR" && cols.size() > 1) f.error = cols[1];
    if (cols[0] == "ROOT" && cols.size() == 4) {
      f.parsed = true;
      f.root = cols[1];
      f.width = cols[2];
      f.height = cols[3];
    }
    if (cols[0] == "SERIES" && cols.size() == 3) f.series_points[cols[1]] = std::stoi(cols[2]);
    if (cols[0] == "TEXT" && cols.size() == 2) f.texts.push_back(cols[1]);
    start = end + 1;
  }
  return f;
}

}  // namespace warren::perf::test
