// What a queued or captured operation keeps alive until it completes (or the graph is disposed): the JS objects
// holding the memory of its tensors (the params array, other streams it waits for) and the device buffers it uses.
// Holding the objects holds the memory: host memory is always a SharedArrayBuffer's (marshal.cc refuses any
// other), which JS can neither detach nor shrink, and a device buffer is not freed while it is in use. The rule and
// what lib/ does for a caller's ordinary ArrayBuffer: docs/lifetime.md.
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
