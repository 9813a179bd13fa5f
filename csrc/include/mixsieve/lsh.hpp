// Banded LSH over MinHash signatures: 8-byte band keys in open-addressing tables, candidates
// verified against the signature Jaccard estimate, and an exact, checksummed file format.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mixsieve/minhash.hpp"
#include "mixsieve/union_find.hpp"
#include "mixsieve/xxh64.hpp"

namespace mixsieve {

// Raised for a file that is not a complete, intact mixsieve index.
struct IndexFormatError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// (bands, rows) with bands * rows <= num_perm minimising
// fp_weight * P(candidate | J < t) area + fn_weight * P(miss | J >= t) area over the S-curve
// 1 - (1 - s^rows)^bands, integrated with datasketch's midpoint rule (step 0.001).
inline std::pair<int, int> optimal_bands(double threshold, int num_perm, double fp_weight = 0.5,
                                         double fn_weight = 0.5) {
  auto integrate = [](auto&& f, double lo, double hi) {
    const double step = 0.001;
    double area = 0.0;
    for (double x = lo; x < hi; x += step) area += f(x + 0.5 * step) * step;
    return area;
  };
  double best = std::numeric_limits<double>::infinity();
  std::pair<int, int> opt{0, 0};
  for (int b = 1; b <= num_perm; ++b) {
    for (int r = 1; r <= num_perm / b; ++r) {
      const auto p = [b, r](double s) { return 1.0 - std::pow(1.0 - std::pow(s, r), b); };
      const double fp = integrate(p, 0.0, threshold);
      const double fn = integrate([&](double s) { return 1.0 - p(s); }, threshold, 1.0);
      const double err = fp_weight * fp + fn_weight * fn;
      if (err < best) {
        best = err;
        opt = {b, r};
      }
    }
  }
  return opt;
}

struct LSHParams {
  int num_perm = 128;
  int bands = 0;
  int rows = 0;
  double threshold = 0.8;
  bool verify = true;       // drop band collisions whose estimated Jaccard < threshold
  bool match_empty = false;  // documents without shingles match each other only if asked
};

template <class T>
class LSHIndex {
  static_assert(std::is_same_v<T, std::uint32_t> || std::is_same_v<T, std::uint64_t>);
  static constexpr std::uint32_t kEmpty = std::numeric_limits<std::uint32_t>::max();
  static constexpr std::int64_t kBucketed = -1;  // rep_: the row is in the band tables
  static constexpr std::int64_t kUnindexed = -2;  // rep_: empty document, not indexed

 public:
  // Seed of the xxh64 checksum that closes a serialised index.
  static constexpr std::uint64_t kChecksumSeed = 0x6D69787369657665ULL;

  explicit LSHIndex(const LSHParams& p) : p_(p), tables_(static_cast<std::size_t>(p.bands)) {
    if (p.num_perm < 1) throw std::invalid_argument("num_perm must be >= 1");
    if (p.bands < 1 || p.rows < 1) throw std::invalid_argument("bands and rows must be >= 1");
    if (static_cast<long long>(p.bands) * p.rows > p.num_perm) {
      throw std::invalid_argument("bands * rows must be <= num_perm");
    }
    if (!(p.threshold > 0.0 && p.threshold < 1.0)) throw std::invalid_argument("threshold must be in (0, 1)");
  }

  const LSHParams& params() const { return p_; }
  std::size_t size() const { return keys_.size(); }
  const std::vector<std::int64_t>& keys() const { return keys_; }
  const T* signature(std::size_t pos) const { return (view_ ? view_ : sigs_.data()) + pos * k(); }

  // An index over signatures the caller keeps alive and adds in order, starting at `view`
  // (no copy): for one-shot clustering of a signature matrix.
  static LSHIndex over(const LSHParams& p, const T* view) {
    LSHIndex idx(p);
    idx.view_ = view;
    return idx;
  }

  // Adds n signatures in order. For row i, dup_pos[i] is the position of the earlier
  // indexed row with the highest estimated Jaccard among verified candidates (ties: the
  // earliest), or -1; sim[i] is that estimate (0 when none). on_match(pos, row_pos, sim) is
  // called for every verified candidate pair. Rows within the batch see earlier rows.
  template <class OnMatch>
  void add(const T* sigs, std::size_t n, const std::int64_t* keys, std::int64_t* dup_pos, float* sim,
           OnMatch&& on_match) {
    add_impl(sigs, n, keys, dup_pos, sim, on_match, [](std::uint32_t, std::uint32_t) { return false; },
             [](std::uint32_t, int, std::uint64_t) { return true; });
  }

  // The same for clustering into `uf` (positions of this index = uf elements): candidates
  // already in the row's cluster are not verified again (connectivity is unchanged), so
  // dup_pos/sim name an earlier verified near-duplicate, not necessarily the most similar one.
  // A row is stored in a band bucket only while that bucket holds fewer than kClusterCap rows
  // of its cluster: a cluster of m near-identical rows then costs O(m), not O(m^2). That cap
  // makes the index an approximation, so it can no longer be saved.
  static constexpr int kClusterCap = 8;
  void add_clustered(const T* sigs, std::size_t n, const std::int64_t* keys, std::int64_t* dup_pos, float* sim,
                     UnionFind& uf) {
    capped_ = true;
    add_impl(
        sigs, n, keys, dup_pos, sim, [&uf](std::uint32_t a, std::uint32_t b, double) { uf.unite(a, b); },
        [&uf](std::uint32_t c, std::uint32_t pos) { return uf.find(c) == uf.find(pos); },
        [&](std::uint32_t pos, int band, std::uint64_t key) {
          const std::uint32_t root = uf.find(pos);
          int same = 0;
          for (std::uint32_t m = head(band, key); m != kEmpty && same < kClusterCap; m = next(m, band)) {
            same += uf.find(m) == root;
          }
          return same < kClusterCap;
        });
  }

  // Positions (in insertion order) of indexed near-duplicates of `sig`, exact copies included.
  std::vector<std::uint32_t> query(const T* sig) const {
    std::vector<std::uint32_t> out;
    if (!p_.match_empty && is_empty_signature(sig, k())) return out;
    std::vector<std::uint64_t> bkeys(static_cast<std::size_t>(p_.bands));
    std::vector<std::uint32_t> cand;
    band_keys(sig, bkeys.data());
    gather(bkeys.data(), cand);
    for (std::uint32_t c : cand) {
      if (p_.verify && jaccard_estimate(sig, signature(c), k()) < p_.threshold) continue;
      out.push_back(c);
      for (std::uint32_t a = alias_head_[c]; a != kEmpty; a = alias_next_[a]) out.push_back(a);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // Serialised form: header, metadata bytes, keys, row states, signatures, xxh64 checksum.
  std::vector<char> to_bytes(const std::string& meta) const {
    if (capped_) throw std::logic_error("an index used for clustering (add_clustered) cannot be saved");
    std::vector<char> out;
    auto put = [&out](const void* p, std::size_t n) {
      const char* c = static_cast<const char*>(p);
      out.insert(out.end(), c, c + n);
    };
    Header h{};
    std::memcpy(h.magic, kMagic, sizeof(h.magic));
    h.version = kVersion;
    h.width = sizeof(T);
    h.num_perm = static_cast<std::uint32_t>(p_.num_perm);
    h.bands = static_cast<std::uint32_t>(p_.bands);
    h.rows = static_cast<std::uint32_t>(p_.rows);
    h.flags = (p_.verify ? 1u : 0u) | (p_.match_empty ? 2u : 0u);
    h.threshold = p_.threshold;
    h.count = keys_.size();
    h.meta_len = meta.size();
    out.reserve(sizeof(h) + meta.size() + keys_.size() * (16 + k() * sizeof(T)) + 8);
    put(&h, sizeof(h));
    put(meta.data(), meta.size());
    put(keys_.data(), keys_.size() * sizeof(std::int64_t));
    put(rep_.data(), rep_.size() * sizeof(std::int64_t));
    put(signature(0), keys_.size() * k() * sizeof(T));
    const std::uint64_t sum = xxh64(out.data(), out.size(), kChecksumSeed);
    put(&sum, sizeof(sum));
    return out;
  }

  // The width (4 or 8) of the slots in a serialised index, after checking its header.
  static std::uint32_t peek_width(const char* data, std::size_t len) { return read_header(data, len).width; }

  static LSHIndex from_bytes(const char* data, std::size_t len, std::string* meta) {
    const Header h = read_header(data, len);
    if (h.width != sizeof(T)) throw IndexFormatError("index file: slot width does not match");
    const std::uint64_t k = h.num_perm;
    const unsigned __int128 body = static_cast<unsigned __int128>(h.count) * (16 + k * sizeof(T));
    const unsigned __int128 expect = sizeof(Header) + static_cast<unsigned __int128>(h.meta_len) + body + 8;
    if (expect != len) {
      throw IndexFormatError("index file is truncated or has trailing data (expected " +
                             std::to_string(static_cast<unsigned long long>(expect)) + " bytes, found " +
                             std::to_string(len) + ")");
    }
    std::uint64_t sum;
    std::memcpy(&sum, data + len - 8, 8);
    if (xxh64(data, len - 8, kChecksumSeed) != sum) throw IndexFormatError("index file checksum mismatch: file is corrupt");
    LSHParams p;
    p.num_perm = static_cast<int>(h.num_perm);
    p.bands = static_cast<int>(h.bands);
    p.rows = static_cast<int>(h.rows);
    p.threshold = h.threshold;
    p.verify = (h.flags & 1u) != 0;
    p.match_empty = (h.flags & 2u) != 0;
    LSHIndex idx(p);
    const char* q = data + sizeof(Header);
    if (meta) meta->assign(q, h.meta_len);
    q += h.meta_len;
    const std::size_t n = h.count;
    idx.keys_.resize(n);
    idx.rep_.resize(n);
    idx.sigs_.resize(n * k);
    std::memcpy(idx.keys_.data(), q, n * 8);
    q += n * 8;
    std::memcpy(idx.rep_.data(), q, n * 8);
    q += n * 8;
    std::memcpy(idx.sigs_.data(), q, n * k * sizeof(T));
    idx.next_.assign(n * static_cast<std::size_t>(p.bands), kEmpty);
    idx.alias_next_.assign(n, kEmpty);
    idx.alias_head_.assign(n, kEmpty);
    idx.reserve(n);
    std::vector<std::uint64_t> bkeys(static_cast<std::size_t>(p.bands));
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t r = idx.rep_[i];
      if (r == kBucketed) {
        idx.band_keys(idx.signature(i), bkeys.data());
        idx.insert(static_cast<std::uint32_t>(i), bkeys.data());
      } else if (r >= 0 && static_cast<std::size_t>(r) < i && idx.rep_[static_cast<std::size_t>(r)] == kBucketed) {
        idx.link_alias(static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(i));
      } else if (r != kUnindexed) {
        throw IndexFormatError("index file: inconsistent row state at row " + std::to_string(i));
      }
    }
    return idx;
  }

 private:
  template <class OnMatch, class Skip, class Store>
  void add_impl(const T* sigs, std::size_t n, const std::int64_t* keys, std::int64_t* dup_pos, float* sim,
                OnMatch&& on_match, Skip&& skip, Store&& store) {
    if (keys_.size() + n >= kEmpty) throw std::length_error("an LSHIndex holds at most 2^32 - 2 rows");
    reserve(keys_.size() + n);
    std::vector<std::uint32_t> cand;
    std::vector<std::uint64_t> bkeys(static_cast<std::size_t>(p_.bands));
    for (std::size_t i = 0; i < n; ++i) {
      const T* sig = sigs + i * k();
      const auto pos = static_cast<std::uint32_t>(keys_.size());
      keys_.push_back(keys ? keys[i] : static_cast<std::int64_t>(pos));
      if (view_) {
        if (sig != view_ + static_cast<std::size_t>(pos) * k()) throw std::logic_error("LSHIndex view: rows added out of order");
      } else {
        sigs_.insert(sigs_.end(), sig, sig + k());
      }
      next_.resize(next_.size() + static_cast<std::size_t>(p_.bands), kEmpty);
      alias_next_.push_back(kEmpty);
      alias_head_.push_back(kEmpty);
      dup_pos[i] = -1;
      sim[i] = 0.0f;
      if (!p_.match_empty && is_empty_signature(sig, k())) {
        rep_.push_back(kUnindexed);
        continue;
      }
      band_keys(sig, bkeys.data());
      gather(bkeys.data(), cand);
      std::int64_t best = -1;
      double best_sim = -1.0;
      for (std::uint32_t c : cand) {
        if (skip(c, pos)) continue;
        const double s = jaccard_estimate(sig, signature(c), k());
        if (p_.verify && s < p_.threshold) continue;
        on_match(c, pos, s);
        if (s > best_sim) {
          best_sim = s;
          best = c;
        }
      }
      if (best >= 0) {
        dup_pos[i] = best;
        sim[i] = static_cast<float>(best_sim);
      }
      if (best >= 0 && std::memcmp(sig, signature(static_cast<std::size_t>(best)), k() * sizeof(T)) == 0) {
        // An exact copy: every query that finds it would find `best` with the same estimate,
        // so it rides on best's buckets. Clusters of identical documents stay linear.
        link_alias(static_cast<std::uint32_t>(best), pos);
        rep_.push_back(best);
      } else {
        insert(pos, bkeys.data(), store);
        rep_.push_back(kBucketed);
      }
    }
  }

  // First member of the bucket of `band` with band key `key` (kEmpty if there is none).
  std::uint32_t head(int band, std::uint64_t key) const {
    const Table& t = tables_[static_cast<std::size_t>(band)];
    if (t.heads.empty()) return kEmpty;
    const std::size_t mask = t.heads.size() - 1;
    for (std::size_t s = key & mask;; s = (s + 1) & mask) {
      if (t.heads[s] == kEmpty) return kEmpty;
      if (t.keys[s] == key) return t.heads[s];
    }
  }

  std::uint32_t next(std::uint32_t member, int band) const {
    return next_[member * static_cast<std::size_t>(p_.bands) + static_cast<std::size_t>(band)];
  }

  struct Table {
    std::vector<std::uint64_t> keys;
    std::vector<std::uint32_t> heads;  // kEmpty marks a free slot
    std::size_t used = 0;
  };

  struct Header {
    char magic[8];
    std::uint32_t version;
    std::uint32_t width;
    std::uint32_t num_perm;
    std::uint32_t bands;
    std::uint32_t rows;
    std::uint32_t flags;
    double threshold;
    std::uint64_t count;
    std::uint64_t meta_len;
  };
  static constexpr char kMagic[8] = {'M', 'X', 'S', 'V', 'L', 'S', 'H', '\0'};
  static constexpr std::uint32_t kVersion = 1;

  static Header read_header(const char* data, std::size_t len) {
    Header h;
    if (len < sizeof(Header) + 8) throw IndexFormatError("not a mixsieve LSH index file (too short)");
    std::memcpy(&h, data, sizeof(Header));
    if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
      throw IndexFormatError("not a mixsieve LSH index file (bad magic bytes)");
    }
    if (h.version != kVersion) {
      throw IndexFormatError("unsupported index file version " + std::to_string(h.version));
    }
    if (h.width != 4 && h.width != 8) throw IndexFormatError("index file: bad slot width");
    if (h.num_perm == 0 || h.num_perm > (1u << 20) || h.bands == 0 || h.rows == 0 ||
        static_cast<std::uint64_t>(h.bands) * h.rows > h.num_perm || !(h.threshold > 0.0 && h.threshold < 1.0) ||
        h.meta_len > len || h.count > len) {
      throw IndexFormatError("index file: corrupt header");
    }
    return h;
  }

  std::size_t k() const { return static_cast<std::size_t>(p_.num_perm); }

  void band_keys(const T* sig, std::uint64_t* out) const {
    const std::size_t r = static_cast<std::size_t>(p_.rows);
    for (int b = 0; b < p_.bands; ++b) {
      out[b] = xxh64(sig + static_cast<std::size_t>(b) * r, r * sizeof(T), static_cast<std::uint64_t>(b));
    }
  }

  // Sorted, distinct positions sharing at least one band key.
  void gather(const std::uint64_t* bkeys, std::vector<std::uint32_t>& cand) const {
    cand.clear();
    for (int b = 0; b < p_.bands; ++b) {
      for (std::uint32_t m = head(b, bkeys[b]); m != kEmpty; m = next(m, b)) cand.push_back(m);
    }
    std::sort(cand.begin(), cand.end());
    cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
  }

  void insert(std::uint32_t pos, const std::uint64_t* bkeys) {
    insert(pos, bkeys, [](std::uint32_t, int, std::uint64_t) { return true; });
  }

  template <class Store>
  void insert(std::uint32_t pos, const std::uint64_t* bkeys, Store&& store) {
    for (int b = 0; b < p_.bands; ++b) {
      if (!store(pos, b, bkeys[b])) continue;
      Table& t = tables_[static_cast<std::size_t>(b)];
      if (2 * (t.used + 1) > t.heads.size()) grow(t);
      const std::size_t mask = t.heads.size() - 1;
      std::size_t s = bkeys[b] & mask;
      while (t.heads[s] != kEmpty && t.keys[s] != bkeys[b]) s = (s + 1) & mask;
      if (t.heads[s] == kEmpty) {
        t.keys[s] = bkeys[b];
        ++t.used;
      }
      next_[pos * static_cast<std::size_t>(p_.bands) + b] = t.heads[s];
      t.heads[s] = pos;
    }
  }

  static void grow(Table& t) {
    const std::size_t cap = std::max<std::size_t>(64, t.heads.size() * 2);
    std::vector<std::uint64_t> keys(cap);
    std::vector<std::uint32_t> heads(cap, kEmpty);
    const std::size_t mask = cap - 1;
    for (std::size_t s = 0; s < t.heads.size(); ++s) {
      if (t.heads[s] == kEmpty) continue;
      std::size_t d = t.keys[s] & mask;
      while (heads[d] != kEmpty) d = (d + 1) & mask;
      keys[d] = t.keys[s];
      heads[d] = t.heads[s];
    }
    t.keys.swap(keys);
    t.heads.swap(heads);
  }

  void reserve(std::size_t n) {
    keys_.reserve(n);
    rep_.reserve(n);
    if (!view_) sigs_.reserve(n * k());
    next_.reserve(n * static_cast<std::size_t>(p_.bands));
    alias_next_.reserve(n);
    alias_head_.reserve(n);
  }

  void link_alias(std::uint32_t rep, std::uint32_t pos) {
    alias_next_[pos] = alias_head_[rep];
    alias_head_[rep] = pos;
  }

  LSHParams p_;
  std::vector<Table> tables_;
  std::vector<std::int64_t> keys_;
  std::vector<std::int64_t> rep_;         // kBucketed, kUnindexed, or the position it copies
  std::vector<T> sigs_;                   // size() * num_perm slots (unless view_)
  const T* view_ = nullptr;               // caller-owned signatures, see over()
  std::vector<std::uint32_t> next_;       // per (row, band): next member of the same bucket
  std::vector<std::uint32_t> alias_head_;  // per bucketed row: its exact copies
  std::vector<std::uint32_t> alias_next_;
  bool capped_ = false;  // add_clustered was used: buckets are incomplete
};

// Near-duplicate clusters of n signatures: verified candidate pairs join clusters, whose id is
// the lowest row. dup_pos/sim as in LSHIndex::add_clustered.
template <class T>
void cluster_signatures(const T* sigs, std::size_t n, const LSHParams& p, std::int64_t* cluster,
                        std::int64_t* dup_pos, float* sim) {
  LSHIndex<T> idx = LSHIndex<T>::over(p, sigs);
  UnionFind uf(n);
  idx.add_clustered(sigs, n, nullptr, dup_pos, sim, uf);
  for (std::size_t i = 0; i < n; ++i) cluster[i] = uf.find(static_cast<std::uint32_t>(i));
}

}  // namespace mixsieve
