// Plain values (nothing, boolean, number, string, list, record) that a backend's hooks take and return
// (BackendProvider::hooks in backend.h): the addon converts them to and from JS without knowing the backend.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace mla {

struct Value {
  using List = std::vector<Value>;
  using Record = std::vector<std::pair<std::string, Value>>;  // in insertion order
  std::variant<std::monostate, bool, double, std::string, List, Record> v;

  Value() = default;
  Value(bool b) : v(b) {}
  Value(int n) : v(static_cast<double>(n)) {}
  Value(unsigned n) : v(static_cast<double>(n)) {}
  Value(long n) : v(static_cast<double>(n)) {}
  Value(unsigned long n) : v(static_cast<double>(n)) {}
  Value(long long n) : v(static_cast<double>(n)) {}
  Value(unsigned long long n) : v(static_cast<double>(n)) {}
  Value(double d) : v(d) {}
  Value(const char* s) : v(std::string(s)) {}
  Value(std::string s) : v(std::move(s)) {}
  Value(List l) : v(std::move(l)) {}
  Value(Record r) : v(std::move(r)) {}

  bool isBool() const { return std::holds_alternative<bool>(v); }
  bool isNumber() const { return std::holds_alternative<double>(v); }
  bool isString() const { return std::holds_alternative<std::string>(v); }
  bool boolean() const { return std::get<bool>(v); }
  double number() const { return std::get<double>(v); }
  const std::string& string() const { return std::get<std::string>(v); }
  // A record's field, or null when this is no record or has no such field.
  const Value* get(const std::string& key) const {
    if (const auto* r = std::get_if<Record>(&v))
      for (const auto& [k, x] : *r)
        if (k == key) return &x;
    return nullptr;
  }
};

}  // namespace mla
