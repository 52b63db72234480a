// What a queued or captured operation keeps alive until it completes (or the graph is disposed): the JS objects
// holding the memory of its tensors (the params array, other streams it waits for) and the device buffers it uses.
#pragma once
#include <napi.h>

#include <vector>

namespace mla::addon {

class DeviceBufferWrap;

struct Retained {
  std::vector<Napi::ObjectReference> refs;
  std::vector<DeviceBufferWrap*> buffers;
};

}  // namespace mla::addon
