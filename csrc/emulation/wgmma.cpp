// The emulator's wgmma (hopper.h): wgmma.mma_async, commit_group and wait_group as warpgroup
// collectives, each product remembered with the address of every thread's accumulators and made
// (shared memory read through the descriptors, accumulators written) when wait_group retires its
// group, as late as the PTX ISA allows. So accumulators read before the wait, or a product never
// committed, give wrong numbers; tma.cpp asks wgmma_pending_reads before it starts a copy.
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "hopper.cuh"
#include "hopper.h"
#include "hopper_sync.h"

namespace minilora::emulation {
namespace {

using namespace sm90;  // the lock and the wait (hopper_sync.h)

constexpr int kMaxWarpgroups = 1024 / cuda::kWarpgroupThreads;

struct Product {
  uint64_t a, b;
  int n;
  float* d[cuda::kWarpgroupThreads];
};

enum class Step { Mma, Commit, Wait };

const char* name_of(Step step) {
  switch (step) {
    case Step::Mma: return "wgmma.mma_async";
    case Step::Commit: return "wgmma.commit_group";
    case Step::Wait: return "wgmma.wait_group";
  }
  return "?";
}

struct Warpgroup {
  int arrived = 0;
  uint64_t generation = 0;
  Step step = Step::Mma;
  uint64_t a = 0, b = 0;
  int value = 0;  // n of an Mma, the pending count of a Wait
  float* d[cuda::kWarpgroupThreads] = {};
  std::vector<Product> open;                // issued since the last commit
  std::deque<std::vector<Product>> groups;  // committed, oldest first
};

Warpgroup warpgroups[kMaxWarpgroups];
std::vector<bool> fenced_threads;  // by thread index: has run a wgmma.fence in this block

// The bytes of shared memory (offsets) a K-major 128-byte-swizzled tile of `rows` rows spans.
struct Span {
  uint64_t begin, end;
};
Span tile_span(uint64_t descriptor, int rows) {
  const uint64_t start = (descriptor & 0x3fff) << 4, stride = ((descriptor >> 32) & 0x3fff) << 4;
  const uint64_t begin = start & ~uint64_t(127);
  return {begin, begin + uint64_t(rows / 8 - 1) * stride + 8 * 128};
}

// A product issued and not yet retired that reads [begin, end) of shared memory, or null.
const Product* pending_reader(uint64_t begin, uint64_t end) {
  for (const Warpgroup& group : warpgroups) {
    const auto reads = [&](const Product& p) {
      for (const Span s : {tile_span(p.a, 64), tile_span(p.b, p.n)}) {
        if (s.begin < end && begin < s.end) return true;
      }
      return false;
    };
    for (const Product& p : group.open) {
      if (reads(p)) return &p;
    }
    for (const auto& committed : group.groups) {
      for (const Product& p : committed) {
        if (reads(p)) return &p;
      }
    }
  }
  return nullptr;
}

void retire(Warpgroup& group, int keep) {
  while (int(group.groups.size()) > keep) {
    for (const Product& p : group.groups.front()) {
      const char* error = multiply_wgmma(dynamic_shared_memory(), dynamic_shared_bytes(), p.a, p.b,
                                         p.n, p.d);
      if (*error) fail(cudaErrorLaunchFailure, std::string("wgmma.mma_async in block ") +
                                                   str(blockIdx) + ": " + error);
    }
    group.groups.pop_front();
  }
}

// One step of the warpgroup's 128 threads: the last to arrive carries it out for all.
void warpgroup_step(Step step, int value, uint64_t a, uint64_t b, float* d) {
  Lock lock = hold();
  const int64_t thread = linear(threadIdx, blockDim);
  const int64_t threads = int64_t(blockDim.x) * blockDim.y * blockDim.z;
  const int g = int(thread / cuda::kWarpgroupThreads);
  if ((g + 1) * int64_t(cuda::kWarpgroupThreads) > threads) {
    fail(cudaErrorLaunchFailure, std::string(name_of(step)) + " in " + where() +
                                     ": the warpgroup is not whole (the block has " +
                                     std::to_string(threads) + " threads); it needs 128");
    return;
  }
  Warpgroup& group = warpgroups[g];
  if (group.arrived == 0) {
    group.step = step;
    group.value = value;
    group.a = a;
    group.b = b;
  } else if (group.step != step || group.value != value || group.a != a || group.b != b) {
    fail(cudaErrorLaunchFailure,
         "warpgroup divergence in " + where() + ": threads of warpgroup " + std::to_string(g) +
             " wait at " + name_of(group.step) + ", this one reached " + name_of(step) +
             (group.step == step ? " with other operands (descriptors and counts must agree)" : ""));
    return;
  }
  if (step == Step::Mma && !(size_t(thread) < fenced_threads.size() && fenced_threads[thread])) {
    fail(cudaErrorLaunchFailure, "wgmma.mma_async in " + where() + " before any wgmma.fence (the "
                                 "ISA wants one before the first wgmma and after the accumulators "
                                 "are written by other code)");
    return;
  }
  group.d[thread % cuda::kWarpgroupThreads] = d;
  const uint64_t generation = group.generation;
  if (++group.arrived < cuda::kWarpgroupThreads) {
    wait_until(lock, [&] { return group.generation != generation; }, name_of(step));
    return;
  }
  if (step == Step::Mma) {
    Product p{a, b, value, {}};
    std::memcpy(p.d, group.d, sizeof p.d);
    group.open.push_back(p);
  } else if (step == Step::Commit) {
    group.groups.push_back(std::move(group.open));
    group.open.clear();
  } else {
    retire(group, value);
  }
  group.arrived = 0;
  ++group.generation;
  made_progress();
}

}  // namespace

// On a GPU a copy into bytes a product has yet to read may land first: the kernel must wait for
// the product (wgmma.wait_group, and a barrier for the other warpgroups) before refilling its tile.
bool wgmma_pending_reads(uint64_t begin, uint64_t end) { return pending_reader(begin, end) != nullptr; }

void start_block_of_wgmma_state() {
  for (Warpgroup& group : warpgroups) group = Warpgroup{};
  fenced_threads.assign(size_t(blockDim.x) * blockDim.y * blockDim.z, false);
}

// ---- wgmma -------------------------------------------------------------------------------------
void wgmma_fence() {
  Lock lock = hold();
  const size_t thread = size_t(linear(threadIdx, blockDim));
  if (thread < fenced_threads.size()) fenced_threads[thread] = true;
}

void wgmma_m64k16_bf16(float* d, int n, uint64_t descriptor_a, uint64_t descriptor_b) {
  warpgroup_step(Step::Mma, n, descriptor_a, descriptor_b, d);
}
void wgmma_commit_group() { warpgroup_step(Step::Commit, 0, 0, 0, nullptr); }
void wgmma_wait_group(int pending) { warpgroup_step(Step::Wait, pending, 0, 0, nullptr); }

const char* multiply_wgmma(const unsigned char* window, size_t window_bytes, uint64_t descriptor_a,
                           uint64_t descriptor_b, int n, float* const* d) {
  struct Tile {
    uint64_t start, stride;
  } tiles[2];
  const uint64_t descriptors[2] = {descriptor_a, descriptor_b};
  if (n < 8 || n > 256 || n % 8 != 0) return "m64nNk16 with bf16 has N = 8, 16, ..., 256 only";
  for (int t = 0; t < 2; ++t) {
    const uint64_t desc = descriptors[t];
    const uint64_t swizzle = desc >> 62, base_offset = (desc >> 49) & 7;
    tiles[t] = {(desc & 0x3fff) << 4, ((desc >> 32) & 0x3fff) << 4};
    if (swizzle != 1) return "the emulator reads K-major tiles with the 128-byte swizzle only";
    if (base_offset == 0 && (tiles[t].start & 0x380) != 0) {
      return "a swizzled tile that starts off a 1024-byte atom needs the descriptor's base offset";
    }
    if (base_offset != 0) return "the emulator does not read descriptors with a base offset";
    const uint64_t rows = t == 0 ? 64 : uint64_t(n);
      if (tile_span(descriptors[t], int(rows)).end > window_bytes) {
      return "a tile reaches past the end of dynamic shared memory";
    }
  }
  // Element (row, k) of a K-major tile: row m at (m / 8)·stride + (m % 8)·128 bytes, value k two
  // bytes further, then the 16-byte piece swizzled by the row within the atom (address bits 7-9).
  const auto value = [window](const Tile& tile, int row, int k) {  // within the atom's 1024 bytes
    uint64_t address = tile.start + uint64_t(row / 8) * tile.stride + uint64_t(row % 8) * 128 +
                       uint64_t(k) * 2;
    address ^= ((address >> 7) & 7) << 4;
    uint16_t bits;
    std::memcpy(&bits, window + address, sizeof bits);
    return cuda::float_from_bits(uint32_t(bits) << 16);
  };
  for (int thread = 0; thread < cuda::kWarpgroupThreads; ++thread) {
    for (int i = 0; i < n / 2; ++i) {
      const cuda::FragmentElement e = cuda::wgmma_accumulator_element(thread, i);
      float sum = d[thread][i];
      for (int k = 0; k < 16; ++k) sum += value(tiles[0], e.row, k) * value(tiles[1], e.col, k);
      d[thread][i] = sum;
    }
  }
  return "";
}

}  // namespace minilora::emulation
