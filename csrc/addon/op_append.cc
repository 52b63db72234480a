// appendLatentCache(stream, [cache, kvC, kPe, slotMapping, cacheScale, ropeStyle?, positions?, cos?, sin?], after).
#include "op.h"

namespace mla::addon {
namespace {

namespace arg { enum : uint32_t { cache, kvC, kPe, slotMapping, cacheScale, ropeStyle, positions, cos, sin }; }

AppendLatentCacheParams read(const Napi::Array& o, Retained* keepAlive, bool) {
  using P = AppendLatentCacheParams;
  P p;
  readTensors<P>(o, keepAlive, false, p,
                 {{&P::cache, arg::cache, "cache"}, {&P::kvC, arg::kvC, "kvC"}, {&P::kPe, arg::kPe, "kPe"},
                  {&P::slotMapping, arg::slotMapping, "slotMapping"}});
  p.cacheScale = static_cast<float>(getNumber(o, arg::cacheScale, "cacheScale"));
  Napi::Value style = o.Get(arg::ropeStyle);
  if (style.IsString()) {
    std::string s = style.As<Napi::String>().Utf8Value();
    if (s == "interleaved") p.ropeStyle = RopeStyle::Interleaved;
    else if (s == "neox") p.ropeStyle = RopeStyle::Neox;
    else throw Error(ErrorCode::Argument, "rope.style must be 'interleaved' or 'neox', got '" + s + "'");
    // As the caller spelled them.
    readTensors<P>(o, keepAlive, false, p,
                   {{&P::positions, arg::positions, "rope.positions"}, {&P::cos, arg::cos, "rope.cos"}, {&P::sin, arg::sin, "rope.sin"}});
  }
  return p;
}

void run(Backend& backend, const AppendLatentCacheParams& p) { backend.appendLatentCache(p); }

const OpSpec<AppendLatentCacheParams> kAppend{"appendLatentCache", read, run};

}  // namespace

void exportAppendLatentCache(Napi::Env env, Napi::Object exports) { exportOp(env, exports, kAppend); }

}  // namespace mla::addon
