// The emulator's sm_90 instructions (hopper.h): dynamic shared memory, mbarrier, TMA box copies and
// wgmma, with the copies and products made as late as the PTX ISA allows, so that a kernel that
// reads a tile before waiting for it, or overwrites a tile a product has yet to read, gets poison
// or stale values.
//
// With fibers every CUDA thread runs on the calling OS thread and switches only where it waits, so
// the state below needs no lock there; the OS-thread build (ThreadSanitizer) takes one mutex for all
// of it and waits on a condition variable, failing the launch after 10 s as for mma.sync.
#include "hopper.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda.h"
#include "cuda_runtime.h"
#include "hopper.cuh"
#include "scheduler.h"
#include "warp.h"

namespace minilora::emulation {
namespace {

constexpr size_t kMaxDynamicShared = 227 * 1024;  // an H100's most per block

unsigned char* dynamic_base = nullptr;  // kMaxDynamicShared bytes, 1024-byte aligned
size_t dynamic_bytes = 0;               // the running launch's

#if MINILORA_EMULATION_THREADS
std::mutex mutex;
std::condition_variable changed;
using Lock = std::unique_lock<std::mutex>;
Lock hold() { return Lock(mutex); }
#else
struct Lock {};
Lock hold() { return {}; }
#endif

std::string where() {
  return "block " + str(blockIdx) + ", thread " + str(threadIdx);
}

// Wait for `ready` (called with the lock held): fibers go back to the scheduler, which resumes them
// pass after pass and reports a pass in which nothing moves as divergence; OS threads sleep.
template <typename Ready>
void wait_until(Lock& lock, Ready ready, const std::string& what) {
#if MINILORA_EMULATION_THREADS
  if (!changed.wait_for(lock, std::chrono::seconds(10), ready)) {
    fail(cudaErrorLaunchFailure, what + " in " + where() + ": waited 10 s for threads that never came");
  }
#else
  (void)lock;
  (void)what;
  while (!ready()) wait_at_warp();
#endif
}

// Threads waiting in wait_until look again (an arrival, a copy started, a step completed).
void wake_waiters() {
#if MINILORA_EMULATION_THREADS
  changed.notify_all();
#endif
}

void made_progress() {
  count_completed_collective();
  wake_waiters();
}

// ---- mbarrier --------------------------------------------------------------------------------------
struct Copy {
  void* shared;
  TensorMap2d map;
  int x, y;
};

struct Barrier {
  uint32_t arrivals = 0, pending = 0;  // per phase, and still to come in this one
  int64_t transactions = 0;            // bytes expected and not yet landed
  uint64_t phases = 0;                 // completed so far
  std::vector<Copy> copies;            // started, not yet landed
  bool fenced = false;                 // a fence.mbarrier_init came after its mbarrier.init
};

std::map<const void*, Barrier> barriers;

Barrier* barrier_at(const uint64_t* barrier, const char* instruction) {
  auto found = barriers.find(barrier);
  if (found != barriers.end()) return &found->second;
  fail(cudaErrorLaunchFailure, std::string(instruction) + " in " + where() +
                                   " on a barrier that mbarrier.init never initialised");
  return nullptr;
}

int64_t box_bytes(const TensorMap2d& map) {
  return int64_t(map.box[0]) * map.box[1] * map.element_bytes;
}

// ---- wgmma -------------------------------------------------------------------------------------
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

// A product issued and not yet retired that reads [begin, end) of shared memory, or null. On a GPU
// a copy into those bytes may land before the product reads them: the kernel must wait for the
// product (wgmma.wait_group, and a barrier for the other warpgroups) before refilling its tile.
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
      const char* error = multiply_wgmma(dynamic_base, dynamic_bytes, p.a, p.b, p.n, p.d);
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

// ---- dynamic shared memory -------------------------------------------------------------------------
unsigned char* dynamic_shared_memory() { return dynamic_base; }

uint32_t shared_address(const void* pointer) {
  const auto* p = static_cast<const unsigned char*>(pointer);
  if (!dynamic_base || p < dynamic_base || p >= dynamic_base + dynamic_bytes) {
    fail(cudaErrorLaunchFailure, "a shared address taken in " + where() +
                                     " of memory outside the launch's dynamic shared memory (the "
                                     "emulator gives shared addresses to that alone)");
    return 0;
  }
  return uint32_t(p - dynamic_base);
}

void* shared_pointer(uint32_t address) { return dynamic_base + address; }

void set_dynamic_shared_bytes(size_t bytes) {
  if (!dynamic_base) {
    dynamic_base = static_cast<unsigned char*>(std::aligned_alloc(1024, kMaxDynamicShared));
  }
  dynamic_bytes = bytes;
}

void start_block_of_hopper_state() {
  if (dynamic_base) std::memset(dynamic_base, 0xff, dynamic_bytes);  // NaN, as __shared__ is
  barriers.clear();
  for (Warpgroup& group : warpgroups) group = Warpgroup{};
  fenced_threads.assign(size_t(blockDim.x) * blockDim.y * blockDim.z, false);
}

// ---- mbarrier ------------------------------------------------------------------------------------
void mbarrier_init(uint64_t* barrier, uint32_t arrivals) {
  Lock lock = hold();
  if (reinterpret_cast<uintptr_t>(barrier) % 8 != 0 || arrivals == 0) {
    fail(cudaErrorLaunchFailure, "mbarrier.init in " + where() +
                                     ": the barrier must be 8-byte aligned and expect at least "
                                     "one arrival");
    return;
  }
  Barrier& b = barriers[barrier];
  b = Barrier{};
  b.arrivals = b.pending = arrivals;
  *barrier = 0;  // the 8 bytes are the barrier's; the emulator keeps its state beside them
}

void fence_barrier_init() {
  Lock lock = hold();
  for (auto& entry : barriers) entry.second.fenced = true;
}

void mbarrier_arrive_expect_tx(uint64_t* barrier, uint32_t bytes) {
  Lock lock = hold();
  Barrier* b = barrier_at(barrier, "mbarrier.arrive.expect_tx");
  if (!b) return;
  b->transactions += bytes;
  if (b->pending == 0) {
    fail(cudaErrorLaunchFailure, "mbarrier.arrive.expect_tx in " + where() +
                                     ": more arrivals than the barrier's phase expects");
    return;
  }
  --b->pending;
  wake_waiters();
}

void mbarrier_wait(uint64_t* barrier, uint32_t parity) {
  Lock lock = hold();
  const auto done = [&] {
    Barrier* b = barrier_at(barrier, "mbarrier.try_wait.parity");
    if (!b) return true;
    if ((b->phases & 1) != (parity & 1)) return true;  // the phase of that parity is complete
    if (b->pending > 0) return false;                   // arrivals still to come
    for (const Copy& copy : b->copies) {                // all arrived: the copies land now
      if (!land_tma_box(copy.shared, copy.map, copy.x, copy.y)) {
        fail(cudaErrorLaunchFailure, "cp.async.bulk.tensor in block " + str(blockIdx) +
                                         ": the shared-memory destination is not 128-byte aligned");
      }
      b->transactions -= box_bytes(copy.map);
    }
    b->copies.clear();
    if (b->transactions < 0) {
      fail(cudaErrorLaunchFailure, "mbarrier in " + where() +
                                       ": copies brought more bytes than the arrivals expected");
      return true;
    }
    if (b->transactions > 0) return false;  // bytes expected that no copy brings: never completes
    ++b->phases;
    b->pending = b->arrivals;
    made_progress();
    return true;
  };
  wait_until(lock, done, "mbarrier.try_wait.parity");
}

// ---- TMA -------------------------------------------------------------------------------------------
void tma_load_2d(void* shared, const TensorMap2d& map, int x, int y, uint64_t* barrier) {
  Lock lock = hold();
  Barrier* b = barrier_at(barrier, "cp.async.bulk.tensor");
  if (!b) return;
  if (!b->fenced) {
    fail(cudaErrorLaunchFailure, "cp.async.bulk.tensor in " + where() + " completing on an mbarrier "
                                 "whose mbarrier.init no fence.mbarrier_init made visible to TMA");
    return;
  }
  const uint64_t begin = shared_address(shared);
  if (pending_reader(begin, begin + uint64_t(box_bytes(map)))) {
    fail(cudaErrorLaunchFailure, "cp.async.bulk.tensor in " + where() + " into shared memory "
                                 "that a wgmma.mma_async not yet waited for still reads (on a GPU "
                                 "the copy may land first)");
    return;
  }
  b->copies.push_back({shared, map, x, y});
  wake_waiters();
}

bool land_tma_box(void* shared, const TensorMap2d& map, int x, int y) {
  const auto base = reinterpret_cast<uintptr_t>(shared);
  if (base % 128 != 0) return false;
  const int64_t row_bytes = int64_t(map.box[0]) * map.element_bytes;
  for (int64_t r = 0; r < map.box[1]; ++r) {
    for (int64_t c = 0; c < map.box[0]; ++c) {
      uintptr_t address = base + uintptr_t(r * row_bytes + c * map.element_bytes);
      if (map.swizzle_bytes == 128) address ^= ((address >> 7) & 7) << 4;
      const int64_t gx = x + c, gy = y + r;
      void* to = reinterpret_cast<void*>(address);
      if (gx >= 0 && gy >= 0 && uint64_t(gx) < map.dims[0] && uint64_t(gy) < map.dims[1]) {
        std::memcpy(to, map.global + gy * map.row_stride + gx * map.element_bytes,
                    map.element_bytes);
      } else {
        std::memset(to, 0, map.element_bytes);
      }
    }
  }
  return true;
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

namespace emu = minilora::emulation;

// The driver's checks of a tiled tensor map (cuTensorMapEncodeTiled's documentation), for the cases
// the emulator copies; the others are CUDA_ERROR_NOT_SUPPORTED here.
CUresult cuTensorMapEncodeTiled(CUtensorMap* tensorMap, CUtensorMapDataType tensorDataType,
                                cuuint32_t tensorRank, void* globalAddress,
                                const cuuint64_t* globalDim, const cuuint64_t* globalStrides,
                                const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
                                CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                CUtensorMapL2promotion, CUtensorMapFloatOOBfill oobFill) {
  const uint32_t element_bytes = tensorDataType == CU_TENSOR_MAP_DATA_TYPE_FLOAT32 ? 4
                                 : tensorDataType == CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 ||
                                         tensorDataType == CU_TENSOR_MAP_DATA_TYPE_UINT16
                                     ? 2
                                     : 0;
  if (tensorRank != 2 || element_bytes == 0 || interleave != CU_TENSOR_MAP_INTERLEAVE_NONE ||
      oobFill != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE ||
      (swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && swizzle != CU_TENSOR_MAP_SWIZZLE_128B)) {
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  const bool valid =
      tensorMap && globalAddress && reinterpret_cast<uintptr_t>(globalAddress) % 16 == 0 &&
      globalDim[0] >= 1 && globalDim[1] >= 1 && globalDim[0] <= (uint64_t(1) << 32) &&
      globalDim[1] <= (uint64_t(1) << 32) && globalStrides[0] % 16 == 0 &&
      globalStrides[0] >= globalDim[0] * element_bytes && globalStrides[0] < (uint64_t(1) << 40) &&
      boxDim[0] >= 1 && boxDim[1] >= 1 && boxDim[0] <= 256 && boxDim[1] <= 256 &&
      (boxDim[0] * element_bytes) % 16 == 0 && elementStrides[0] == 1 && elementStrides[1] == 1 &&
      (swizzle != CU_TENSOR_MAP_SWIZZLE_128B || boxDim[0] * element_bytes <= 128);
  if (!valid) return CUDA_ERROR_INVALID_VALUE;
  emu::TensorMap2d map{static_cast<const unsigned char*>(globalAddress),
                       {globalDim[0], globalDim[1]},
                       globalStrides[0],
                       {boxDim[0], boxDim[1]},
                       element_bytes,
                       swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? 128u : 0u};
  static_assert(sizeof map <= sizeof tensorMap->opaque, "the map fits a CUtensorMap");
  std::memset(tensorMap->opaque, 0, sizeof tensorMap->opaque);
  std::memcpy(tensorMap->opaque, &map, sizeof map);
  return CUDA_SUCCESS;
}

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** function, unsigned int,
                                             unsigned long long,
                                             cudaDriverEntryPointQueryResult* status) {
  const bool known = std::string(symbol) == "cuTensorMapEncodeTiled";
  *function = known ? reinterpret_cast<void*>(&cuTensorMapEncodeTiled) : nullptr;
  if (status) *status = known ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}
