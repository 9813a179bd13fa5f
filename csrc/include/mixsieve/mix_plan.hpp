// The mixture's whole schedule state in one object: the weights policy in force (static, a
// weight curve of the position, online changes recorded at positions), which sources have been
// dropped, how many items each source has (caps, for "stop" and "drop"), whether the stream has
// ended, and the kernel (MixSchedule) that turns weights into (source, item) choices.
//
// Events happen at positions. Before position p is generated: the curve's value at p if the
// curve changes there, then the online changes recorded at p (the last one made wins), then one
// weight change of the kernel. A source found at its cap when the kernel picks it ends the
// stream ("stop") or is dropped and the others renormalised ("drop"), at that position. Because
// events are applied when a position is about to be generated, the choices never depend on how
// the positions were split into fill calls.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <functional>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "mixsieve/mixture.hpp"

namespace mixsieve {

// -1 if w[0..k) are valid relative weights (finite, >= 0, not all zero), else the index of the
// first bad one, or k if they are all zero.
inline int check_weights(const double* w, int k) {
  bool any = false;
  for (int d = 0; d < k; ++d) {
    if (!(w[d] >= 0.0) || w[d] == std::numeric_limits<double>::infinity()) return d;
    any = any || w[d] > 0.0;
  }
  return any ? -1 : k;
}

// Weights as a function of the position (a curriculum): points (p_i, v_i) with p_0 = 0 and
// increasing p_i; "step" holds v_i on [p_i, p_{i+1}); "linear" moves from v_i / sum(v_i) to
// v_{i+1} / sum(v_{i+1}) in steps of `every` positions, evaluated at the last multiple of
// `every` past p_i.
struct WeightCurve {
  std::vector<std::int64_t> points;
  std::vector<std::vector<double>> vectors;
  bool linear = false;
  std::int64_t every = 1;

  std::size_t segment(std::int64_t p) const {  // the last i with points[i] <= p
    return static_cast<std::size_t>(std::upper_bound(points.begin(), points.end(), p) - points.begin()) - 1;
  }

  std::vector<double> at(std::int64_t p) const {
    const std::size_t i = segment(p);
    if (!linear || i + 1 == points.size()) return vectors[i];
    const std::int64_t p0 = points[i], p1 = points[i + 1];
    const std::int64_t q = p0 + (p - p0) / every * every;
    const double t = static_cast<double>(q - p0) / static_cast<double>(p1 - p0);
    const std::vector<double> a = normalised(vectors[i]), b = normalised(vectors[i + 1]);
    std::vector<double> out(a.size());
    for (std::size_t d = 0; d < a.size(); ++d) out[d] = (1.0 - t) * a[d] + t * b[d];
    return out;
  }

  // The first position after p where the weights change, or -1.
  std::int64_t next_change(std::int64_t p) const {
    const auto it = std::upper_bound(points.begin(), points.end(), p);
    std::int64_t nxt = it == points.end() ? -1 : *it;
    const auto i = static_cast<std::size_t>(it - points.begin());
    if (linear && i > 0 && i < points.size()) {
      const std::int64_t p0 = points[i - 1];
      const std::int64_t step = p0 + ((p - p0) / every + 1) * every;
      nxt = nxt < 0 ? step : std::min(nxt, step);
    }
    return nxt;
  }

  // v / sum(v), with an exact power-of-two rescale first when the sum would overflow or lose
  // precision in the subnormal range.
  static std::vector<double> normalised(const std::vector<double>& v) {
    double total = 0.0, most = 0.0;
    for (double x : v) {
      total += x;
      most = std::max(most, x);
    }
    std::vector<double> out(v);
    if (!(total >= std::numeric_limits<double>::min() && total < std::numeric_limits<double>::infinity())) {
      int e = 0;
      std::frexp(most, &e);
      total = 0.0;
      for (double& x : out) {
        x = std::ldexp(x, -e);
        total += x;
      }
    }
    for (double& x : out) x /= total;
    return out;
  }
};

// What a plan does while it fills, for a dry run (MixPlan::simulate): weight changes (with the
// effective weights after them), sources leaving, the end of the stream.
struct PlanLog {
  enum Kind { kWeights = 0, kCurveStep = 1, kDropped = 2, kCapped = 3, kEnded = 4, kRenormalised = 5 };
  std::int64_t position;
  int kind;
  int source;                   // the source that left or ended the stream, else -1
  std::vector<double> weights;  // the normalised weights in force from `position` on
};

// A dry run's result: per window of positions, samples and tokens per source and the sum over
// its positions of each source's weight in force; the events; where it stopped.
struct SimulateResult {
  std::vector<std::int64_t> counts, tokens;  // [window][source]
  std::vector<double> weight_sums;           // [window][source]
  std::vector<std::int64_t> window_sizes;    // positions in each window (the last may be short)
  std::vector<PlanLog> events;               // weights (user/curve points), drops, caps, end
  std::vector<std::int64_t> epoch_events;    // (position, source, epoch) triples: a source finished a pass
  std::int64_t generated = 0;
};

class MixPlan {
 public:
  enum Exhausted { kCycle = 0, kStop = 1, kDrop = 2 };

  // fixed_caps[d]: the items source d has when that is known up front (map-style sources), -1
  // otherwise; used only when on_exhausted is not kCycle.
  MixPlan(int k, bool exact, std::uint64_t seed, int on_exhausted, std::vector<std::int64_t> fixed_caps)
      : k_(k),
        mode_(on_exhausted),
        seed_(seed),
        sched_(k, exact, seed),
        policy_(static_cast<std::size_t>(k), 0.0),
        dropped_(static_cast<std::size_t>(k), 0),
        fixed_caps_(std::move(fixed_caps)),
        lengths_(static_cast<std::size_t>(k), -1),
        caps_(static_cast<std::size_t>(k), -1),
        epoch_caps_(static_cast<std::size_t>(k), -1),
        left_(static_cast<std::size_t>(k), -1) {
    if (fixed_caps_.size() != static_cast<std::size_t>(k)) throw std::invalid_argument("one cap per source");
    if (on_exhausted < kCycle || on_exhausted > kDrop) throw std::invalid_argument("bad on_exhausted");
  }

  void set_curve(WeightCurve curve) {
    curve_ = std::move(curve);
    has_curve_ = true;
  }
  bool has_curve() const { return has_curve_; }
  // Whether start() or restore() has run (token lengths must come before).
  bool started() const { return events_at_ >= 0 || position() > 0 || ended_; }

  // Token mode (see MixSchedule::set_token_lengths): call for every source before start().
  void set_token_lengths(int d, LengthTable table, std::uint64_t source_key, bool shuffle) {
    sched_.set_token_lengths(d, std::move(table), seed_, source_key, shuffle);
  }

  // max_epochs: source d leaves the mixture (dropped, the others renormalised) once it has
  // given caps[d] items (-1: no such cap), whatever on_exhausted says for the others.
  void set_epoch_caps(std::vector<std::int64_t> caps) {
    if (caps.size() != static_cast<std::size_t>(k_)) throw std::invalid_argument("one epoch cap per source");
    epoch_caps_ = std::move(caps);
    any_epoch_cap_ = std::any_of(epoch_caps_.begin(), epoch_caps_.end(), [](std::int64_t c) { return c >= 0; });
  }
  const std::vector<std::int64_t>& epoch_caps() const { return epoch_caps_; }
  const WeightCurve& curve() const { return curve_; }

  // The policy at position 0 (the curve's value there if there is a curve). -1 or a bad index.
  int start(const double* policy) {
    std::vector<double> p = has_curve_ ? curve_.at(0) : std::vector<double>(policy, policy + k_);
    const int bad = check_weights(p.data(), k_);
    if (bad >= 0) return bad;
    policy_ = std::move(p);
    events_at_ = 0;
    set_effective();
    return -1;
  }

  // Records new policy weights from position pos on. Returns -1, a bad weight index (or k for
  // all zero), or -2 if pos has already been generated.
  int add_change(std::int64_t pos, const double* w) {
    const int bad = check_weights(w, k_);
    if (bad >= 0) return bad;
    if (pos < position()) return -2;
    std::vector<double> v(w, w + k_);
    if (pos == events_at_) {  // this position's events were applied (only at a start): apply now
      policy_ = std::move(v);
      set_effective();
      return -1;
    }
    auto it = std::upper_bound(changes_.begin(), changes_.end(), pos,
                               [](std::int64_t p, const std::pair<std::int64_t, std::vector<double>>& c) { return p < c.first; });
    if (it != changes_.begin() && std::prev(it)->first == pos) {
      std::prev(it)->second = std::move(v);  // the last change made at a position wins
    } else {
      changes_.emplace(it, pos, std::move(v));
    }
    return -1;
  }

  // The number of items of source d, once known (an iterable that ended).
  void set_length(int d, std::int64_t n) { lengths_.at(static_cast<std::size_t>(d)) = n; }

  // Generates up to n positions, stopping before position `end` (if end >= 0) or when the
  // stream ends. Returns the number generated.
  std::int64_t fill(std::int64_t n, std::int64_t end, std::int32_t* src, std::int64_t* item) {
    std::int64_t i = 0;
    while (i < n && !ended_) {
      const std::int64_t pos = position();
      if (end >= 0 && pos >= end) break;
      if (events_at_ != pos) {
        events_at_ = pos;
        apply_events(pos);
        if (ended_) break;
      }
      std::int64_t stop = n - i;
      if (end >= 0) stop = std::min(stop, end - pos);
      const std::int64_t nxt = next_event(pos);
      if (nxt >= 0) stop = std::min(stop, nxt - pos);
      const std::int64_t* caps = nullptr;
      if (mode_ != kCycle || any_epoch_cap_) {
        for (int d = 0; d < k_; ++d) {
          if (epoch_caps_[d] >= 0) caps_[d] = epoch_caps_[d];
          else if (mode_ != kCycle) caps_[d] = fixed_caps_[d] >= 0 ? fixed_caps_[d] : lengths_[d];
          else caps_[d] = -1;
        }
        caps = caps_.data();
      }
      const std::int64_t got = sched_.fill(stop, src + i, item + i, caps);
      i += got;
      if (got < stop) exhausted();
    }
    return i;
  }

  // The weights in force at the next position generated (its events applied): for reports.
  std::vector<double> next_weights() const {
    MixPlan p(*this);
    if (!p.ended_ && p.events_at_ != p.position()) {
      p.events_at_ = p.position();
      p.apply_events(p.position());
    }
    return p.sched_.weights();
  }

  // ---- state ----
  int num_sources() const { return k_; }
  int on_exhausted() const { return mode_; }
  std::int64_t position() const { return sched_.position(); }
  bool ended() const { return ended_; }
  const MixSchedule& kernel() const { return sched_; }
  const std::vector<double>& policy() const { return policy_; }
  const std::vector<char>& dropped() const { return dropped_; }
  const std::vector<std::int64_t>& lengths() const { return lengths_; }
  // The position at which each source left the mixture (-1: still in it).
  const std::vector<std::int64_t>& left() const { return left_; }
  const std::vector<std::pair<std::int64_t, std::vector<double>>>& changes() const { return changes_; }

  // Restores a state written from the accessors (the caller has checked shapes and ranges).
  void restore(std::int64_t position, std::int64_t seg_start, const double* weights, const std::int64_t* counts,
               const std::int64_t* seg_counts, const double* carry, const double* policy,
               const std::vector<char>& dropped, const std::int64_t* lengths, bool ended,
               std::vector<std::pair<std::int64_t, std::vector<double>>> changes, const std::int64_t* tokens = nullptr,
               const std::int64_t* seg_tokens = nullptr, const std::int64_t* left = nullptr) {
    if (check_weights(policy, k_) >= 0) throw std::invalid_argument("the state's policy weights are invalid");
    for (const auto& c : changes) {
      if (c.first < position) throw std::invalid_argument("a recorded change lies before the state's position");
      if (c.second.size() != static_cast<std::size_t>(k_) || check_weights(c.second.data(), k_) >= 0) {
        throw std::invalid_argument("a recorded change has invalid weights");
      }
    }
    std::stable_sort(changes.begin(), changes.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    ended_ = ended;
    if (!ended) sched_.restore(position, seg_start, weights, counts, seg_counts, carry, tokens, seg_tokens);
    else sched_.restore_counts(position, counts, tokens);
    policy_.assign(policy, policy + k_);
    dropped_ = dropped;
    for (int d = 0; d < k_; ++d) left_[d] = left != nullptr ? left[d] : (dropped_[d] ? position : -1);
    lengths_.assign(lengths, lengths + k_);
    changes_ = std::move(changes);
    // A saved state's events at its position are still to come, except at 0, where start()
    // applied them: changes recorded at 0 take effect now.
    events_at_ = -1;
    if (position == 0 && !ended) {
      events_at_ = 0;
      apply_events(0);
    }
  }

 private:
  void apply_events(std::int64_t p) {
    bool changed = false;
    int kind = PlanLog::kCurveStep;
    if (has_curve_ && p > 0 && curve_.next_change(p - 1) == p) {
      policy_ = curve_.at(p);
      changed = true;
      if (std::binary_search(curve_.points.begin(), curve_.points.end(), p)) kind = PlanLog::kWeights;
    }
    while (!changes_.empty() && changes_.front().first <= p) {
      policy_ = std::move(changes_.front().second);
      changes_.erase(changes_.begin());
      changed = true;
      kind = PlanLog::kWeights;
    }
    if (changed) set_effective(kind);
  }

  std::int64_t next_event(std::int64_t pos) const {
    std::int64_t nxt = has_curve_ ? curve_.next_change(pos) : -1;
    if (!changes_.empty() && (nxt < 0 || changes_.front().first < nxt)) nxt = changes_.front().first;
    return nxt;
  }

  void set_effective(int kind = PlanLog::kWeights) {
    std::vector<double> w(policy_);
    for (int d = 0; d < k_; ++d) {
      if (dropped_[d]) w[d] = 0.0;
    }
    if (sched_.set_weights(w.data()) >= 0) ended_ = true;  // nothing left with a weight
    if (log_ != nullptr) {
      if (ended_) log_->push_back({position(), PlanLog::kEnded, -1, {}});
      else log_->push_back({position(), kind, -1, sched_.weights()});
    }
  }

  // The kernel stopped before a position whose source is at its cap. A source at its epoch cap
  // (max_epochs) leaves; one at the end of its data ends the stream ("stop") or leaves ("drop"),
  // with every other source then at such a cap.
  void exhausted() {
    const int hit = sched_.blocked();
    const auto& counts = sched_.counts();
    const bool by_epochs = hit >= 0 && epoch_caps_[hit] >= 0;
    if (!by_epochs && mode_ == kStop) {
      ended_ = true;
      if (log_ != nullptr) log_->push_back({position(), PlanLog::kEnded, hit, {}});
      return;
    }
    for (int d = 0; d < k_; ++d) {
      const bool epoch_capped = epoch_caps_[d] >= 0;
      if (caps_[d] >= 0 && counts[d] >= caps_[d] && (epoch_capped || mode_ == kDrop || d == hit) && !dropped_[d]) {
        dropped_[d] = 1;
        left_[d] = position();
        if (log_ != nullptr) log_->push_back({position(), epoch_capped ? PlanLog::kCapped : PlanLog::kDropped, d, {}});
      }
    }
    set_effective(PlanLog::kRenormalised);
  }

  int k_;
  int mode_;
  std::uint64_t seed_;
  MixSchedule sched_;
  std::vector<double> policy_;
  std::vector<char> dropped_;
  std::vector<std::int64_t> fixed_caps_, lengths_, caps_, epoch_caps_, left_;
  bool any_epoch_cap_ = false;
  std::vector<std::pair<std::int64_t, std::vector<double>>> changes_;
  WeightCurve curve_;
  bool has_curve_ = false;
  bool ended_ = false;
  std::int64_t events_at_ = -1;
  // The log simulate() reads, set only while it runs; a copy of the plan (next_weights makes
  // one) never shares it.
  struct LogPtr {
    std::vector<PlanLog>* p = nullptr;
    LogPtr() = default;
    LogPtr(const LogPtr&) {}
    LogPtr& operator=(const LogPtr&) { return *this; }
    std::vector<PlanLog>* operator->() const { return p; }
    bool operator!=(std::nullptr_t) const { return p != nullptr; }
  };
  LogPtr log_;

 public:
  // A dry run of the next n positions (this plan advances): per window of `window` positions,
  // the samples and tokens of each source and the sum of its weight in force over the window's
  // positions; events as they happen; a source finishing its e-th pass over sizes[d] items
  // (sizes[d] < 1: unknown). The same choices as fill(), which it calls.
  // keep_going (if set) is asked between chunks of 65,536 positions; false stops the run (the
  // caller raises). At most kMaxPassEvents passes per source are listed (a small source that
  // cycles millions of times would otherwise fill memory with events).
  static constexpr std::int64_t kMaxPassEvents = 1000;

  SimulateResult simulate(std::int64_t n, std::int64_t window, const std::vector<std::int64_t>& sizes,
                          const std::function<bool()>& keep_going = {}) {
    SimulateResult r;
    const auto kk = static_cast<std::size_t>(k_);
    const std::int64_t start = position();
    const std::int64_t windows = n > 0 ? (n + window - 1) / window : 0;
    r.counts.assign(static_cast<std::size_t>(windows) * kk, 0);
    r.tokens.assign(r.counts.size(), 0);
    r.weight_sums.assign(r.counts.size(), 0.0);
    r.window_sizes.assign(static_cast<std::size_t>(windows), 0);
    std::vector<PlanLog> log;
    std::vector<double> cur = next_weights();  // the start position's events applied (on a copy)
    std::vector<std::int64_t> cnt(sched_.counts());
    constexpr std::int64_t kChunk = 1 << 16;
    std::vector<std::int32_t> src(static_cast<std::size_t>(std::min(n, kChunk)));
    std::vector<std::int64_t> item(src.size());
    std::int64_t pos = start;
    if (n > 0 && !ended_) r.events.push_back({start, PlanLog::kWeights, -1, cur});  // the weights the run starts with
    struct Guard {  // the log is unset however simulate() ends
      LogPtr& ptr;
      ~Guard() { ptr.p = nullptr; }
    } guard{log_};
    log_.p = &log;
    // adds positions [from, to) of window w with the weights in force
    auto add_weights = [&](std::int64_t from, std::int64_t to) {
      while (from < to) {
        const std::int64_t w = (from - start) / window;
        const std::int64_t upto = std::min(to, start + (w + 1) * window);
        double* sums = &r.weight_sums[static_cast<std::size_t>(w) * kk];
        for (std::size_t d = 0; d < kk; ++d) sums[d] += cur[d] * static_cast<double>(upto - from);
        from = upto;
      }
    };
    while (pos < start + n && !ended_) {
      if (keep_going && !keep_going()) break;
      const std::int64_t w = (pos - start) / window;
      const std::int64_t stop = std::min({start + n, start + (w + 1) * window, pos + kChunk});
      const std::vector<std::int64_t> tok0 = sched_.tokens_served();
      const std::int64_t requested = stop - pos;
      const std::int64_t got = fill(requested, -1, src.data(), item.data());
      std::int64_t at = pos;
      for (const PlanLog& e : log) {
        add_weights(at, std::max(at, e.position));
        at = std::max(at, e.position);
        if (e.kind != PlanLog::kEnded) {
          if (!e.weights.empty()) cur = e.weights;
        }
        const bool start_again = e.kind == PlanLog::kWeights && e.position == start;  // already the first event
        if (e.kind != PlanLog::kCurveStep && e.kind != PlanLog::kRenormalised && !start_again) r.events.push_back(e);
      }
      log.clear();
      add_weights(at, pos + got);
      std::int64_t* row = &r.counts[static_cast<std::size_t>(w) * kk];
      for (std::int64_t i = 0; i < got; ++i) {
        const auto d = static_cast<std::size_t>(src[static_cast<std::size_t>(i)]);
        ++row[d];
        const std::int64_t c = ++cnt[d];
        if (sizes[d] > 0 && c % sizes[d] == 0 && c / sizes[d] <= kMaxPassEvents) {
          r.epoch_events.insert(r.epoch_events.end(), {pos + i, static_cast<std::int64_t>(d), c / sizes[d]});
        }
      }
      std::int64_t* trow = &r.tokens[static_cast<std::size_t>(w) * kk];
      const std::vector<std::int64_t>& tok1 = sched_.tokens_served();
      for (std::size_t d = 0; d < kk; ++d) trow[d] += tok1[d] - tok0[d];
      r.window_sizes[static_cast<std::size_t>(w)] += got;
      pos += got;
      if (got < requested) break;  // the stream ended
    }
    r.generated = pos - start;
    return r;
  }
};

}  // namespace mixsieve
