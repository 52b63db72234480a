#include "env.h"

#include "guard.h"
#include "stream.h"

namespace mla::addon {

namespace {

void tearDown(void* arg) {
  contained("stopping the streams at environment teardown", [arg] {
    auto* data = static_cast<AddonData*>(arg);
    data->tearingDown = true;
    stopStreams(*data);
  });
}

}  // namespace

AddonData& initEnv(Napi::Env env) {
  auto* data = new AddonData();
  env.SetInstanceData(data);  // deleted by Node after the cleanup hooks and finalisers have run
  napi_add_env_cleanup_hook(env, tearDown, data);
  return *data;
}

}  // namespace mla::addon
