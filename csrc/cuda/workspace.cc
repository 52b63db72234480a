// The decode workspace's layout (DecodeWorkspace in plan.h), for direct calls, captured graphs and their replays.
#include <cstring>

#include "../core/errors.h"
#include "plan.h"

namespace mla::cuda {

DecodeWorkspace decodeWorkspace(const DecodePlanCapacity& room, size_t blockTableBytes, int blockM, int64_t kvLoraRank) {
  DecodeWorkspace ws;
  ws.room = room;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t offset = at;
    at += align16(bytes);
    return offset;
  };
  ws.counts = take(2 * sizeof(int32_t));
  ws.table = take(blockTableBytes);
  ws.work = take(size_t(room.work) * sizeof(DecodeWorkItem));
  ws.combine = take(size_t(room.combine) * sizeof(CombineItem));
  ws.uploadBytes = at;
  const size_t rows = size_t(room.partials) * blockM;
  ws.partialOut = 0;
  ws.partialLse = align16(rows * kvLoraRank * sizeof(float));
  ws.partialBytes = ws.partialLse + align16(rows * sizeof(float));
  return ws;
}

void stageDecode(uint8_t* upload, const DecodeWorkspace& ws, const DecodePlan& plan, const void* blockTable, size_t blockTableBytes) {
  const DecodePlanCapacity size = sizeOf(plan);
  if (size.work > ws.room.work || size.combine > ws.room.combine || size.partials > ws.room.partials)
    throw Error(ErrorCode::Internal, "the decode plan exceeds the room of its workspace");
  const int32_t counts[2] = {size.work, size.combine};
  std::memcpy(upload + ws.counts, counts, sizeof counts);
  // A zero-byte copy may name a null pointer (an empty vector or tensor): memcpy's may not.
  if (blockTableBytes) std::memcpy(upload + ws.table, blockTable, blockTableBytes);
  if (size.work) std::memcpy(upload + ws.work, plan.work.data(), plan.work.size() * sizeof(DecodeWorkItem));
  if (size.combine) std::memcpy(upload + ws.combine, plan.combine.data(), plan.combine.size() * sizeof(CombineItem));
}

}  // namespace mla::cuda
