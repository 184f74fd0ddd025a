// The emulator's dynamic shared memory, mbarrier and TMA box copies (hopper.h), and the driver's
// cuTensorMapEncodeTiled behind the runtime's entry point (cuda.h). A copy is made as late as the
// PTX ISA allows, when a thread waits on its barrier, so that a kernel reading a tile before
// waiting for it gets NaN poison or the stage's previous tile; and a copy into bytes that a wgmma
// not yet retired still reads fails at once (wgmma.cpp keeps the products).
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cuda.h"
#include "hopper.h"
#include "hopper_sync.h"

namespace minilora::emulation {
namespace {

using namespace sm90;  // the lock and the wait (hopper_sync.h)

constexpr size_t kMaxDynamicShared = 227 * 1024;  // an H100's most per block

unsigned char* dynamic_base = nullptr;  // kMaxDynamicShared bytes, 1024-byte aligned
size_t dynamic_bytes = 0;               // the running launch's

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

size_t dynamic_shared_bytes() { return dynamic_bytes; }

void start_block_of_hopper_state() {
  if (dynamic_base) std::memset(dynamic_base, 0xff, dynamic_bytes);  // NaN, as __shared__ is
  barriers.clear();
  start_block_of_wgmma_state();
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
  if (wgmma_pending_reads(begin, begin + uint64_t(box_bytes(map)))) {
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
