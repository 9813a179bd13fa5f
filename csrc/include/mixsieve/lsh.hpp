// Banded LSH over MinHash signatures: 8-byte band keys in open-addressing tables, candidates
// verified against the signature Jaccard estimate, and an exact, checksummed file format.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
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

// The hasher that made an index's signatures, recorded in the index file (format 2) so that
// signatures of new documents are made the same way. `scheme` is kSignatureScheme of the code
// that made them (normalisation, shingling, hashing); num_perm and the slot width are in the
// index's own header.
struct HasherParams {
  bool known = false;
  std::uint32_t ngram = 0;
  Unit unit = Unit::Word;
  std::uint64_t seed = 0;
  std::uint32_t scheme = kSignatureScheme;
};

// A set of int64 keys (open addressing; -1, the "no match" marker, is never a key and marks a
// free slot). 16 bytes per key at most, against num_perm * 4 or 8 bytes of signature per row.
class KeySet {
 public:
  static constexpr std::int64_t kFree = -1;
  bool contains(std::int64_t key) const {
    if (slots_.empty()) return false;
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t s = mix(key) & mask;; s = (s + 1) & mask) {
      if (slots_[s] == key) return true;
      if (slots_[s] == kFree) return false;
    }
  }
  // False if the key was already there.
  bool insert(std::int64_t key) {
    if (2 * (used_ + 1) > slots_.size()) grow();
    const std::size_t mask = slots_.size() - 1;
    std::size_t s = mix(key) & mask;
    while (slots_[s] != kFree) {
      if (slots_[s] == key) return false;
      s = (s + 1) & mask;
    }
    slots_[s] = key;
    ++used_;
    return true;
  }
  void reserve(std::size_t n) {
    while (2 * n > slots_.size()) grow();
  }

 private:
  static std::size_t mix(std::int64_t key) {
    std::uint64_t z = static_cast<std::uint64_t>(key) + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return static_cast<std::size_t>(z ^ (z >> 31));
  }
  void grow() {
    std::vector<std::int64_t> old;
    old.swap(slots_);
    slots_.assign(std::max<std::size_t>(64, old.size() * 2), kFree);
    used_ = 0;
    for (std::int64_t k : old) {
      if (k != kFree) insert(k);
    }
  }
  std::vector<std::int64_t> slots_;
  std::size_t used_ = 0;
};

// Why a key cannot be added, or an empty string: -1 is the "no match" marker of add().
inline std::string key_problem(const KeySet& existing, const std::int64_t* keys, std::size_t n) {
  KeySet batch;
  batch.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t key = keys[i];
    const std::string where = " (row " + std::to_string(i) + ")";
    if (key == KeySet::kFree) return "key -1" + where + " is reserved: add() reports -1 for no match";
    if (existing.contains(key)) return "key " + std::to_string(key) + where + " is already indexed";
    if (!batch.insert(key)) return "key " + std::to_string(key) + where + " appears twice";
  }
  return {};
}

struct LSHParams {
  int num_perm = 128;
  int bands = 0;
  int rows = 0;
  double threshold = 0.8;
  bool verify = true;       // drop band collisions whose estimated Jaccard < threshold
  bool match_empty = false;  // documents without shingles match each other only if asked
};

// The band keys of one signature: band b (rows b*r .. b*r + r - 1) hashed with xxh64 seeded by b.
// Documents share a bucket when they have the same key in the same band. mixsieve.ray groups
// these keys across a cluster, so they are part of the clustering's definition.
template <class T>
inline void lsh_band_keys(const T* sig, int bands, int rows, std::uint64_t* out) {
  const std::size_t r = static_cast<std::size_t>(rows);
  for (int b = 0; b < bands; ++b) {
    out[b] = xxh64(sig + static_cast<std::size_t>(b) * r, r * sizeof(T), static_cast<std::uint64_t>(b));
  }
}

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
  const T* signature(std::size_t pos) const {
    return view_ && pos >= view_base_ ? view_ + (pos - view_base_) * k() : sigs_.data() + pos * k();
  }

  // An index over signatures the caller keeps alive and adds in order, starting at `view`
  // (no copy): for one-shot clustering of a signature matrix.
  static LSHIndex over(const LSHParams& p, const T* view) {
    LSHIndex idx(p);
    idx.view_ = view;
    return idx;
  }

  // Rows added from now on keep their signatures in the caller's memory, starting at `view`
  // (row size() + i at view + i * num_perm; no copy), as with over(); rows already held keep
  // theirs. Their keys are not checked (the caller makes them distinct). For clustering a
  // batch whose signatures live in a memory-mapped file after an index loaded from disk.
  void continue_over(const T* view) {
    if (view_) throw std::logic_error("LSHIndex: already a view");
    view_ = view;
    view_base_ = keys_.size();
  }

  // Adds n signatures in order. For row i, dup_pos[i] is the position of the earlier
  // indexed row with the highest estimated Jaccard among verified candidates (ties: the
  // earliest), or -1; sim[i] is that estimate (0 when none). on_match(pos, row_pos, sim) is
  // called for every verified candidate pair. Rows within the batch see earlier rows.
  // Keys must be distinct, never -1, and not already indexed (std::invalid_argument naming
  // the key; nothing of the call is added then). Default keys (keys == nullptr) are positions.
  template <class OnMatch>
  void add(const T* sigs, std::size_t n, const std::int64_t* keys, std::int64_t* dup_pos, float* sim,
           OnMatch&& on_match) {
    add_impl(sigs, n, keys, dup_pos, sim, on_match, [](std::uint32_t, std::uint32_t) { return false; },
             [](std::uint32_t, int, std::uint64_t) { return true; }, true);
  }

  // Stores n signatures without looking for their near-duplicates (for rows already known to
  // be distinct, e.g. the kept documents of a dedup run): O(bands) per row.
  void append(const T* sigs, std::size_t n, const std::int64_t* keys) {
    std::vector<std::int64_t> dp(n);
    std::vector<float> sm(n);
    add_impl(sigs, n, keys, dp.data(), sm.data(), [](std::uint32_t, std::uint32_t, double) {},
             [](std::uint32_t, std::uint32_t) { return false; }, [](std::uint32_t, int, std::uint64_t) { return true; },
             false);
  }

  // Candidate pairs whose estimated Jaccard was computed by the last add/add_clustered call.
  std::uint64_t comparisons() const { return comparisons_; }
  // Rows of the last add_clustered call that some bucket refused to store (rule 4). When it is
  // zero, no cap changed anything: the clusters are exactly the connected components of the
  // verified candidate pairs.
  std::uint64_t refused() const { return refused_; }

  // The same for clustering into `uf` (positions of this index = uf elements). The rule, in
  // full (docs/dedup.md states it for users):
  //  1. Candidates of a row are the members of its band buckets; each bucket contributes at
  //     most kBucketCap of them, the most recently stored first.
  //  2. A candidate already in the row's cluster is not verified again (connectivity is
  //     unchanged); any other is verified (estimated Jaccard >= threshold) and joins clusters.
  //     dup_pos/sim name an earlier verified near-duplicate, not necessarily the most similar.
  //  3. A row with the same signature as an earlier row always joins that row's cluster,
  //     whatever the buckets held (a table of whole signatures).
  //  4. A row is stored in a bucket only while the bucket holds fewer than kBucketCap rows and
  //     fewer than kClusterCap rows of the row's cluster.
  // Bound on work: a row visits at most bands * kBucketCap bucket members in (1) and again in
  // (4), verifies each distinct candidate once (k slot compares), and does one table lookup in
  // (3); so n rows cost O(n * bands * kBucketCap * (k + union-find)) whatever the data, linear
  // in n. Without (1)/(4) a corpus of m templated pages that all share band keys but stay under
  // the threshold costs O(m^2) verifications. The caps only matter for buckets that hold more
  // than kBucketCap rows, i.e. band keys shared by many documents that are not near-duplicates
  // of each other; near-duplicates also share their other band keys. The caps make the index
  // an approximation, so it can no longer be saved.
  static constexpr int kClusterCap = 8;
  static constexpr int kBucketCap = 64;
  void add_clustered(const T* sigs, std::size_t n, const std::int64_t* keys, std::int64_t* dup_pos, float* sim,
                     UnionFind& uf) {
    if (!capped_) {
      capped_ = true;
      for (std::size_t i = 0; i < keys_.size(); ++i) {
        if (rep_[i] == kBucketed) exact_insert(static_cast<std::uint32_t>(i));
      }
    }
    add_impl(
        sigs, n, keys, dup_pos, sim, [&uf](std::uint32_t a, std::uint32_t b, double) { uf.unite(a, b); },
        [&uf](std::uint32_t c, std::uint32_t pos) { return uf.find(c) == uf.find(pos); },
        [&](std::uint32_t pos, int band, std::uint64_t key) {
          const std::uint32_t root = uf.find(pos);
          int same = 0, total = 0;
          bool ok = true;
          for (std::uint32_t m = head(band, key); m != kEmpty && total < kBucketCap; m = next(m, band)) {
            ++total;
            same += uf.find(m) == root;
            if (same >= kClusterCap) {
              ok = false;
              break;
            }
          }
          ok = ok && total < kBucketCap;
          if (!ok && refused_pos_ != pos) {
            ++refused_;
            refused_pos_ = pos;
          }
          return ok;
        },
        true);
  }

  // Positions (in insertion order) of indexed near-duplicates of `sig`, exact copies included.
  std::vector<std::uint32_t> query(const T* sig) const {
    std::vector<std::uint32_t> out;
    if (!p_.match_empty && is_empty_signature(sig, k())) return out;
    std::vector<std::uint64_t> bkeys(static_cast<std::size_t>(p_.bands));
    std::vector<std::uint32_t> cand;
    band_keys(sig, bkeys.data());
    gather(bkeys.data(), cand, kEmpty);
    for (std::uint32_t c : cand) {
      if (p_.verify && jaccard_estimate(sig, signature(c), k()) < p_.threshold) continue;
      out.push_back(c);
      for (std::uint32_t a = alias_head_[c]; a != kEmpty; a = alias_next_[a]) out.push_back(a);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // Serialised form: header, metadata bytes, keys, row states, signatures, xxh64 checksum.
  std::vector<char> to_bytes(const std::string& meta, const HasherParams& hasher = HasherParams{}) const {
    if (capped_) throw std::logic_error("an index used for clustering (add_clustered) cannot be saved");
    std::vector<char> out;
    auto put = [&out](const void* p, std::size_t n) {
      if (n == 0) return;  // p may be null (an empty vector's data())
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
    h.hasher_known = hasher.known ? 1u : 0u;
    if (hasher.known) {
      h.ngram = hasher.ngram;
      h.unit = static_cast<std::uint32_t>(hasher.unit);
      h.scheme = hasher.scheme;
      h.seed = hasher.seed;
    }
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
  static std::uint32_t peek_width(const char* data, std::size_t len) {
    std::size_t hs;
    return read_header(data, len, hs).width;
  }

  // `version` (if given) receives the file's format version: 1 files record no hasher.
  static LSHIndex from_bytes(const char* data, std::size_t len, std::string* meta, HasherParams* hasher = nullptr,
                             std::uint32_t* version = nullptr) {
    std::size_t hsize;
    const Header h = read_header(data, len, hsize);
    if (version) *version = h.version;
    if (hasher) {
      *hasher = HasherParams{};
      hasher->known = h.hasher_known == 1;
      if (hasher->known) {
        hasher->ngram = h.ngram;
        hasher->unit = static_cast<Unit>(h.unit);
        hasher->seed = h.seed;
        hasher->scheme = h.scheme;
      }
    }
    if (h.width != sizeof(T)) throw IndexFormatError("index file: slot width does not match");
    const std::uint64_t k = h.num_perm;
    const unsigned __int128 body = static_cast<unsigned __int128>(h.count) * (16 + k * sizeof(T));
    const unsigned __int128 expect = hsize + static_cast<unsigned __int128>(h.meta_len) + body + 8;
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
    const char* q = data + hsize;
    if (meta) meta->assign(q, h.meta_len);
    q += h.meta_len;
    const std::size_t n = h.count;
    idx.keys_.resize(n);
    idx.rep_.resize(n);
    idx.sigs_.resize(n * k);
    // An index may hold no keys: its vectors' data() are then null, and memcpy from or to null
    // is undefined even for zero bytes.
    if (n) std::memcpy(idx.keys_.data(), q, n * 8);
    q += n * 8;
    idx.keyset_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (idx.keys_[i] == KeySet::kFree || !idx.keyset_.insert(idx.keys_[i])) {
        throw IndexFormatError("index file: key " + std::to_string(idx.keys_[i]) + " at row " + std::to_string(i) +
                               " is " + (idx.keys_[i] == KeySet::kFree ? "reserved" : "repeated"));
      }
    }
    if (n) std::memcpy(idx.rep_.data(), q, n * 8);
    q += n * 8;
    if (n && k) std::memcpy(idx.sigs_.data(), q, n * k * sizeof(T));
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
                OnMatch&& on_match, Skip&& skip, Store&& store, bool search) {
    if (keys_.size() + n >= kEmpty) throw std::length_error("an LSHIndex holds at most 2^32 - 2 rows");
    comparisons_ = 0;
    refused_ = 0;
    refused_pos_ = kEmpty;
    if (!view_) {  // a view (cluster_signatures) has positions as keys and keeps no key set
      std::vector<std::int64_t> positions;
      const std::int64_t* kk = keys;
      if (!kk) {
        positions.resize(n);
        for (std::size_t i = 0; i < n; ++i) positions[i] = static_cast<std::int64_t>(keys_.size() + i);
        kk = positions.data();
      }
      const std::string why = key_problem(keyset_, kk, n);
      if (!why.empty()) throw std::invalid_argument(why);
      keyset_.reserve(keys_.size() + n);
      for (std::size_t i = 0; i < n; ++i) keyset_.insert(kk[i]);
    }
    reserve(keys_.size() + n);
    std::vector<std::uint32_t> cand;
    std::vector<std::uint64_t> bkeys(static_cast<std::size_t>(p_.bands));
    for (std::size_t i = 0; i < n; ++i) {
      if (interrupt_check && i % kCheckEvery == kCheckEvery - 1) interrupt_check();
      const T* sig = sigs + i * k();
      const auto pos = static_cast<std::uint32_t>(keys_.size());
      keys_.push_back(keys ? keys[i] : static_cast<std::int64_t>(pos));
      if (view_) {
        if (sig != view_ + (static_cast<std::size_t>(pos) - view_base_) * k()) {
          throw std::logic_error("LSHIndex view: rows added out of order");
        }
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
      if (!search) {
        insert(pos, bkeys.data(), store);
        rep_.push_back(kBucketed);
        continue;
      }
      gather(bkeys.data(), cand, capped_ ? static_cast<std::uint32_t>(kBucketCap) : kEmpty);
      std::int64_t best = -1;
      double best_sim = -1.0;
      for (std::uint32_t c : cand) {
        if (skip(c, pos)) continue;
        ++comparisons_;
        const double s = jaccard_estimate(sig, signature(c), k());
        if (p_.verify && s < p_.threshold) continue;
        on_match(c, pos, s);
        if (s > best_sim) {
          best_sim = s;
          best = c;
        }
      }
      if (capped_) {  // rule 3: an earlier identical signature the capped buckets did not show
        const std::uint32_t twin = exact_find(sig);
        if (twin != kEmpty && !skip(twin, pos)) {
          ++comparisons_;
          on_match(twin, pos, 1.0);
          if (best_sim < 1.0) {
            best = twin;
            best_sim = 1.0;
          }
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
        if (capped_) exact_insert(pos);
      }
    }
  }

  // The first bucketed row whose whole signature equals `sig`, or kEmpty (clustering only).
  std::uint32_t exact_find(const T* sig) const {
    if (exact_.heads.empty()) return kEmpty;
    const std::uint64_t h = xxh64(sig, k() * sizeof(T), 0);
    const std::size_t cap = exact_.heads.size();
    for (std::size_t s = home(h, cap);; s = next_slot(s, cap)) {
      if (exact_.heads[s] == kEmpty) return kEmpty;
      if (exact_.keys[s] == h) {
        const std::uint32_t pos = exact_.heads[s];
        return std::memcmp(sig, signature(pos), k() * sizeof(T)) == 0 ? pos : kEmpty;
      }
    }
  }

  void exact_insert(std::uint32_t pos) {
    const std::uint64_t h = xxh64(signature(pos), k() * sizeof(T), 0);
    if (2 * (exact_.used + 1) > exact_.heads.size()) grow(exact_);
    const std::size_t cap = exact_.heads.size();
    std::size_t s = home(h, cap);
    while (exact_.heads[s] != kEmpty) {
      if (exact_.keys[s] == h) return;  // keep the first row with this signature
      s = next_slot(s, cap);
    }
    exact_.keys[s] = h;
    exact_.heads[s] = pos;
    ++exact_.used;
  }

  // First member of the bucket of `band` with band key `key` (kEmpty if there is none).
  std::uint32_t head(int band, std::uint64_t key) const {
    const Table& t = tables_[static_cast<std::size_t>(band)];
    if (t.heads.empty()) return kEmpty;
    const std::size_t cap = t.heads.size();
    for (std::size_t s = home(key, cap);; s = next_slot(s, cap)) {
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
    // Format 2 on (format 1 ends above): the hasher, see HasherParams.
    std::uint32_t hasher_known;  // 0 or 1
    std::uint32_t ngram;
    std::uint32_t unit;
    std::uint32_t scheme;
    std::uint64_t seed;
  };
  static constexpr std::size_t kHeaderV1 = 56;
  static_assert(sizeof(Header) == 80 && offsetof(Header, hasher_known) == kHeaderV1, "index header layout");
  static constexpr char kMagic[8] = {'M', 'X', 'S', 'V', 'L', 'S', 'H', '\0'};
  static constexpr std::uint32_t kVersion = 2;

  static Header read_header(const char* data, std::size_t len, std::size_t& size) {
    Header h{};
    if (len < kHeaderV1 + 8) throw IndexFormatError("not a mixsieve LSH index file (too short)");
    std::memcpy(&h, data, kHeaderV1);
    if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
      throw IndexFormatError("not a mixsieve LSH index file (bad magic bytes)");
    }
    if (h.version != 1 && h.version != kVersion) {
      throw IndexFormatError("unsupported index file version " + std::to_string(h.version) +
                             " (this mixsieve reads versions 1 and 2)");
    }
    size = h.version == 1 ? kHeaderV1 : sizeof(Header);
    if (h.version >= 2) {
      if (len < sizeof(Header) + 8) throw IndexFormatError("not a mixsieve LSH index file (too short)");
      std::memcpy(&h, data, sizeof(Header));
      if (h.hasher_known > 1 || (h.hasher_known && (h.ngram == 0 || h.ngram > (1u << 16) || h.unit > 1))) {
        throw IndexFormatError("index file: corrupt hasher parameters");
      }
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

  void band_keys(const T* sig, std::uint64_t* out) const { lsh_band_keys(sig, p_.bands, p_.rows, out); }

  // Sorted, distinct positions sharing at least one band key; at most `limit` (the most
  // recently stored) from each bucket.
  void gather(const std::uint64_t* bkeys, std::vector<std::uint32_t>& cand, std::uint32_t limit) const {
    cand.clear();
    for (int b = 0; b < p_.bands; ++b) {
      std::uint32_t seen = 0;
      for (std::uint32_t m = head(b, bkeys[b]); m != kEmpty && seen < limit; m = next(m, b), ++seen) cand.push_back(m);
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
      const std::size_t cap = t.heads.size();
      std::size_t s = home(bkeys[b], cap);
      while (t.heads[s] != kEmpty && t.keys[s] != bkeys[b]) s = next_slot(s, cap);
      if (t.heads[s] == kEmpty) {
        t.keys[s] = bkeys[b];
        ++t.used;
      }
      next_[pos * static_cast<std::size_t>(p_.bands) + b] = t.heads[s];
      t.heads[s] = pos;
    }
  }

  // Slot tables: open addressing with linear probing, at most half full. A key's first slot
  // is its high bits scaled to the capacity (the keys are xxh64 values, uniform), so the
  // capacity need not be a power of two: a table reserved for n keys takes 2n slots, not up to
  // 4n. Where a key sits does not change any result (buckets are chained through next_).
  static std::size_t home(std::uint64_t key, std::size_t cap) {
    return static_cast<std::size_t>((static_cast<unsigned __int128>(key) * cap) >> 64);
  }
  static std::size_t next_slot(std::size_t s, std::size_t cap) { return s + 1 == cap ? 0 : s + 1; }

  static void grow(Table& t) { rehash(t, std::max<std::size_t>(64, t.heads.size() * 2)); }

  // Room for `entries` keys at most half full: exactly 2 * entries slots when that is more than
  // double the current capacity (a bulk add), else double (repeated small adds stay linear).
  static void fit(Table& t, std::size_t entries) {
    if (2 * entries <= t.heads.size()) return;
    rehash(t, std::max({std::size_t{64}, 2 * entries, 2 * t.heads.size()}));
  }

  static void rehash(Table& t, std::size_t cap) {
    std::vector<std::uint64_t> keys(cap);
    std::vector<std::uint32_t> heads(cap, kEmpty);
    for (std::size_t s = 0; s < t.heads.size(); ++s) {
      if (t.heads[s] == kEmpty) continue;
      std::size_t d = home(t.keys[s], cap);
      while (heads[d] != kEmpty) d = next_slot(d, cap);
      keys[d] = t.keys[s];
      heads[d] = t.heads[s];
    }
    t.keys.swap(keys);
    t.heads.swap(heads);
  }

  void reserve(std::size_t n) {
    for (Table& t : tables_) fit(t, n);
    if (capped_) fit(exact_, n);
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
  std::size_t view_base_ = 0;             // the first row whose signature is in view_
  std::vector<std::uint32_t> next_;       // per (row, band): next member of the same bucket
  std::vector<std::uint32_t> alias_head_;  // per bucketed row: its exact copies
  std::vector<std::uint32_t> alias_next_;
  bool capped_ = false;  // add_clustered was used: buckets are incomplete
  KeySet keyset_;        // every key (not kept for a view)
  Table exact_;          // clustering only: whole-signature hash -> first bucketed row
  std::uint64_t comparisons_ = 0;
  std::uint64_t refused_ = 0;
  std::uint32_t refused_pos_ = kEmpty;

 public:
  // Called every kCheckEvery rows of an add: it may throw to stop the call (which then leaves
  // the index unusable: cluster_signatures uses it for Ctrl-C and discards the index).
  std::function<void()> interrupt_check;
  static constexpr std::size_t kCheckEvery = 4096;
};

// Near-duplicate clusters of n signatures: verified candidate pairs join clusters, whose id is
// the lowest row. dup_pos/sim as in LSHIndex::add_clustered.
// Returns the number of candidate pairs compared (see LSHIndex::add_clustered for the bound);
// *refused (if given) receives the number of rows some bucket refused to store.
// `interrupt_check` (if set) is called every few thousand rows and may throw to stop the work.
template <class T>
std::uint64_t cluster_signatures(const T* sigs, std::size_t n, const LSHParams& p, std::int64_t* cluster,
                                 std::int64_t* dup_pos, float* sim, std::uint64_t* refused = nullptr,
                                 std::function<void()> interrupt_check = {}) {
  LSHIndex<T> idx = LSHIndex<T>::over(p, sigs);
  idx.interrupt_check = std::move(interrupt_check);
  UnionFind uf(n);
  idx.add_clustered(sigs, n, nullptr, dup_pos, sim, uf);
  for (std::size_t i = 0; i < n; ++i) cluster[i] = uf.find(static_cast<std::uint32_t>(i));
  if (refused != nullptr) *refused = idx.refused();
  return idx.comparisons();
}

}  // namespace mixsieve
