// Rung 6 of the ladder, "warp": the async rung's kernel (lora_async.cu) with its threads grouped
// into warps, each warp owning an explicit sub-tile of the block's tile, and the tile sizes chosen
// per product from a small set of configurations (block_tiles.cuh: MINILORA_WARP_TILES).
//
// Block tile -> warp tile -> thread tile. In "128x128x8/32x64/8x8" a block of 256 threads owns
// 128 × 128 of C and steps 8 inner indices at a time; its 8 warps each own 32 × 64 of that (4 down,
// 2 across); the 32 threads of a warp are 4 × 8 lanes, each owning 8 × 8 elements in runs of 4.
//
// Why it matters: shared-memory bandwidth. At every inner index a warp reads, from shared memory,
// one value per row and one per column of the part of C its threads own. In the fused and async
// rungs a warp is two rows of a 16 × 16 thread grid, which covers 16 rows × 128 columns: 144
// values for its 2,048 multiply-adds. A 32 × 64 warp tile needs 32 + 64 = 96 for the same 2,048:
// a third less shared-memory traffic per multiply-add, the resource that limits a register-blocked
// SGEMM once device memory is hidden. Register reuse is unchanged (each thread still keeps an
// 8 × 8 block of sums and uses each value it reads 8 times).
// And no bank conflicts: the hardware serves a 16-byte read in quarters of 8 lanes; the 8 lanes
// along a warp's row read 8 consecutive 16-byte runs of the right tile, 128 bytes that fall in
// the 32 different banks, and lanes down a warp's column read the same left values (a broadcast).
// The explicit warp tile is also the unit a tensor-core rung hands to mma.sync.
//
// Which configuration: the largest block tile (most reuse of every value brought into shared
// memory) whose grid still has at least kTargetBlocks blocks for this product; when none has
// (small M: u·Bᵀ at M = 128, N = 4096 gives 32 blocks of 128 × 128), the smallest, and the split
// plan of its inner dimension fills the rest of the GPU. The rule looks at the shape only, not at
// the GPU, so results do not depend on where they run. Setting MINILORA_WARP_TILES to a
// configuration's name (minilora bench --sweep times each; minilora.kernels.cuda.warp_tiles()
// lists them) pins it for every product, read at every call. Predicted effect (not measured):
// largest at large M, where shared memory sets the pace; little at small M, where the grid is thin.
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "block_tiles.cuh"

namespace minilora::cuda {
namespace {

struct WarpConfig {
  const char* name;
  const char* kernel_name;
  int rows, cols;
};

constexpr WarpConfig kConfigs[] = {
#define MINILORA_WARP_ENTRY(name, rows, cols, ...) \
  {name, "async_matmul_kernel (warp tiles " name ")", rows, cols},
    MINILORA_WARP_TILES(MINILORA_WARP_ENTRY)
#undef MINILORA_WARP_ENTRY
};
constexpr int kConfigCount = int(sizeof kConfigs / sizeof kConfigs[0]);

// f(Tiles<...>{}) for configuration `index`.
template <typename F>
decltype(auto) with_tiles(int index, F&& f) {
  int i = 0;
#define MINILORA_WARP_CASE(name, ...) \
  if (index == i++) return f(Tiles<__VA_ARGS__>{});
  MINILORA_WARP_TILES(MINILORA_WARP_CASE)
#undef MINILORA_WARP_CASE
  throw std::logic_error("no warp tile configuration " + std::to_string(index));
}

int warp_tiles_named(const std::string& name) {
  std::string known;
  for (int i = 0; i < kConfigCount; ++i) {
    if (name == kConfigs[i].name) return i;
    known += std::string(i ? ", " : "") + "'" + kConfigs[i].name + "'";
  }
  throw std::invalid_argument("MINILORA_WARP_TILES is '" + name + "', expected one of " + known +
                              " (or unset, for the choice per shape)");
}

}  // namespace

int warp_tile_count() { return kConfigCount; }

const char* warp_tile_name(int index) { return kConfigs[index].name; }

int warp_tiles_for(int rows, int cols) {
  const char* pinned = std::getenv("MINILORA_WARP_TILES");
  if (pinned != nullptr && *pinned != '\0') return warp_tiles_named(pinned);
  for (int i = 0; i < kConfigCount; ++i) {
    const int64_t blocks = int64_t(ceil_div(rows, kConfigs[i].rows)) * ceil_div(cols, kConfigs[i].cols);
    if (blocks >= kTargetBlocks) return i;
  }
  return kConfigCount - 1;
}

const char* warp_kernel_name(int rows, int cols) {
  return kConfigs[warp_tiles_for(rows, cols)].kernel_name;
}

BlockTile warp_tile(int rows, int cols) {
  return with_tiles(warp_tiles_for(rows, cols), [](auto tiles) { return tiles.block_tile; });
}

template <typename T, Contiguous LC, Contiguous RC>
void warp_matmul(const Matmul<T, LC, RC>& p, const SplitPlan& plan, T* scratch,
                 cudaStream_t stream, const char* product) {
  const int index = warp_tiles_for(p.rows, p.cols);
  with_tiles(index, [&](auto tiles) {
    tiles_matmul<decltype(tiles)>(p, plan, scratch, stream, product, kConfigs[index].kernel_name);
  });
}

#define MINILORA_WARP(T, LC, RC)                                                               \
  template void warp_matmul<T, Contiguous::LC, Contiguous::RC>(                               \
      const Matmul<T, Contiguous::LC, Contiguous::RC>&, const SplitPlan&, T*, cudaStream_t,   \
      const char*);
MINILORA_WARP(float, Inner, Inner)
MINILORA_WARP(float, Inner, Outer)
MINILORA_WARP(double, Inner, Inner)
MINILORA_WARP(double, Inner, Outer)
#undef MINILORA_WARP

}  // namespace minilora::cuda
