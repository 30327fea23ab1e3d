#pragma once
// Command-line flags the way the original TensorFlow scripts took them (absl/tf.flags),
// so existing job scripts port by changing the command:
//   --name=value   --name value   a bare boolean --name (true)   --noname (false)
//   booleans also as --name=true|false|1|0|yes|no, or --name true|false
// An unknown flag is an error that suggests the nearest known one; a missing value or a
// value that does not parse is an error naming the flag. A flag given twice takes the
// last value (absl's rule: job scripts append overrides).

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ctdl/core/error.hpp"

namespace ctdl::train {

class FlagError : public Error {
 public:
  using Error::Error;
};

class Flags {
 public:
  using Target = std::variant<bool*, std::string*, std::int64_t*, double*>;

  explicit Flags(std::string program) : program_(std::move(program)) {}

  Flags& add(const std::string& name, Target target, std::string help) {
    if (flags_.count(name)) throw Error("flag --" + name + " defined twice");
    flags_[name] = {target, std::move(help), value_text(target, /*exact=*/false), false};
    order_.push_back(name);
    return *this;
  }
  /// `alias` means the same flag as `name` (e.g. --horovod for --distributed).
  Flags& alias(const std::string& alias, const std::string& name) {
    aliases_[alias] = name;
    return *this;
  }

  /// Parses argv[1..]. Throws FlagError; returns false when --help was asked for (the
  /// help text is then in help()).
  bool parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string_view arg = argv[i];
      if (arg == "--help" || arg == "-h" || arg == "--helpfull") return false;
      if (!arg.starts_with("--") && !(arg.starts_with("-") && arg.size() > 1 && !std::isdigit(arg[1])))
        throw FlagError("unexpected argument '" + std::string(arg) + "': every option is a --flag");
      arg.remove_prefix(arg.starts_with("--") ? 2 : 1);
      std::string name(arg.substr(0, arg.find('=')));
      std::optional<std::string> value;
      if (arg.find('=') != std::string_view::npos) value = std::string(arg.substr(arg.find('=') + 1));
      std::string key = resolve(name);
      bool negated = false;
      if (!flags_.count(key) && name.starts_with("no") && flags_.count(resolve(name.substr(2))) &&
          std::holds_alternative<bool*>(flags_[resolve(name.substr(2))].target) && !value) {
        key = resolve(name.substr(2));
        negated = true;
      }
      if (!flags_.count(key)) throw FlagError("unknown flag --" + name + suggestion(name));
      auto& f = flags_[key];
      f.given = true;  // given again: the last value wins, as with absl flags
      if (auto* b = std::get_if<bool*>(&f.target)) {
        if (negated) {
          **b = false;
        } else if (value) {
          **b = parse_bool(key, *value);
        } else if (i + 1 < argc && is_bool_literal(argv[i + 1])) {
          **b = parse_bool(key, argv[++i]);
        } else {
          **b = true;
        }
        continue;
      }
      if (!value) {
        if (i + 1 >= argc) throw FlagError("flag --" + key + " needs a value");
        value = argv[++i];
      }
      set(key, f.target, *value);
    }
    return true;
  }

  bool given(const std::string& name) const {
    const auto it = flags_.find(name);
    return it != flags_.end() && it->second.given;
  }

  /// Every flag's value now (given or default), by name, as text that tells values apart
  /// (numbers with all their digits): what ranks compare to check they run alike.
  std::map<std::string, std::string> values() const {
    std::map<std::string, std::string> out;
    for (const auto& [name, f] : flags_) out[name] = value_text(f.target, /*exact=*/true);
    return out;
  }

  std::string help() const {
    std::string s = "usage: " + program_ + " [--flag=value ...]\n\n";
    for (const auto& name : order_) {
      const auto& f = flags_.at(name);
      std::string line = "  --" + name;
      if (!f.default_text.empty()) line += " (default " + f.default_text + ")";
      s += line + "\n      " + f.help + "\n";
    }
    for (const auto& [a, n] : aliases_) s += "  --" + a + ": the same as --" + n + "\n";
    return s;
  }

 private:
  struct Flag {
    Target target;
    std::string help, default_text;
    bool given = false;
  };

  std::string resolve(const std::string& name) const {
    const auto it = aliases_.find(name);
    return it == aliases_.end() ? name : it->second;
  }

  static bool is_bool_literal(std::string_view v) {
    std::string s(v);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s == "true" || s == "false" || s == "1" || s == "0" || s == "yes" || s == "no";
  }
  static bool parse_bool(const std::string& key, std::string_view v) {
    std::string s(v);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    if (s == "true" || s == "1" || s == "yes") return true;
    if (s == "false" || s == "0" || s == "no") return false;
    throw FlagError("flag --" + key + " takes true or false, not '" + std::string(v) + "'");
  }

  static void set(const std::string& key, Target& target, const std::string& v) {
    try {
      std::size_t used = 0;
      if (auto* s = std::get_if<std::string*>(&target)) {
        **s = v;
        return;
      }
      if (auto* n = std::get_if<std::int64_t*>(&target)) {
        **n = std::stoll(v, &used);
      } else if (auto* d = std::get_if<double*>(&target)) {
        **d = std::stod(v, &used);
      }
      if (used != v.size()) throw std::invalid_argument(v);
    } catch (const std::logic_error&) {
      throw FlagError("flag --" + key + ": '" + v + "' is not a " +
                      (std::holds_alternative<std::int64_t*>(target) ? "whole number" : "number"));
    }
  }

  /// A flag's value as text: for the help (`exact` false: strings quoted, numbers %g) or
  /// exactly (strings as they are, numbers with all 17 digits).
  static std::string value_text(const Target& t, bool exact) {
    if (auto* b = std::get_if<bool*>(&t)) return **b ? "true" : "false";
    if (auto* s = std::get_if<std::string*>(&t)) return exact || (*s)->empty() ? **s : "\"" + **s + "\"";
    if (auto* n = std::get_if<std::int64_t*>(&t)) return std::to_string(**n);
    char buf[40];
    std::snprintf(buf, sizeof buf, exact ? "%.17g" : "%g", **std::get_if<double*>(&t));
    return buf;
  }

  static std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      std::size_t diag = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    return row[b.size()];
  }

  std::string suggestion(const std::string& name) const {
    std::string best;
    std::size_t best_d = 4;  // suggest only close names
    auto consider = [&](const std::string& candidate) {
      const std::size_t d = edit_distance(name, candidate);
      if (d < best_d) {
        best_d = d;
        best = candidate;
      }
    };
    for (const auto& n : order_) consider(n);
    for (const auto& [a, n] : aliases_) consider(a);
    return best.empty() ? " (--help lists the flags)" : "; did you mean --" + best + "?";
  }

  std::string program_;
  std::map<std::string, Flag> flags_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> aliases_;
};

}  // namespace ctdl::train
