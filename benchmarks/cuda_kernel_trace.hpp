#pragma once
// A kernel trace for the benchmarks (bert_bench --device=cuda --trace=N): CUPTI's
// activity API records every kernel, copy and memset the GPU runs while a KernelTrace is
// alive, each with its start and end on the GPU's clock, and summarise() says
//   - how long the traced work spanned on the GPU (first start to last end),
//   - how much of that span some kernel was running ("busy"); the rest is the GPU waiting
//     for the host (launch overhead, synchronisation) or for copies,
//   - the idle gaps of 5 us or more: how many, and their total,
//   - which kernels took the time: per kernel name, calls, total and mean time, and its
//     share of all the kernels', copies' and memsets' summed durations.
// It is the profile issue 13 asks for before optimising, taken in the same run as the
// timing and without ncu's serialisation (kernels run as they would). Benchmark code
// only: the library never links CUPTI.
//
//   {
//     bench::KernelTrace trace;    // starts recording
//     step();
//     std::fputs(bench::summarise(trace.finish(), 25).c_str(), stderr);
//   }

#include <cuda_runtime.h>
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "ctdl/core/error.hpp"

namespace ctdl::bench {

struct TraceEvent {
  enum Kind { kernel, memcpy, memset } kind = kernel;
  std::string name;  // kernels: demangled, without the parameter list
  std::uint64_t start = 0, end = 0;  // ns, the GPU's timestamps
};

/// Records the GPU's activity from construction until finish() (one at a time).
class KernelTrace {
 public:
  KernelTrace() {
    {
      std::lock_guard<std::mutex> lock(mutex());
      events().clear();
    }
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (before the trace)");
    check(cuptiActivityRegisterCallbacks(&requested, &completed), "cuptiActivityRegisterCallbacks");
    for (const CUpti_ActivityKind kind :
         {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET}) {
      check(cuptiActivityEnable(kind), "cuptiActivityEnable");
      enabled_.push_back(kind);
    }
  }
  KernelTrace(const KernelTrace&) = delete;
  KernelTrace& operator=(const KernelTrace&) = delete;
  ~KernelTrace() { disable(); }

  /// Waits for the device, collects every record, stops recording.
  std::vector<TraceEvent> finish() {
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (after the trace)");
    check(cuptiActivityFlushAll(1), "cuptiActivityFlushAll");
    disable();
    std::lock_guard<std::mutex> lock(mutex());
    std::vector<TraceEvent> out = std::move(events());
    std::sort(out.begin(), out.end(), [](const TraceEvent& a, const TraceEvent& b) { return a.start < b.start; });
    return out;
  }

 private:
  static void check(cudaError_t status, const char* call) {
    if (status != cudaSuccess) throw Error(std::string("kernel trace: ") + call + ": " + cudaGetErrorString(status));
  }
  static void check(CUptiResult status, const char* call) {
    if (status != CUPTI_SUCCESS) {
      const char* text = nullptr;
      cuptiGetResultString(status, &text);
      throw Error(std::string("kernel trace: ") + call + " failed: " + (text ? text : "unknown CUPTI error"));
    }
  }
  void disable() {
    for (const CUpti_ActivityKind kind : enabled_) cuptiActivityDisable(kind);
    enabled_.clear();
  }

  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::vector<TraceEvent>& events() {
    static std::vector<TraceEvent> e;
    return e;
  }

  static constexpr std::size_t kBufferBytes = std::size_t{8} << 20;
  static void CUPTIAPI requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
    *size = *buffer ? kBufferBytes : 0;
    *max_records = 0;  // as many as fit
  }
  static void CUPTIAPI completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    std::vector<TraceEvent> got;
    CUpti_Activity* record = nullptr;
    while (buffer && cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
      if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || record->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        got.push_back({TraceEvent::kernel, short_name(k->name), k->start, k->end});
      } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
        const char* way = m->copyKind == CUPTI_ACTIVITY_MEMCPY_KIND_HTOD   ? "host to device"
                          : m->copyKind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOH ? "device to host"
                          : m->copyKind == CUPTI_ACTIVITY_MEMCPY_KIND_DTOD ? "device to device"
                                                                            : "other";
        got.push_back({TraceEvent::memcpy, std::string("[copy ") + way + "]", m->start, m->end});
      } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
        got.push_back({TraceEvent::memset, "[memset]", m->start, m->end});
      }
    }
    std::free(buffer);
    std::lock_guard<std::mutex> lock(mutex());
    auto& all = events();
    all.insert(all.end(), got.begin(), got.end());
  }

  /// "void ns::kernel<A, B>(args...)" -> "ns::kernel<A, B>", at most 110 characters.
  static std::string short_name(const char* mangled) {
    if (!mangled) return "(unnamed kernel)";
    int status = 0;
    char* plain = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string name = status == 0 && plain ? plain : mangled;
    std::free(plain);
    if (name.rfind("void ", 0) == 0) name.erase(0, 5);
    // Drop the parameter list: the last top-level '(' (template arguments may hold parentheses).
    int depth = 0;
    for (std::size_t i = 0; i < name.size(); ++i) {
      if (name[i] == '<') ++depth;
      else if (name[i] == '>') --depth;
      else if (name[i] == '(' && depth == 0 && i > 0) {
        name.resize(i);
        break;
      }
    }
    if (name.size() > 110) name = name.substr(0, 107) + "...";
    return name;
  }

  std::vector<CUpti_ActivityKind> enabled_;
};

/// The report of a trace (see the header); `top` kernel names listed.
inline std::string summarise(const std::vector<TraceEvent>& events, int top) {
  if (events.empty()) return "kernel trace: nothing ran on the GPU\n";
  std::uint64_t first = events.front().start, last = 0, busy = 0, copies = 0, covered_to = first;
  std::uint64_t idle = 0, gaps = 0, kernels = 0;
  constexpr std::uint64_t kGapNs = 5000;
  struct Total {
    std::uint64_t calls = 0, ns = 0;
  };
  std::map<std::string, Total> by_name;
  for (const TraceEvent& e : events) {
    last = std::max(last, e.end);
    const std::uint64_t ns = e.end > e.start ? e.end - e.start : 0;
    auto& t = by_name[e.name];
    ++t.calls, t.ns += ns;
    if (e.kind != TraceEvent::kernel) {
      copies += ns;
      continue;
    }
    ++kernels;
    // Busy: the union of the kernels' intervals (events sorted by start).
    if (e.start > covered_to) {
      const std::uint64_t gap = e.start - covered_to;
      if (gap >= kGapNs) ++gaps, idle += gap;
      busy += ns;
      covered_to = e.end;
    } else if (e.end > covered_to) {
      busy += e.end - covered_to;
      covered_to = e.end;
    }
  }
  const double span_ms = static_cast<double>(last - first) / 1e6;
  std::vector<std::pair<std::string, Total>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  std::string out;
  char line[400];
  std::snprintf(line, sizeof line,
                "kernel trace of one step: %.3f ms on the GPU, kernels busy %.3f ms (%.1f%%), %llu kernels, "
                "%zu names; idle gaps of 5 us or more: %llu, %.3f ms; copies and memsets %.3f ms\n",
                span_ms, static_cast<double>(busy) / 1e6, span_ms > 0 ? 100.0 * static_cast<double>(busy) / 1e6 / span_ms : 0.0,
                static_cast<unsigned long long>(kernels), rows.size(), static_cast<unsigned long long>(gaps),
                static_cast<double>(idle) / 1e6, static_cast<double>(copies) / 1e6);
  out += line;
  std::snprintf(line, sizeof line, "  %10s %7s %10s %6s  %s\n", "total ms", "calls", "mean us", "share", "kernel");
  out += line;
  double all_ns = 0;  // the share is of the summed durations (concurrent work counts twice)
  for (const auto& row : rows) all_ns += static_cast<double>(row.second.ns);
  for (int i = 0; i < top && i < static_cast<int>(rows.size()); ++i) {
    const auto& [name, t] = rows[static_cast<std::size_t>(i)];
    std::snprintf(line, sizeof line, "  %10.3f %7llu %10.2f %5.1f%%  %s\n", static_cast<double>(t.ns) / 1e6,
                  static_cast<unsigned long long>(t.calls), static_cast<double>(t.ns) / 1e3 / static_cast<double>(t.calls),
                  all_ns > 0 ? 100.0 * static_cast<double>(t.ns) / all_ns : 0.0, name.c_str());
    out += line;
  }
  return out;
}

}  // namespace ctdl::bench
