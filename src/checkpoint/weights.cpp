#include "checkpoint/weights.h"

#include <cstdio>
#include <filesystem>

#include "backend/cpu/gemv.h"
#include "checkpoint/durable.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/hdf5.h"
#include "core/log.h"

namespace chorus::checkpoint {

namespace {

constexpr const char* kFormat = "chorus-weights";
constexpr int64_t kVersion = 1;        // a plain fp32 GPT file
constexpr int64_t kVersionTyped = 2;   // + model_type / model_extra / int8 tensors (chorus quantize)
// Attribute of every /params dataset: the SHA-256 (hex) of its float32
// little-endian data. Files written before it existed load with a warning.
constexpr const char* kDigestAttr = "sha256";

std::string data_digest(const float* data, size_t n) {
  Sha256 h;
  h.update(data, n * sizeof(float));
  return h.hex_digest();
}

void write_digest(hid_t ds, const std::string& hex, const std::string& where) {
  h5::TypeId type(H5Tcopy(H5T_C_S1));
  h5::SpaceId space(H5Screate(H5S_SCALAR));
  CHORUS_CHECK(type.valid() && space.valid() && H5Tset_size(type.get(), hex.size() + 1) >= 0,
               "weights: cannot build the digest attribute of %s", where.c_str());
  h5::AttrId attr(H5Acreate2(ds, kDigestAttr, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  CHORUS_CHECK(attr.valid() && H5Awrite(attr.get(), type.get(), hex.c_str()) >= 0,
               "weights: cannot write the digest attribute of %s: %s", where.c_str(), h5::last_error().c_str());
}

// The recorded digest of a dataset, or "" when the file predates digests.
std::string read_digest(hid_t ds, const std::string& where) {
  if (H5Aexists(ds, kDigestAttr) <= 0) return "";
  h5::AttrId attr(H5Aopen(ds, kDigestAttr, H5P_DEFAULT));
  h5::TypeId type(attr.valid() ? H5Aget_type(attr.get()) : H5I_INVALID_HID);
  CHORUS_CHECK(type.valid() && H5Tget_class(type.get()) == H5T_STRING && H5Tis_variable_str(type.get()) == 0,
               "weights %s: attribute '%s' is not a fixed-length string", where.c_str(), kDigestAttr);
  std::string buf(H5Tget_size(type.get()), '\0');
  CHORUS_CHECK(H5Aread(attr.get(), type.get(), buf.data()) >= 0, "weights %s: cannot read attribute '%s': %s",
               where.c_str(), kDigestAttr, h5::last_error().c_str());
  buf.resize(buf.find('\0') == std::string::npos ? buf.size() : buf.find('\0'));
  return buf;
}

// Compares the data read from dataset `ds` (tensor `name` of file `path`)
// with its recorded digest; counts tensors without one in *unchecked.
void check_digest(const std::string& path, hid_t ds, const std::string& name, const float* data, size_t n,
                  size_t* unchecked) {
  const std::string where = strfmt("'%s' tensor '%s'", path.c_str(), name.c_str());
  const std::string want = read_digest(ds, where);
  if (want.empty()) {
    ++*unchecked;
    return;
  }
  const std::string found = data_digest(data, n);
  CHORUS_CHECK(found == want,
               "weights '%s': tensor '%s' is damaged: its data has SHA-256 %s but the file records %s (the file "
               "changed after it was written: copy or export it again)",
               path.c_str(), name.c_str(), found.c_str(), want.c_str());
}

// Reads dataset ds (tensor `name` under /params of file f, dims) into out as
// fp32: a float dataset directly, an int8 one (a quantised matrix) through its
// per-row scales under /scales, dequantised.
void read_tensor_f32(const h5::File& f, hid_t ds, const std::string& name, const std::vector<hsize_t>& dims,
                     float* out) {
  size_t n = 1;
  for (hsize_t d : dims) n *= static_cast<size_t>(d);
  h5::TypeId type(H5Dget_type(ds));
  const bool codes = type.valid() && H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == 1;
  if (!codes) {
    CHORUS_CHECK(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0,
                 "weights '%s': reading tensor 'params/%s' failed: %s", f.path().c_str(), name.c_str(),
                 h5::last_error().c_str());
    return;
  }
  CHORUS_CHECK(dims.size() == 2, "weights '%s': int8 tensor 'params/%s' has %zu dimensions, expected 2 (rows, cols)",
               f.path().c_str(), name.c_str(), dims.size());
  const int rows = static_cast<int>(dims[0]), cols = static_cast<int>(dims[1]);
  std::vector<int8_t> q(n);
  CHORUS_CHECK(H5Dread(ds, H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, q.data()) >= 0,
               "weights '%s': reading int8 tensor 'params/%s' failed: %s", f.path().c_str(), name.c_str(),
               h5::last_error().c_str());
  const std::string sname = "scales/" + name;
  CHORUS_CHECK(H5Lexists(f.get(), "scales", H5P_DEFAULT) > 0 && H5Lexists(f.get(), sname.c_str(), H5P_DEFAULT) > 0,
               "weights '%s': int8 tensor 'params/%s' has no scales ('%s' is missing)", f.path().c_str(),
               name.c_str(), sname.c_str());
  h5::DatasetId sds(H5Dopen2(f.get(), sname.c_str(), H5P_DEFAULT));
  h5::SpaceId sspace(sds.valid() ? H5Dget_space(sds.get()) : H5I_INVALID_HID);
  CHORUS_CHECK(sspace.valid() && H5Sget_simple_extent_ndims(sspace.get()) == 1 &&
                   H5Sget_simple_extent_npoints(sspace.get()) == rows,
               "weights '%s': '%s' must hold %d scales (one per row of 'params/%s')", f.path().c_str(), sname.c_str(),
               rows, name.c_str());
  std::vector<float> scale(rows);
  CHORUS_CHECK(H5Dread(sds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, scale.data()) >= 0,
               "weights '%s': reading '%s' failed: %s", f.path().c_str(), sname.c_str(), h5::last_error().c_str());
  backend::cpu::dequantize_rows_int8(q.data(), scale.data(), rows, cols, out);
}

void warn_unchecked(const std::string& path, size_t unchecked) {
  if (unchecked > 0)
    log_warn("weights '%s': %zu tensor(s) carry no SHA-256 digest (a file from an older chorus): their data is "
             "loaded unchecked; export or save it again to add digests",
             path.c_str(), unchecked);
}

}  // namespace

nn::ShardSpec shard_spec(const models::ParamSpec& p) {
  nn::ShardSpec s;
  s.global_shape = p.global_shape.empty() ? p.shape : p.global_shape;
  s.axis = p.tp_axis;
  s.parts = p.tp_parts;
  return s;
}

static size_t numel_of(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  return n;
}

void save_weights(const std::string& path, models::Gpt& model, const std::string& tokenizer_hash,
                  dist::ParallelGrid& grid) {
  if (grid.dp_rank() != 0) return;
  // Gather every TP-sharded tensor into its global layout (TP ranks of DP group 0).
  const int tp = grid.tp_size();
  std::vector<std::vector<float>> global(model.param_table().size());
  {
    const float* params = model.params().data();
    size_t i = 0;
    for (const auto& p : model.param_table()) {
      const nn::ShardSpec spec = shard_spec(p);
      if (p.tp_axis < 0 || tp == 1) {
        ++i;
        continue;
      }
      std::vector<float> all(p.numel * static_cast<size_t>(tp));
      grid.tp().all_gather(params + p.offset, all.data(), all.size(), dist::DType::f32);
      global[i].assign(numel_of(spec.global_shape), 0.0f);
      for (int r = 0; r < tp; ++r) nn::place_shard(spec, r, tp, all.data() + r * p.numel, global[i].data());
      ++i;
    }
  }
  if (grid.world_rank() != 0) return;
  std::vector<WeightsTensorView> views;
  const float* params = model.params().data();
  size_t index = 0;
  for (const auto& p : model.param_table()) {
    const nn::ShardSpec spec = shard_spec(p);
    views.push_back({p.name, spec.global_shape, global[index].empty() ? params + p.offset : global[index].data()});
    ++index;
  }
  write_weights_file(path, model.config(), tokenizer_hash, views);
}

void write_weights_file(const std::string& path, const models::GptConfig& c, const std::string& tokenizer_hash,
                        const std::vector<WeightsTensorView>& tensors) {
  WeightsHeader h;
  h.config = c;
  h.tokenizer_hash = tokenizer_hash;
  write_weights_file(path, h, tensors);
}

void write_weights_file(const std::string& path, const WeightsHeader& h, const std::vector<WeightsTensorView>& tensors) {
  const models::GptConfig& c = h.config;
  const std::string& tokenizer_hash = h.tokenizer_hash;
  bool quantised = false;
  for (const auto& t : tensors) quantised = quantised || t.codes != nullptr;
  CHORUS_CHECK(!quantised || h.quantization == "int8", "weights: int8 tensors need header quantization 'int8'");
  const bool typed = h.model_type != "gpt" || quantised || !h.quantization.empty();
  h5::quiet_errors();
  const std::string tmp = path + ".tmp";
  {
    h5::File f = h5::File::create(tmp);
    h5::write_attr_string(f, "format", kFormat);
    h5::write_attr_int(f, "version", typed ? kVersionTyped : kVersion);
    if (typed) {
      h5::write_attr_string(f, "model_type", h.model_type);
      h5::write_attr_string(f, "model_extra", h.model_extra.is_null() ? "null" : h.model_extra.dump());
      h5::write_attr_string(f, "quantization", h.quantization.empty() ? "none" : h.quantization);
      h5::write_attr_string(f, "tokenizer", h.tokenizer);
    }
    h5::write_attr_int(f, "n_layer", c.n_layer);
    h5::write_attr_int(f, "n_embd", c.n_embd);
    h5::write_attr_int(f, "n_head", c.n_head);
    h5::write_attr_int(f, "vocab_size", c.vocab_size);
    h5::write_attr_int(f, "context", c.context);
    if (!c.is_gpt2()) h5::write_attr_string(f, "arch", models::gpt_arch_to_json(c).dump());  // absent: GPT-2
    h5::write_attr_string(f, "tokenizer_hash", tokenizer_hash);
    h5::Id<H5Gclose> group(H5Gcreate2(f.get(), "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    CHORUS_CHECK(group.valid(), "weights: cannot create group 'params' in '%s'", tmp.c_str());
    h5::Id<H5Gclose> scales;
    if (quantised) {
      scales = h5::Id<H5Gclose>(H5Gcreate2(f.get(), "scales", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      CHORUS_CHECK(scales.valid(), "weights: cannot create group 'scales' in '%s'", tmp.c_str());
    }
    std::vector<float> dequantised;
    for (const auto& t : tensors) {
      std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
      h5::SpaceId space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
      const bool q = t.codes != nullptr;
      CHORUS_CHECK(!q || (dims.size() == 2 && t.scale != nullptr), "weights: int8 tensor '%s' must be 2-D with scales",
                   t.name.c_str());
      h5::DatasetId ds(H5Dcreate2(group.get(), t.name.c_str(), q ? H5T_STD_I8LE : H5T_IEEE_F32LE, space.get(),
                                  H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      CHORUS_CHECK(ds.valid(), "weights: cannot create dataset 'params/%s' in '%s'", t.name.c_str(), tmp.c_str());
      CHORUS_CHECK(H5Dwrite(ds.get(), q ? H5T_NATIVE_INT8 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                            q ? static_cast<const void*>(t.codes) : static_cast<const void*>(t.data)) >= 0,
                   "weights: writing 'params/%s' to '%s' failed: %s", t.name.c_str(), tmp.c_str(),
                   h5::last_error().c_str());
      const float* values = t.data;
      if (q) {
        const hsize_t rows = dims[0];
        h5::SpaceId sspace(H5Screate_simple(1, &rows, nullptr));
        h5::DatasetId sds(H5Dcreate2(scales.get(), t.name.c_str(), H5T_IEEE_F32LE, sspace.get(), H5P_DEFAULT,
                                     H5P_DEFAULT, H5P_DEFAULT));
        CHORUS_CHECK(sds.valid() && H5Dwrite(sds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.scale) >= 0,
                     "weights: writing 'scales/%s' to '%s' failed: %s", t.name.c_str(), tmp.c_str(),
                     h5::last_error().c_str());
        dequantised.resize(numel_of(t.shape));
        backend::cpu::dequantize_rows_int8(t.codes, t.scale, static_cast<int>(dims[0]), static_cast<int>(dims[1]),
                                           dequantised.data());
        values = dequantised.data();
      }
      write_digest(ds.get(), data_digest(values, numel_of(t.shape)),
                   strfmt("'params/%s' in '%s'", t.name.c_str(), tmp.c_str()));
    }
    f.flush();
    f.close();
  }
  fsync_path(tmp);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  CHORUS_CHECK(!ec, "weights: cannot rename '%s' to '%s': %s", tmp.c_str(), path.c_str(), ec.message().c_str());
  auto dir = std::filesystem::path(path).parent_path();
  fsync_path(dir.empty() ? "." : dir.string());
}

static WeightsHeader read_header(const h5::File& f) {
  const std::string format = h5::read_attr_string(f, "format");
  CHORUS_CHECK(format == kFormat, "weights '%s': attribute 'format' is '%s', expected '%s'", f.path().c_str(),
               format.c_str(), kFormat);
  const int64_t version = h5::read_attr_int(f, "version");
  CHORUS_CHECK(version == kVersion || version == kVersionTyped,
               "weights '%s': attribute 'version' is %lld, this build reads versions %lld and %lld (HINT: a newer "
               "chorus wrote it)",
               f.path().c_str(), static_cast<long long>(version), static_cast<long long>(kVersion),
               static_cast<long long>(kVersionTyped));
  WeightsHeader h;
  h.config.n_layer = static_cast<int>(h5::read_attr_int(f, "n_layer"));
  h.config.n_embd = static_cast<int>(h5::read_attr_int(f, "n_embd"));
  h.config.n_head = static_cast<int>(h5::read_attr_int(f, "n_head"));
  h.config.vocab_size = static_cast<int>(h5::read_attr_int(f, "vocab_size"));
  h.config.context = static_cast<int>(h5::read_attr_int(f, "context"));
  if (h5::has_attr(f, "arch")) {
    const std::string arch = h5::read_attr_string(f, "arch");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(arch);
    } catch (const nlohmann::json::exception& e) {
      throw Error(strfmt("weights '%s': attribute 'arch' is not JSON: %s", f.path().c_str(), e.what()));
    }
    models::gpt_arch_from_json(h.config, j, strfmt("weights '%s'", f.path().c_str()));
  }
  h.tokenizer_hash = h5::read_attr_string(f, "tokenizer_hash");
  if (version == kVersionTyped) {
    h.model_type = h5::read_attr_string(f, "model_type");
    CHORUS_CHECK(h.model_type == "gpt" || h.model_type == "speech",
                 "weights '%s': attribute 'model_type' is '%s', expected 'gpt' or 'speech'", f.path().c_str(),
                 h.model_type.c_str());
    const std::string extra = h5::read_attr_string(f, "model_extra");
    try {
      h.model_extra = nlohmann::json::parse(extra);
    } catch (const nlohmann::json::exception& e) {
      throw Error(strfmt("weights '%s': attribute 'model_extra' is not JSON: %s", f.path().c_str(), e.what()));
    }
    h.quantization = h5::read_attr_string(f, "quantization");
    CHORUS_CHECK(h.quantization == "none" || h.quantization == "int8",
                 "weights '%s': attribute 'quantization' is '%s', expected 'none' or 'int8'", f.path().c_str(),
                 h.quantization.c_str());
    if (h.quantization == "none") h.quantization.clear();
    h.tokenizer = h5::read_attr_string(f, "tokenizer");
  }
  try {
    h.config.validate();
  } catch (const Error& e) {
    throw Error(strfmt("weights '%s': model config: %s", f.path().c_str(), e.what()));
  }
  return h;
}

WeightsHeader read_weights_header(const std::string& path) {
  h5::quiet_errors();
  h5::File f = h5::File::open_read(path);
  return read_header(f);
}

void load_weights(const std::string& path, models::Gpt& model, const std::string& expected_hash, int tp_rank,
                  int tp, bool allow_new_cross_attention) {
  h5::quiet_errors();
  h5::File f = h5::File::open_read(path);
  WeightsHeader h = read_header(f);
  const auto& c = model.config();
  CHORUS_CHECK(h.config.n_layer == c.n_layer && h.config.n_embd == c.n_embd && h.config.n_head == c.n_head &&
                   h.config.vocab_size == c.vocab_size && h.config.context == c.context &&
                   models::gpt_arch_to_json(h.config) == models::gpt_arch_to_json(c),
               "weights '%s': model config L%d d%d h%d vocab %d context %d (%s) differs from the model's L%d d%d h%d "
               "vocab %d context %d (%s)",
               path.c_str(), h.config.n_layer, h.config.n_embd, h.config.n_head, h.config.vocab_size,
               h.config.context, h.config.arch_name().c_str(), c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.context,
               c.arch_name().c_str());
  CHORUS_CHECK(expected_hash.empty() || h.tokenizer_hash == expected_hash,
               "weights '%s': attribute 'tokenizer_hash' is %s but the tokenizer in use has %s", path.c_str(),
               h.tokenizer_hash.c_str(), expected_hash.c_str());
  float* params = model.params().data();
  std::vector<float> global;
  size_t unchecked = 0;
  for (const auto& p : model.param_table()) {
    const nn::ShardSpec spec = shard_spec(p);
    const std::string name = "params/" + p.name;
    if (allow_new_cross_attention &&
        (p.name.find(".ln_x.") != std::string::npos || p.name.find(".crossattn.") != std::string::npos) &&
        !(H5Lexists(f.get(), "params", H5P_DEFAULT) > 0 && H5Lexists(f.get(), name.c_str(), H5P_DEFAULT) > 0))
      continue;
    CHORUS_CHECK(H5Lexists(f.get(), "params", H5P_DEFAULT) > 0 && H5Lexists(f.get(), name.c_str(), H5P_DEFAULT) > 0,
                 "weights '%s': tensor '%s' is missing", path.c_str(), name.c_str());
    h5::DatasetId ds(H5Dopen2(f.get(), name.c_str(), H5P_DEFAULT));
    CHORUS_CHECK(ds.valid(), "weights '%s': cannot open tensor '%s': %s", path.c_str(), name.c_str(),
                 h5::last_error().c_str());
    h5::SpaceId space(H5Dget_space(ds.get()));
    const int rank = H5Sget_simple_extent_ndims(space.get());
    std::vector<hsize_t> dims(rank > 0 ? static_cast<size_t>(rank) : 0);
    if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    const auto& want = spec.global_shape;
    bool same = rank == static_cast<int>(want.size());
    for (size_t i = 0; same && i < dims.size(); ++i) same = dims[i] == static_cast<hsize_t>(want[i]);
    CHORUS_CHECK(same, "weights '%s': tensor '%s' has the wrong shape (expected %zu elements in %zu dims)",
                 path.c_str(), name.c_str(), numel_of(want), want.size());
    const bool sharded = p.tp_axis >= 0 && tp > 1;
    if (sharded) global.resize(numel_of(want));
    read_tensor_f32(f, ds.get(), p.name, dims, sharded ? global.data() : params + p.offset);
    check_digest(path, ds.get(), name, sharded ? global.data() : params + p.offset, numel_of(want), &unchecked);
    if (sharded) nn::slice_shard(spec, tp_rank, tp, global.data(), params + p.offset);
  }
  warn_unchecked(path, unchecked);
}

std::vector<WeightsTensor> read_weights_tensors(const std::string& path, WeightsHeader* header) {
  h5::quiet_errors();
  h5::File f = h5::File::open_read(path);
  WeightsHeader h = read_header(f);
  if (header) *header = h;
  CHORUS_CHECK(H5Lexists(f.get(), "params", H5P_DEFAULT) > 0, "weights '%s': group 'params' is missing", path.c_str());
  h5::Id<H5Gclose> g(H5Gopen2(f.get(), "params", H5P_DEFAULT));
  CHORUS_CHECK(g.valid(), "weights '%s': cannot open group 'params'", path.c_str());
  std::vector<std::string> names;
  auto cb = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
    return 0;
  };
  CHORUS_CHECK(H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, cb, &names) >= 0,
               "weights '%s': cannot list group 'params'", path.c_str());
  std::vector<WeightsTensor> out;
  size_t unchecked = 0;
  for (const auto& name : names) {
    h5::DatasetId ds(H5Dopen2(g.get(), name.c_str(), H5P_DEFAULT));
    CHORUS_CHECK(ds.valid(), "weights '%s': cannot open tensor 'params/%s'", path.c_str(), name.c_str());
    h5::SpaceId space(H5Dget_space(ds.get()));
    const int rank = H5Sget_simple_extent_ndims(space.get());
    CHORUS_CHECK(rank >= 1 && rank <= 4, "weights '%s': tensor 'params/%s' has %d dimensions", path.c_str(),
                 name.c_str(), rank);
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    WeightsTensor t;
    t.name = name;
    t.shape.assign(dims.begin(), dims.end());
    t.data.resize(numel_of(t.shape));
    read_tensor_f32(f, ds.get(), name, dims, t.data.data());
    check_digest(path, ds.get(), "params/" + name, t.data.data(), t.data.size(), &unchecked);
    out.push_back(std::move(t));
  }
  warn_unchecked(path, unchecked);
  return out;
}

}  // namespace chorus::checkpoint
